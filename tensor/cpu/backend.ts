/** The CPU backend: plain loops over typed arrays, the reference for every other backend. */
import type { Backend } from '../backend.js';
import { isHalf, typedArrayFor, type DType, type TypedArray } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { attention } from './attention.js';
import { binary, copy, fill, unary, where } from './elementwise.js';
import { adamw, attentionGrad, layerNormGrad, rmsNormGrad, softmaxGrad, unaryGrad } from './grad.js';
import { gather, scatterAdd } from './indexing.js';
import { matmul } from './matmul.js';
import { layerNorm, reduce, rmsNorm, softmax } from './reduce.js';
import { CpuStorage, readCpu, upload } from './storage.js';

/** Half dtypes are WebGPU weight storage; the CPU reference holds half-rounded float32 instead. */
function noHalf(dtype: DType): void {
  if (isHalf(dtype)) throw new Error(`cpu: ${dtype} is WebGPU-only weight storage; on the CPU use float32 (roundToHalf gives the ${dtype}-rounded values)`);
}

export const cpuBackend: Backend = {
  device: 'cpu',
  alloc: (numel: number, dtype: DType) => (noHalf(dtype), new CpuStorage(dtype, typedArrayFor(dtype, numel))),
  upload: (data: TypedArray, dtype: DType) => (noHalf(dtype), upload(data, dtype)),
  read: async (x: Tensor) => readCpu(x),
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
