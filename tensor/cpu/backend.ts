/** The CPU backend: plain loops over typed arrays, the reference for every other backend. */
import type { Backend } from '../backend.js';
import { typedArrayFor, type DType, type TypedArray } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { attention } from './attention.js';
import { binary, copy, fill, unary, where } from './elementwise.js';
import { adamw, attentionGrad, layerNormGrad, rmsNormGrad, softmaxGrad, unaryGrad } from './grad.js';
import { gather, scatterAdd } from './indexing.js';
import { matmul } from './matmul.js';
import { layerNorm, reduce, rmsNorm, softmax } from './reduce.js';
import { CpuStorage, readCpu, upload } from './storage.js';

/** Half dtypes are WebGPU weight storage; the CPU reference holds half-rounded float32 instead. */
export const cpuBackend: Backend = {
  device: 'cpu',
  capabilities: {
    dtypes: ['float32', 'float64', 'int32'],
    syncRead: true,
    describe: () => 'plain TypeScript, one thread: the reference (float32, float64, int32)',
  },
  alloc: (numel: number, dtype: DType) => new CpuStorage(dtype, typedArrayFor(dtype, numel)),
  upload: (data: TypedArray, dtype: DType) => upload(data, dtype),
  read: async (x: Tensor) => readCpu(x),
  readSync: readCpu,
  copy,
  fill,
  unary,
  binary,
  where,
  reduce,
  softmax,
  matmul,
  attention,
  layerNorm,
  rmsNorm,
  gather,
  scatterAdd,
  unaryGrad,
  softmaxGrad,
  layerNormGrad,
  rmsNormGrad,
  attentionGrad,
  adamw,
  sync: async () => {},
};
