import { bytesPerElement, convertArray, type DType, type TypedArray, typedArrayFor } from '../dtype.js';
import { HostStorage } from '../storage.js';
import { isContiguous } from '../shape.js';
import type { Tensor } from '../tensor.js';

/** CPU memory: one typed array. */
export class CpuStorage extends HostStorage {
  constructor(
    dtype: DType,
    public data: TypedArray,
  ) {
    super('cpu', dtype, data.length, bytesPerElement(dtype));
  }
  protected free(): void {
    this.data = typedArrayFor(this.dtype, 0);
  }
}

export function cpuStorage(dtype: DType, numel: number): CpuStorage {
  return new CpuStorage(dtype, typedArrayFor(dtype, numel));
}

/** The typed array behind a host-memory tensor (the whole storage, not just the view). */
export function buf(t: Tensor): TypedArray {
  return (t.storage as HostStorage).data;
}

/**
 * Storage offsets of every element of a view, in row-major order of its shape.
 * One allocation per call, none per element.
 */
export function offsets(t: Tensor): Int32Array {
  const { shape, strides } = t;
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Int32Array(n);
  if (n === 0) return out;
  const rank = shape.length;
  if (isContiguous(shape, strides)) {
    // the common case: a dense block at some offset
    for (let i = 0; i < n; i++) out[i] = t.offset + i;
    return out;
  }
  if (rank === 2 || rank === 3) {
    // unrolled loops for the usual views (transposes, head splits)
    const [s0, s1, s2] = rank === 2 ? [1, shape[0], shape[1]] : shape;
    const [t0, t1, t2] = rank === 2 ? [0, strides[0], strides[1]] : strides;
    let i = 0;
    for (let a = 0; a < s0; a++) {
      for (let b = 0; b < s1; b++) {
        const base = t.offset + a * t0 + b * t1;
        for (let c = 0; c < s2; c++) out[i++] = base + c * t2;
      }
    }
    return out;
  }
  const idx = new Array<number>(rank).fill(0);
  let off = t.offset;
  for (let i = 0; i < n; i++) {
    out[i] = off;
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
  return out;
}

/** A host-memory tensor's elements as a dense typed array (always a copy). */
export function readCpu(t: Tensor): TypedArray {
  const data = buf(t);
  if (t.isContiguous) return data.slice();
  const offs = offsets(t);
  const out = typedArrayFor(t.dtype, offs.length);
  for (let i = 0; i < offs.length; i++) out[i] = data[offs[i]];
  return out;
}

export function upload(data: TypedArray, dtype: DType): CpuStorage {
  return new CpuStorage(dtype, convertArray(data, dtype));
}
