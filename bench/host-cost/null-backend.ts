/**
 * A backend that does no work, for timing the layers above the backends alone: its storages
 * hold no memory and its kernels return at once, so an op on the 'null' device costs exactly
 * its front end (checks, shapes, views, tensors, tidy, the autograd record and backward walk).
 * Read-backs give zeros. For benchmarks only (bench/host-cost/ops.ts); never registered by
 * the library.
 */
import { registerBackend, Storage, type Backend, type Device, type DType, type TypedArray } from '../../tensor/index.js';
import { bytesPerElement } from '../../tensor/dtype.js';

/**
 * The device's name. Not added to `DeviceNames` (that would make every backend table in the
 * program list it), hence the cast.
 */
export const NULL_DEVICE = 'null' as Device;

class NullStorage extends Storage {
  constructor(dtype: DType, numel: number) {
    super(NULL_DEVICE, dtype, numel, bytesPerElement(dtype));
  }
  protected free(): void {}
}

const nothing = (): void => {};

export const nullBackend: Backend = {
  device: NULL_DEVICE,
  capabilities: { dtypes: ['float32', 'int32'], syncRead: true, describe: () => 'no memory, no work (benchmarks)' },
  alloc: (numel, dtype) => new NullStorage(dtype, numel),
  upload: (data, dtype) => new NullStorage(dtype, data.length),
  read: async (x) => zeros(x.size, x.dtype),
  readSync: (x) => zeros(x.size, x.dtype),
  copy: nothing, fill: nothing, unary: nothing, binary: nothing, where: nothing, reduce: nothing, softmax: nothing,
  matmul: nothing, attention: nothing, layerNorm: nothing, rmsNorm: nothing, gather: nothing, scatterAdd: nothing,
  unaryGrad: nothing, softmaxGrad: nothing, layerNormGrad: nothing, rmsNormGrad: nothing, attentionGrad: nothing, adamw: nothing,
  sync: async () => {},
  // the fused ops the WebGPU backend offers, so that the front ends take the same paths
  linear: () => true, adamwMany: () => true, sumOfSquares: () => true, scaleMany: () => true, windowMerge: () => true,
};

function zeros(n: number, dtype: DType): TypedArray {
  return dtype === 'int32' ? new Int32Array(n) : new Float32Array(n);
}

/** Opens the 'null' device (safe to call more than once). */
export function openNullDevice(): void {
  registerBackend(nullBackend);
}
