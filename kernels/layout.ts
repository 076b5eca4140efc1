/**
 * How kernels see views: a uniform struct built field by field (so the WGSL declaration and
 * the bytes always agree), dim coalescing, and generated WGSL that turns a flat row-major
 * index into storage offsets through shape and strides.
 */
import type { DType } from '../tensor/dtype.js';
import { isContiguous } from '../tensor/shape.js';

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
const f32Bits = new Float32Array(1);
const u32Bits = new Uint32Array(f32Bits.buffer);
const i32Bits = new Int32Array(f32Bits.buffer);

export class Uniforms {
  private names: string[] = [];
  private types: Field['type'][] = [];
  /** The struct's words as they are built: each field at its aligned offset (u32 bit patterns). */
  private words: number[] = [];

  /** Word index of each field (its first word for a vec8). */
  private at: number[] = [];

  u32(name: string, v: number): this {
    this.field(name, 'u32');
    this.words.push(v >>> 0);
    return this;
  }
  i32(name: string, v: number): this {
    this.field(name, 'i32');
    i32Bits[0] = v;
    this.words.push(u32Bits[0]);
    return this;
  }
  f32(name: string, v: number): this {
    this.field(name, 'f32');
    f32Bits[0] = v;
    this.words.push(u32Bits[0]);
    return this;
  }
  private field(name: string, type: Field['type']): void {
    this.names.push(name);
    this.types.push(type);
    this.at.push(this.words.length);
  }
  /** Up to 8 unsigned integers (shape or strides of a view), zero padded. */
  vec8(name: string, v: readonly number[]): this {
    if (v.length > MAX_RANK) throw new Error(`webgpu: rank ${v.length} exceeds the kernel limit ${MAX_RANK}`);
    const w = this.words;
    while (w.length % 4) w.push(0); // array<vec4u, 2> aligns to 16 bytes
    this.field(name, 'vec8');
    for (let i = 0; i < MAX_RANK; i++) w.push(i < v.length ? v[i] >>> 0 : 0);
    return this;
  }

  /** `struct Params { ... }` plus the binding line. */
  declaration(): string {
    const members = this.names.map((n, i) => `  ${n}: ${this.types[i] === 'vec8' ? 'array<vec4u, 2>' : this.types[i]},`);
    return `struct Params {\n${members.join('\n')}\n}\n@group(0) @binding(0) var<uniform> P: Params;\n`;
  }

  /**
   * The word (u32 index into `bytes()`) where field `name` begins: a front end that keeps the
   * bytes of a call for the next ones writes the values that change there.
   */
  wordOf(name: string): number {
    const i = this.names.indexOf(name);
    if (i < 0) throw new Error(`webgpu: no uniform field '${name}'`);
    return this.at[i];
  }

  /** `bytes()` as words, to keep and patch (see `wordOf`). */
  words32(): Uint32Array {
    return new Uint32Array(this.bytes());
  }

  bytes(): ArrayBuffer {
    const n = Math.max(4, Math.ceil(this.words.length / 4) * 4); // whole 16-byte rows
    const out = new Uint32Array(n);
    for (let i = 0; i < this.words.length; i++) out[i] = this.words[i];
    return out.buffer;
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

/** True when a view (shape, strides) is a dense row-major block of its storage, at any offset: it coalesces to one dim. */
export function isDense(t: { readonly shape: readonly number[]; readonly strides: readonly number[] }): boolean {
  return isContiguous(t.shape, t.strides);
}

/** What coalescing reads of an operand. */
interface Strided {
  readonly strides: readonly number[];
}

/**
 * Rewrites a vec8 field of a plan's uniform words (see Uniforms.vec8 and wordOf): `v`
 * zero-padded to 8 words from word `at`.
 */
export function writeVec8(words: Uint32Array, at: number, v: readonly number[]): void {
  for (let i = 0; i < MAX_RANK; i++) words[at + i] = i < v.length ? v[i] : 0;
}

/**
 * `coalesce` for a call's operands without allocating: `inputs`, then `last` (out), all of
 * `shape`. The merged shape goes to `outShape` and operand k's strides to `outStrides[k]`
 * (arrays the caller keeps and reuses); returns the rank. Same result as `coalesce`.
 */
export function coalesceInto(shape: readonly number[], inputs: readonly Strided[], last: Strided, outShape: number[], outStrides: number[][]): number {
  const count = inputs.length + 1;
  // written by index and cut to length at the end: `length = 0` would drop the arrays' backing
  // stores, and every call would allocate them again
  let n = 0;
  for (let d = 0; d < shape.length; d++) {
    const size = shape[d];
    if (size === 1) continue;
    const at = n - 1;
    let mergeable = at >= 0;
    for (let k = 0; k < count && mergeable; k++) mergeable = outStrides[k][at] === (k < inputs.length ? inputs[k] : last).strides[d] * size;
    if (mergeable) {
      outShape[at] *= size;
      for (let k = 0; k < count; k++) outStrides[k][at] = (k < inputs.length ? inputs[k] : last).strides[d];
    } else {
      outShape[n] = size;
      for (let k = 0; k < count; k++) outStrides[k][n] = (k < inputs.length ? inputs[k] : last).strides[d];
      n++;
    }
  }
  if (n === 0) {
    outShape[0] = 1;
    for (let k = 0; k < count; k++) outStrides[k][0] = 1;
    n = 1;
  }
  outShape.length = n;
  for (let k = 0; k < count; k++) outStrides[k].length = n;
  return n;
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
