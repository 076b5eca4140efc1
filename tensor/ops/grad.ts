/**
 * Fused backward ops and the optimizer step, as tensor ops (the autograd layer calls these;
 * they record nothing themselves).
 */
import type { AdamWHyper, UnaryOp } from '../backend.js';
import { fmt, normalizeDim, shapesEqual } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { attentionParams, type AttentionOptions } from './attention.js';
import { backendFor, empty, requireDtype } from './common.js';
import { checkAffine } from './norm.js';

function sameShape(op: string, a: Tensor, b: Tensor, an: string, bn: string): void {
  if (!shapesEqual(a.shape, b.shape)) throw new Error(`${op}: ${an} ${fmt(a.shape)} and ${bn} ${fmt(b.shape)} differ`);
}

/** gy * f'(x) for a unary op. */
export function unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor): Tensor {
  const backend = backendFor(`${op}Grad`, x, gy);
  sameShape(`${op}Grad`, x, gy, 'x', 'gy');
  const out = empty(x.shape, x.dtype, x.device);
  backend.unaryGrad(op, x, gy, out);
  return out;
}

/** Gradient of softmax (or logSoftmax) over `dim`, given its output y and gy. */
export function softmaxGrad(y: Tensor, gy: Tensor, dim: number, log: boolean): Tensor {
  const backend = backendFor('softmaxGrad', y, gy);
  sameShape('softmaxGrad', y, gy, 'y', 'gy');
  const d = normalizeDim('softmaxGrad', dim, y.rank);
  if (d === y.rank - 1) {
    // over the last dim already: no views to move it there and back
    const out = empty(y.shape, y.dtype, y.device);
    backend.softmaxGrad(y, gy, log, out);
    return out;
  }
  const order = [...y.shape.keys()].filter((i) => i !== d).concat(d);
  const [yp, gp] = [y.permute(order), gy.permute(order)];
  const out = empty(yp.shape, y.dtype, y.device);
  backend.softmaxGrad(yp, gp, log, out);
  yp.dispose();
  gp.dispose();
  const back = out.permute(order.map((_, i) => order.indexOf(i)));
  out.dispose();
  return back;
}

export function layerNormGrad(x: Tensor, weight: Tensor | null, gy: Tensor, eps: number): Tensor {
  const backend = backendFor('layerNormGrad', x, weight, gy);
  sameShape('layerNormGrad', x, gy, 'x', 'gy');
  checkAffine('layerNormGrad', x, 'weight', weight);
  const out = empty(x.shape, x.dtype, x.device);
  backend.layerNormGrad(x, weight, gy, eps, out);
  return out;
}

export function rmsNormGrad(x: Tensor, weight: Tensor | null, gy: Tensor, eps: number): Tensor {
  const backend = backendFor('rmsNormGrad', x, weight, gy);
  sameShape('rmsNormGrad', x, gy, 'x', 'gy');
  checkAffine('rmsNormGrad', x, 'weight', weight);
  const out = empty(x.shape, x.dtype, x.device);
  backend.rmsNormGrad(x, weight, gy, eps, out);
  return out;
}

/** Gradients of attention(q, k, v, opts) given gOut, by recomputation. */
export function attentionGrad(q: Tensor, k: Tensor, v: Tensor, gOut: Tensor, opts: AttentionOptions = {}): { gq: Tensor; gk: Tensor; gv: Tensor } {
  const { backend, params } = attentionParams('attentionGrad', q, k, v, opts);
  sameShape('attentionGrad', q, gOut, 'q', 'gOut');
  const gq = empty(q.shape, q.dtype, q.device);
  const gk = empty(k.shape, k.dtype, k.device);
  const gv = empty(v.shape, v.dtype, v.device);
  backend.attentionGrad(q, k, v, params, gOut, gq, gk, gv);
  return { gq, gk, gv };
}

/** One AdamW step, in place on param, m and v (contiguous, same shape as grad). */
export function adamwStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWHyper): void {
  const backend = backendFor('adamw', param, grad, m, v);
  requireDtype('adamw', 'param', param, ['float32', 'float64']);
  for (const [name, t] of [['grad', grad], ['m', m], ['v', v]] as const) {
    sameShape('adamw', param, t, 'param', name);
    if (t.dtype !== param.dtype) throw new Error(`adamw: ${name} has dtype ${t.dtype}, param ${param.dtype}`);
  }
  for (const [name, t] of [['param', param], ['m', m], ['v', v]] as const) {
    if (!t.isContiguous) throw new Error(`adamw: ${name} ${fmt(t.shape)} must be contiguous (it is updated in place)`);
  }
  backend.adamw(param, grad, m, v, h);
}
