/**
 * Element types. float64 exists for gradient checks and lives on the CPU only. bfloat16 and
 * float16 are weight storage on WebGPU only (two per 32-bit word, computed with in float32):
 * the CPU reference of an op on half weights uses float32 holding the half-rounded values
 * (`roundToHalf`).
 */
export type DType = 'float32' | 'float64' | 'int32' | HalfDType;
export type HalfDType = 'bfloat16' | 'float16';

export type TypedArray = Float32Array | Float64Array | Int32Array;

export const DTYPES: readonly DType[] = ['float32', 'float64', 'int32', 'bfloat16', 'float16'];

export function isFloat(dtype: DType): boolean {
  return dtype !== 'int32';
}

export function isHalf(dtype: DType): dtype is HalfDType {
  return dtype === 'bfloat16' || dtype === 'float16';
}

export function bytesPerElement(dtype: DType): number {
  return dtype === 'float64' ? 8 : isHalf(dtype) ? 2 : 4;
}

/** The array a tensor's values are read into (half dtypes read back as float32). */
export function typedArrayFor(dtype: DType, length: number): TypedArray {
  switch (dtype) {
    case 'float32':
    case 'bfloat16':
    case 'float16':
      return new Float32Array(length);
    case 'float64':
      return new Float64Array(length);
    case 'int32':
      return new Int32Array(length);
  }
}

/** Copies `src` into a new typed array of `dtype` (numeric conversion; int32 truncates toward zero). */
export function convertArray(src: ArrayLike<number>, dtype: DType): TypedArray {
  const out = typedArrayFor(dtype, src.length);
  if (dtype === 'int32') {
    for (let i = 0; i < src.length; i++) out[i] = Math.trunc(src[i]);
  } else {
    out.set(src as ArrayLike<number>);
  }
  return out;
}

export function dtypeOfArray(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  return 'int32';
}

// ---- half precision -------------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The bfloat16 bits of x, rounded to nearest even (NaN stays NaN). */
export function toBfloat16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff; // quiet NaN
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function fromBfloat16Bits(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

/** The IEEE binary16 bits of x, rounded to nearest even (overflow to infinity, subnormals kept). */
export function toFloat16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let r = m >>> shift;
    if (rest > half || (rest === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && r & 1)) r++;
  return sign | r;
}

export function fromFloat16Bits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** The half bits of every value (rounded to nearest even). */
export function encodeHalf(values: ArrayLike<number>, dtype: HalfDType): Uint16Array {
  const out = new Uint16Array(values.length);
  const enc = dtype === 'bfloat16' ? toBfloat16Bits : toFloat16Bits;
  for (let i = 0; i < values.length; i++) out[i] = enc(values[i]);
  return out;
}

/** The values of half bits, as float32. */
export function decodeHalf(bits: Uint16Array, dtype: HalfDType): Float32Array {
  const out = new Float32Array(bits.length);
  const dec = dtype === 'bfloat16' ? fromBfloat16Bits : fromFloat16Bits;
  for (let i = 0; i < bits.length; i++) out[i] = dec(bits[i]);
  return out;
}

/** Every value rounded to the nearest half (the CPU reference's view of a half tensor). */
export function roundToHalf(values: ArrayLike<number>, dtype: HalfDType): Float32Array {
  return decodeHalf(encodeHalf(values, dtype), dtype);
}
