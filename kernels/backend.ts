/** The WebGPU backend: every op family's kernel behind the Backend interface. */
import type { Backend } from '../tensor/backend.js';
import { isHalf, type DType, type HalfDType, type TypedArray } from '../tensor/dtype.js';
import type { Storage } from '../tensor/storage.js';
import { halfToFloat32 } from './half.js';
import { isDense } from './layout.js';
import { Tensor } from '../tensor/tensor.js';
import { attention } from './attention.js';
import { attentionGrad } from './attention-grad.js';
import { binary, copy, fill, unary, unaryGrad, where } from './elementwise.js';
import { gather, scatterAdd } from './indexing.js';
import { linear, matmul } from './matmul.js';
import { adamwMany, scaleMany, sumOfSquares } from './multi-tensor.js';
import { layerNorm, rmsNorm } from './norm.js';
import { layerNormGrad, rmsNormGrad, softmaxGrad } from './norm-grad.js';
import { adamw } from './optim.js';
import { reduce, softmax } from './reduce.js';
import { bufferOf, ctx } from './runtime.js';
import { windowMerge, windowMergeFits } from './window-merge.js';

declare module '../tensor/device.js' {
  interface DeviceNames {
    /** WGSL compute kernels through Dawn (kernels/). */
    webgpu: true;
  }
}

/** Reads a view back: dense views directly, others through a copy kernel first. */
async function read(x: Tensor): Promise<TypedArray> {
  const c = ctx();
  if (isHalf(x.dtype)) {
    const f = halfToFloat32(x);
    try {
      return await read(f);
    } finally {
      f.dispose();
    }
  }
  const dense = isDense(x);
  let src = x;
  if (!dense) {
    src = Tensor.empty(x.shape, x.dtype, 'webgpu');
    copy(x, src);
  }
  const bytes = await c.readBuffer(bufferOf(src), dense ? x.offset * 4 : 0, x.size * 4);
  if (src !== x) src.dispose();
  return x.dtype === 'int32' ? new Int32Array(bytes) : new Float32Array(bytes);
}

export const webgpuBackend: Backend = {
  device: 'webgpu',
  capabilities: {
    // bfloat16 / float16: weight storage, two halves per u32, computed in float32
    dtypes: ['float32', 'int32', 'bfloat16', 'float16'],
    syncRead: false,
    describe: () => {
      const i = ctx().info;
      return `WGSL through Dawn ${i.backend}: ${i.description || i.device || 'unknown adapter'}`;
    },
  },
  alloc: (numel: number, dtype: DType) => ctx().alloc(numel, dtype),
  upload: (data: TypedArray, dtype: DType) => ctx().upload(data, dtype),
  uploadHalf: (bits: Uint16Array, dtype: HalfDType) => ctx().uploadHalf(bits, dtype),
  writeBytes: (dst: Storage, byteOffset: number, bytes: Uint8Array) => ctx().writeBytes(dst, byteOffset, bytes),
  read,
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
  // fused ops (optional in Backend): each returns false when it declines a call
  linear,
  adamwMany,
  sumOfSquares,
  scaleMany,
  // the fused middle of D, where the kernel tiles this width on this device
  windowMerge: (a, z, mean) => windowMergeFits(a.x.shape[2], a.heads) && (windowMerge(a, undefined, { z, mean }), true),
  sync: () => ctx().sync(),
};
