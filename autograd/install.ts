/**
 * Installs the autograd layer into the tensor layer's op table (tensor/dispatch.ts): from
 * then on Tensor's methods (`x.matmul(w)`, `x.reshape(...)`) and the fused ops' compositions
 * call the recording ops of ./functions.ts. The table is checked against `OpTable`, so a
 * method cannot be left without its recording version; tests/autograd/methods.test.ts runs
 * every differentiable method and checks that it records.
 */
import { installAutograd, type OpTable } from '../tensor/dispatch.js';
import * as F from './functions.js';
import { backward, isGradEnabled, nodeOf, releaseOutput } from './graph.js';

const recordingOps = {
  unary: F.unary, neg: F.neg, abs: F.abs, exp: F.exp, log: F.log, sqrt: F.sqrt, rsqrt: F.rsqrt,
  tanh: F.tanh, sigmoid: F.sigmoid, relu: F.relu, gelu: F.gelu, silu: F.silu,
  binary: F.binary, add: F.add, sub: F.sub, mul: F.mul, div: F.div, pow: F.pow, maximum: F.maximum, minimum: F.minimum,
  eq: F.eq, ne: F.ne, lt: F.lt, le: F.le, gt: F.gt, ge: F.ge, where: F.where,
  sum: F.sum, mean: F.mean, max: F.max, argmax: F.argmax, softmax: F.softmax, logSoftmax: F.logSoftmax,
  matmul: F.matmul, attention: F.attention, layerNorm: F.layerNorm, rmsNorm: F.rmsNorm,
  gather: F.gather, indexSelect: F.indexSelect, scatterAdd: F.scatterAdd, concat: F.concat, stack: F.stack,
  pixelUnshuffle: F.pixelUnshuffle, avgPool2x2: F.avgPool2x2,
  contiguous: F.contiguous, clone: F.clone, cast: F.cast,
  reshape: F.reshape, view: F.view, permute: F.permute, transpose: F.transpose, slice: F.slice,
  narrow: F.narrow, expand: F.expand, squeeze: F.squeeze, unsqueeze: F.unsqueeze,
} satisfies OpTable;

installAutograd({
  ops: recordingOps,
  recording: (inputs) => isGradEnabled() && inputs.some((t) => t?.requiresGrad === true),
  backward: (t, gradient, opts) => backward(t, gradient, opts),
  // Disposing the tensor a recorded op made lets its graph go when nothing downstream needs
  // it (a forward without backward would otherwise keep its saved tensors alive).
  disposed: (t) => {
    const node = nodeOf(t);
    if (node) releaseOutput(node);
  },
});
