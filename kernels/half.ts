/**
 * bfloat16 and float16 storage on WebGPU without the `shader-f16` feature: two halves per u32
 * (element i in word i / 2, the low half first, as little-endian bytes lay them out), decoded
 * to f32 for arithmetic. bfloat16 is the top half of an f32, so decoding is a shift; float16
 * decodes with core WGSL's unpack2x16float. Encoding rounds to nearest even, bit for bit as
 * tensor/dtype.ts does on the host.
 *
 * Where the adapter offers `shader-f16`, float16 matmul weights are read as vec4<f16> (see
 * kernels/matmul.ts); everything else goes through these words.
 */
import { isHalf, type DType, type HalfDType } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { coalesce, flatIndex, grid, isDense, offsetCode, stridedUniforms, Uniforms } from './layout.js';
import { bufferOf, ctx } from './runtime.js';

const WG = 256;

/** WGSL: `half_<dtype>(word, hi)`: the f32 value of the low (hi false) or high half of a word. */
export const HALF_DECODE_WGSL = /* wgsl */ `
fn half_bfloat16(w: u32, hi: bool) -> f32 {
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, hi));
}
fn half_float16(w: u32, hi: bool) -> f32 {
  let v = unpack2x16float(w);
  return select(v.x, v.y, hi);
}
`;

/** WGSL: `enc_<dtype>(x)`: the half bits of x, rounded to nearest even. */
export const HALF_ENCODE_WGSL = /* wgsl */ `
fn enc_bfloat16(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return ((b >> 16u) | 0x40u) & 0xffffu; }
  return ((b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u) & 0xffffu;
}
fn enc_float16(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  let sign = (b >> 16u) & 0x8000u;
  let ex = i32((b >> 23u) & 0xffu);
  let mant = b & 0x7fffffu;
  if (ex == 255) { return sign | 0x7c00u | select(0u, 0x200u, mant != 0u); }
  let e = ex - 112;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    let m = mant | 0x800000u;
    let shift = u32(14 - e);
    let half = 1u << (shift - 1u);
    let rest = m & ((1u << shift) - 1u);
    var r = m >> shift;
    if (rest > half || (rest == half && (r & 1u) == 1u)) { r += 1u; }
    return sign | r;
  }
  var r = (u32(e) << 10u) | (mant >> 13u);
  let rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (r & 1u) == 1u)) { r += 1u; }
  return sign | r;
}
`;

/** Bytes of a half tensor's storage: whole words. */
export function halfBytes(numel: number): number {
  return Math.ceil(numel / 2) * 4;
}

/** Host half bits packed into words, ready for writeBuffer. */
export function packHalfBits(bits: Uint16Array): Uint32Array {
  const words = new Uint32Array(Math.ceil(bits.length / 2));
  new Uint16Array(words.buffer, 0, bits.length).set(bits); // little-endian: element 2i low, 2i+1 high
  return words;
}

/** The error every op that does not take half operands raises. */
export function halfUnsupported(op: string, dtype: DType): Error {
  return new Error(`${op}: ${dtype} tensors are weight storage on WebGPU (matmul's b, linear's weight, gather/indexSelect's table, cast); cast to float32 first`);
}

/**
 * out = x elementwise, where x and/or out are half: x any strided view (f32, i32 or half);
 * a half out must be dense from an even offset (one thread writes one word, two elements).
 */
export function copyHalf(x: Tensor, out: Tensor): void {
  const n = out.size;
  if (n === 0) return;
  const c = ctx();
  const outHalf = isHalf(out.dtype);
  const inHalf = isHalf(x.dtype);
  if (outHalf && (!isDense(out) || out.offset % 2 !== 0)) {
    throw new Error(`cast: a ${out.dtype} destination must be dense from an even offset (got a view ${out.toString()}); write into a fresh tensor`);
  }
  if (bufferOf(x) === bufferOf(out)) throw new Error(`cast: source and destination share a buffer (${x.toString()})`);
  const { shape, strides } = coalesce(out.shape, [x.strides]);
  const u = new Uniforms().u32('n', n).u32('o_off', out.offset);
  stridedUniforms(u, shape, [['x', strides[0], x.offset]]);
  const xType = inHalf ? 'u32' : x.dtype === 'int32' ? 'i32' : 'f32';
  const load = inHalf ? `half_${x.dtype}(x[off_x / 2u], (off_x & 1u) == 1u)` : `f32(x[off_x])`;
  const threads = outHalf ? Math.ceil(n / 2) : n;
  const code = () => /* wgsl */ `
${u.declaration()}
@group(0) @binding(1) var<storage, read> x: array<${xType}>;
@group(0) @binding(2) var<storage, read_write> o: array<${outHalf ? 'u32' : out.dtype === 'int32' ? 'i32' : 'f32'}>;
${HALF_DECODE_WGSL}
${outHalf ? HALF_ENCODE_WGSL : ''}
fn value(flat: u32) -> f32 {
${offsetCode(shape.length, ['x'])}
  return ${load};
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = ${flatIndex(WG)};
${outHalf ? `  let first = t * 2u;
  if (first >= P.n) { return; }
  let lo = enc_${out.dtype}(value(first));
  var hi = 0u;
  if (first + 1u < P.n) { hi = enc_${out.dtype}(value(first + 1u)); }
  o[P.o_off / 2u + t] = lo | (hi << 16u);` : `  if (t >= P.n) { return; }
  o[P.o_off + t] = ${out.dtype === 'int32' ? 'i32' : ''}(value(t));`}
}`;
  c.dispatch({
    label: 'cast',
    key: `cast|${x.dtype}|${out.dtype}|${shape.length}`,
    code,
    uniforms: u.bytes(),
    buffers: [bufferOf(x), bufferOf(out)],
    workgroups: grid(threads, WG, c.limits.maxComputeWorkgroupsPerDimension),
  });
}

/** A float32 copy of a half tensor (for read-back). */
export function halfToFloat32(x: Tensor): Tensor {
  const out = Tensor.empty(x.shape, 'float32', 'webgpu');
  copyHalf(x, out);
  return out;
}

export type { HalfDType };
