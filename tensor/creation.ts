/** Making tensors: from data, filled, ranges, random. */
import { getBackend, requireDeviceDtype } from './backend.js';
import { convertArray, dtypeOfArray, type DType, type TypedArray } from './dtype.js';
import { checkShape, fmt, numel, type Shape } from './shape.js';
import type { Device } from './device.js';
import { normal, uniform } from './random.js';
import { Tensor } from './tensor.js';

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
  shape?: Shape;
}

type NestedInput = number | readonly NestedInput[];

function nestedShape(data: NestedInput): number[] {
  const shape: number[] = [];
  let cur: NestedInput = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0] as NestedInput;
  }
  return shape;
}

function flatten(data: NestedInput, shape: number[], dim: number, out: number[]): void {
  if (dim === shape.length) {
    if (typeof data !== 'number') throw new Error(`tensor: ragged nested array (expected a number at depth ${dim})`);
    out.push(data);
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[dim]) {
    throw new Error(`tensor: ragged nested array: expected ${shape[dim]} items at depth ${dim}, shape ${fmt(shape)}`);
  }
  for (const item of data) flatten(item, shape, dim + 1, out);
}

/** From a number, nested arrays or a typed array (then `shape` defaults to 1-d). */
export function tensor(data: NestedInput | TypedArray, opts: TensorOptions = {}): Tensor {
  const device = opts.device ?? 'cpu';
  let values: ArrayLike<number>;
  let shape: number[];
  let dtype = opts.dtype;
  if (ArrayBuffer.isView(data)) {
    values = data;
    dtype ??= dtypeOfArray(data);
    shape = opts.shape ? [...opts.shape] : [data.length];
  } else {
    shape = nestedShape(data);
    const flat: number[] = [];
    flatten(data, shape, 0, flat);
    values = flat;
    if (opts.shape) shape = [...opts.shape];
  }
  dtype ??= 'float32';
  checkShape('tensor', shape);
  if (numel(shape) !== values.length) {
    throw new Error(`tensor: ${values.length} values do not fill shape ${fmt(shape)} (${numel(shape)} elements)`);
  }
  requireDeviceDtype('tensor', device, dtype);
  // every backend's upload copies (and converts) a typed array itself: no copy here first
  const array = ArrayBuffer.isView(values) ? (values as TypedArray) : convertArray(values, dtype);
  return new Tensor(getBackend(device).upload(array, dtype), shape);
}

export function full(shape: Shape, value: number, opts: Omit<TensorOptions, 'shape'> = {}): Tensor {
  checkShape('full', shape);
  const dtype = opts.dtype ?? 'float32';
  requireDeviceDtype('full', opts.device ?? 'cpu', dtype);
  const t = Tensor.empty(shape, dtype, opts.device ?? 'cpu');
  getBackend(t.device).fill(t, value);
  return t;
}

export const zeros = (shape: Shape, opts: Omit<TensorOptions, 'shape'> = {}) => full(shape, 0, opts);
export const ones = (shape: Shape, opts: Omit<TensorOptions, 'shape'> = {}) => full(shape, 1, opts);

/** [start, start+step, ...) below end; int32 unless a dtype is given. */
export function arange(start: number, end?: number, step = 1, opts: Omit<TensorOptions, 'shape'> = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  if (step === 0) throw new Error('arange: step must not be 0');
  const n = Math.max(0, Math.ceil((end - start) / step));
  const values = Array.from({ length: n }, (_, i) => start + i * step);
  return tensor(values, { ...opts, dtype: opts.dtype ?? 'int32', shape: [n] });
}

function random(shape: Shape, draw: () => number, opts: Omit<TensorOptions, 'shape'>): Tensor {
  checkShape('random', shape);
  const values = new Float64Array(numel(shape));
  for (let i = 0; i < values.length; i++) values[i] = draw();
  return tensor(values, { dtype: opts.dtype ?? 'float32', device: opts.device, shape });
}

/** Uniform in [0, 1), from the seeded generator. */
export const rand = (shape: Shape, opts: Omit<TensorOptions, 'shape'> = {}) => random(shape, uniform, opts);
/** Standard normal, from the seeded generator. */
export const randn = (shape: Shape, opts: Omit<TensorOptions, 'shape'> = {}) => random(shape, normal, opts);
