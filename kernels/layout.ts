/**
 * How kernels see views: a uniform struct built field by field (so the WGSL declaration and
 * the bytes always agree), dim coalescing, and generated WGSL that turns a flat row-major
 * index into storage offsets through shape and strides.
 */
import type { DType } from '../tensor/dtype.js';

/** Views up to this rank are addressed through uniforms. */
export const MAX_RANK = 8;

export function wgslType(dtype: DType): 'f32' | 'i32' {
  if (dtype === 'float64') throw new Error('webgpu: float64 is CPU-only');
  if (dtype === 'bfloat16' || dtype === 'float16') {
    throw new Error(`webgpu: ${dtype} tensors are weight storage (matmul's b, linear's weight, gather/indexSelect's table, cast); cast to float32 for other ops`);
  }
  return dtype === 'int32' ? 'i32' : 'f32';
}

type Field = { name: string; type: 'u32' | 'i32' | 'f32' } | { name: string; type: 'vec8' };

/**
 * Builds a WGSL uniform struct and its bytes. Scalars take 4 bytes; `vec8` fields
 * (array<vec4u, 2>, 8 u32s, read as `P.name[d / 4][d % 4]`) align to 16 as WGSL requires.
 */
export class Uniforms {
  private fields: Field[] = [];
  /** The bytes as they are built: each field is written at its aligned offset when added. */
  private words = new Uint32Array(64);
  private floats = new Float32Array(this.words.buffer);
  private ints = new Int32Array(this.words.buffer);
  private used = 0; // in 4-byte words

  u32(name: string, v: number): this {
    this.fields.push({ name, type: 'u32' });
    this.reserve(1)[0] = v >>> 0;
    return this;
  }
  i32(name: string, v: number): this {
    this.fields.push({ name, type: 'i32' });
    this.reserve(1);
    this.ints[this.used - 1] = v;
    return this;
  }
  f32(name: string, v: number): this {
    this.fields.push({ name, type: 'f32' });
    this.reserve(1);
    this.floats[this.used - 1] = v;
    return this;
  }
  /** Up to 8 unsigned integers (shape or strides of a view), zero padded. */
  vec8(name: string, v: readonly number[]): this {
    if (v.length > MAX_RANK) throw new Error(`webgpu: rank ${v.length} exceeds the kernel limit ${MAX_RANK}`);
    this.fields.push({ name, type: 'vec8' });
    this.used = Math.ceil(this.used / 4) * 4; // array<vec4u, 2> aligns to 16 bytes
    const at = this.reserve(8);
    for (let i = 0; i < v.length; i++) at[i] = v[i] >>> 0;
    return this;
  }

  /** `n` words at the end (zeroed), growing the backing store when needed. */
  private reserve(n: number): Uint32Array {
    if (this.used + n > this.words.length) {
      const bigger = new Uint32Array(Math.max(this.words.length * 2, this.used + n));
      bigger.set(this.words);
      this.words = bigger;
      this.floats = new Float32Array(bigger.buffer);
      this.ints = new Int32Array(bigger.buffer);
    }
    const at = this.words.subarray(this.used, this.used + n);
    this.used += n;
    return at;
  }

  /** `struct Params { ... }` plus the binding line. */
  declaration(): string {
    const members = this.fields.map((f) => `  ${f.name}: ${f.type === 'vec8' ? 'array<vec4u, 2>' : f.type},`);
    return `struct Params {\n${members.join('\n')}\n}\n@group(0) @binding(0) var<uniform> P: Params;\n`;
  }

  bytes(): ArrayBuffer {
    const size = Math.max(16, Math.ceil((this.used * 4) / 16) * 16);
    return this.words.buffer.slice(0, size);
  }
}

/**
 * Merges adjacent dims that are contiguous in every operand and drops size-1 dims, so a
 * dense tensor becomes rank 1 and most views a low rank. Strides are in elements.
 */
export function coalesce(shape: readonly number[], strides: readonly (readonly number[])[]): {
  shape: number[];
  strides: number[][];
} {
  const dims = [...shape.keys()].filter((d) => shape[d] !== 1);
  const outShape: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (const d of dims) {
    const last = outShape.length - 1;
    const mergeable =
      last >= 0 && strides.every((s, k) => outStrides[k][last] === s[d] * shape[d]);
    if (mergeable) {
      outShape[last] *= shape[d];
      strides.forEach((s, k) => (outStrides[k][last] = s[d]));
    } else {
      outShape.push(shape[d]);
      strides.forEach((s, k) => outStrides[k].push(s[d]));
    }
  }
  if (outShape.length === 0) return { shape: [1], strides: strides.map(() => [1]) };
  return { shape: outShape, strides: outStrides };
}

/**
 * WGSL statements that set `off_<name>` for every operand from the flat index `flat`, given
 * uniforms `<name>_off`, `<name>_str` (vec8) per operand and a shared `shape` (vec8).
 */
export function offsetCode(rank: number, names: readonly string[], flat = 'flat'): string {
  const lines = names.map((n) => `var off_${n} = P.${n}_off;`);
  lines.push(`var rem = ${flat};`);
  for (let d = rank - 1; d >= 0; d--) {
    const at = `[${d >> 2}][${d & 3}]`;
    if (d === 0) {
      for (const n of names) lines.push(`off_${n} += rem * P.${n}_str${at};`);
    } else {
      lines.push(`{ let s = P.shape${at}; let c = rem % s; rem = rem / s;`);
      for (const n of names) lines.push(`  off_${n} += c * P.${n}_str${at};`);
      lines.push('}');
    }
  }
  return lines.map((l) => `  ${l}`).join('\n');
}

/** Adds `shape` and each operand's `_str`/`_off` fields for `offsetCode`. */
export function stridedUniforms(u: Uniforms, shape: readonly number[], operands: [string, readonly number[], number][]): void {
  u.vec8('shape', shape);
  for (const [name, strides, offset] of operands) {
    u.vec8(`${name}_str`, strides);
    u.u32(`${name}_off`, offset);
  }
}

/** Workgroup counts for `n` threads in groups of `size`, folded into 2-d past the per-dim limit. */
export function grid(n: number, size: number, maxPerDim = 65535): [number, number] {
  const groups = Math.ceil(n / size);
  if (groups <= maxPerDim) return [groups, 1];
  const y = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / y), y];
}

/** WGSL expression for the flat thread index under `grid` (needs `wid`, `lid`, `nwg` builtins). */
export function flatIndex(size: number): string {
  return `(wid.y * nwg.x + wid.x) * ${size}u + lid.x`;
}
