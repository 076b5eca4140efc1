/**
 * Gather and scatter-add over strided views (PyTorch `gather` / `scatter_add`).
 *
 * One thread per element of `index`. Its coordinates give its offsets in `index`, in `src`
 * or `out`, and in `x` for every dim except `dim`: along `dim` the index *value* picks the
 * position, so that dim's stride enters through a separate uniform (`dim_stride`) and its
 * coordinate stride is zeroed. Dims are still coalesced (merged where every operand is
 * contiguous across them): a zero stride only merges with zero strides, which stays exact.
 * Shapes and strides live in uniforms, so one pipeline serves every size of a given
 * (dtype, coalesced rank).
 *
 * Out-of-range indices (negative, or >= x.shape[dim]) never touch memory outside the dim:
 * gather writes 0 for them and scatter-add drops their contribution. With
 * `gpuContext().tuning.checkIndices` (UHD_CHECK_INDICES=1; on in the tests) the kernels also
 * record the index, and the next read-back or sync throws naming it, as the CPU reference
 * throws at once.
 *
 * WGSL has no float atomics: f32 scatter-add is a compare-exchange loop on the bits of
 * `out` (declared array<atomic<u32>>), i32 uses atomicAdd. Colliding float additions happen
 * in no fixed order, so f32 results may differ from the CPU in the last bits.
 */
import { isHalf } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import { HALF_DECODE_WGSL } from './half.js';
import { copy } from './elementwise.js';
import { coalesce, flatIndex, grid, isDense, offsetCode, stridedUniforms, Uniforms, wgslType } from './layout.js';
import { bindWindow, bufferOf, ctx, windowElements, type BufferBinding } from './runtime.js';

const WG = 256;

/** `t`'s strides with `dim`'s set to 0: its offset for every coordinate except along `dim`. */
function withoutDim(t: Tensor, dim: number): number[] {
  return t.strides.map((s, d) => (d === dim ? 0 : s));
}

/** The builtins every kernel here takes, for `flatIndex`. */
const MAIN_ARGS =
  '@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u';

/** WGSL that records an out-of-range index `j` (tuning.checkIndices), op 0 gather, 1 scatterAdd. */
function recordBadIndex(op: number): string {
  return `atomicStore(&err[1], bitcast<u32>(j)); atomicStore(&err[2], P.dim_size); atomicStore(&err[3], ${op}u); atomicStore(&err[0], 1u);`;
}

/**
 * out[c] = x[c with c[dim] replaced by index[c]] for every coordinate c of `index`.
 * x, index and out may be strided views (index may be an expanded view with stride 0, as
 * `indexSelect` passes it); out has index's shape. Out-of-range indices write 0 (and are
 * reported at the next read-back when `tuning.checkIndices`).
 *
 * A table over the binding limit (Qwen3-8B's embedding: 1.2 GB in bf16) is gathered from in
 * windows of rows along `dim` (dense row-major tables, dim 0): one dispatch per window, each
 * writing the outputs whose index falls in it.
 */
export function gather(x: Tensor, dim: number, index: Tensor, out: Tensor): void {
  const n = index.size;
  if (n === 0) return;
  const c = ctx();
  const half = isHalf(x.dtype);
  const t = wgslType(half ? out.dtype : x.dtype); // a half table gathers into f32
  const check = c.tuning.checkIndices;
  const { shape, strides } = coalesce(index.shape, [index.strides, out.strides, withoutDim(x, dim)]);
  const rows = x.shape[dim];
  // windows of rows when the table is over the binding limit
  let windows: { lo: number; hi: number; binding: BufferBinding; off: number }[];
  if (c.bufferSize(bufferOf(x)) <= c.bindingLimit) {
    windows = [{ lo: 0, hi: rows, binding: bufferOf(x), off: x.offset }];
  } else {
    if (dim !== 0 || !isDense(x)) {
      throw new Error(`gather: x ${x.toString()} is over the binding limit ${c.bindingLimit} bytes; only a dense table indexed along dim 0 is split into windows`);
    }
    const rowElems = x.size / Math.max(rows, 1);
    const per = Math.max(1, Math.floor(windowElements(x.storage.bytes / x.storage.numel) / rowElems));
    windows = [];
    for (let lo = 0; lo < rows; lo += per) {
      const hi = Math.min(rows, lo + per);
      const w = bindWindow(x, lo * rowElems, (hi - lo) * rowElems);
      windows.push({ lo, hi, binding: w.binding, off: w.elemOffset });
    }
  }
  const code = (u: Uniforms) => () => /* wgsl */ `
${u.declaration()}
@group(0) @binding(1) var<storage, read> x: array<${half ? 'u32' : t}>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> o: array<${t}>;
${check ? '@group(0) @binding(4) var<storage, read_write> err: array<atomic<u32>>;' : ''}
${half ? `${HALF_DECODE_WGSL}
fn x_at(e: u32) -> f32 { return half_${x.dtype}(x[e / 2u], (e & 1u) == 1u); }` : `fn x_at(e: u32) -> ${t} { return x[e]; }`}

@compute @workgroup_size(${WG})
fn main(${MAIN_ARGS}) {
  let flat = ${flatIndex(WG)};
  if (flat >= P.n) { return; }
  // off_x leaves out dim's term: the index value supplies it.
${offsetCode(shape.length, ['i', 'o', 'x'])}
  let j = idx[off_i];
  if (j < 0 || u32(j) >= P.dim_size) {
    // out of range: write 0, never read outside x (the first window does it)
    if (P.first == 1u) {
      o[off_o] = ${t}(0);
      ${check ? recordBadIndex(0) : ''}
    }
    return;
  }
  let r = u32(j);
  if (r < P.row_lo || r >= P.row_hi) { return; } // another window's row
  o[off_o] = x_at(off_x + (r - P.row_lo) * P.dim_stride);
}`;
  const buffers = (w: BufferBinding): BufferBinding[] => [w, bufferOf(index), bufferOf(out), ...(check ? [c.indexErrorBuffer()] : [])];
  windows.forEach((w, k) => {
    const u = new Uniforms().u32('n', n).u32('dim_size', rows).u32('dim_stride', x.strides[dim])
      .u32('row_lo', w.lo).u32('row_hi', w.hi).u32('first', k === 0 ? 1 : 0);
    stridedUniforms(u, shape, [
      ['i', strides[0], index.offset],
      ['o', strides[1], out.offset],
      ['x', strides[2], w.off],
    ]);
    c.dispatch({
      label: windows.length > 1 ? 'gather (split)' : 'gather',
      key: `gather|${x.dtype}|${shape.length}|${check}`,
      code: code(u),
      uniforms: u.bytes(),
      buffers: buffers(w.binding),
      workgroups: grid(n, WG, c.limits.maxComputeWorkgroupsPerDimension),
    });
  });
}

/** WGSL for `add_at(at, v)`: an atomic `o[at] += v` for f32 (compare-exchange loop) or i32. */
function atomicAddCode(t: 'f32' | 'i32'): string {
  if (t === 'i32') {
    return /* wgsl */ `
fn add_at(at: u32, v: i32) {
  atomicAdd(&o[at], v);
}`;
  }
  return /* wgsl */ `
// Float add as a compare-exchange loop on the bits: retry until no other thread wrote
// o[at] between our load and our exchange (the weak form may also fail spuriously).
fn add_at(at: u32, v: f32) {
  var seen = atomicLoad(&o[at]);
  loop {
    let sum = bitcast<u32>(bitcast<f32>(seen) + v);
    let r = atomicCompareExchangeWeak(&o[at], seen, sum);
    if (r.exchanged) { break; }
    seen = r.old_value;
  }
}`;
}

/**
 * out = x, then out[c with c[dim] replaced by index[c]] += src[c] for every coordinate c of
 * `index` (src may be larger than index: only its leading index-shaped block is read).
 * Additions to the same element are atomic; out-of-range indices are dropped.
 */
export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor, out: Tensor): void {
  const c = ctx();
  if (isDense(x) && isDense(out) && bufferOf(x) !== bufferOf(out)) {
    // A dense x (an embedding table, a gradient) is one buffer-to-buffer copy: cheaper than a kernel.
    if (x.size > 0) c.copyBuffer(bufferOf(x), x.offset * 4, bufferOf(out), out.offset * 4, x.size * 4);
  } else {
    copy(x, out);
  }
  const n = index.size;
  if (n === 0) return;
  const t = wgslType(out.dtype);
  const check = c.tuning.checkIndices;
  const { shape, strides } = coalesce(index.shape, [index.strides, src.strides, withoutDim(out, dim)]);
  const u = new Uniforms().u32('n', n).u32('dim_size', out.shape[dim]).u32('dim_stride', out.strides[dim]);
  stridedUniforms(u, shape, [
    ['i', strides[0], index.offset],
    ['s', strides[1], src.offset],
    ['o', strides[2], out.offset],
  ]);
  const code = () => /* wgsl */ `
${u.declaration()}
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read> src: array<${t}>;
@group(0) @binding(3) var<storage, read_write> o: array<atomic<${t === 'f32' ? 'u32' : 'i32'}>>;
${check ? '@group(0) @binding(4) var<storage, read_write> err: array<atomic<u32>>;' : ''}
${atomicAddCode(t)}

@compute @workgroup_size(${WG})
fn main(${MAIN_ARGS}) {
  let flat = ${flatIndex(WG)};
  if (flat >= P.n) { return; }
  // off_o leaves out dim's term: the index value supplies it.
${offsetCode(shape.length, ['i', 's', 'o'])}
  let j = idx[off_i];
  if (j < 0 || u32(j) >= P.dim_size) { ${check ? recordBadIndex(1) : ''} return; } // out of range: dropped
  add_at(off_o + u32(j) * P.dim_stride, src[off_s]);
}`;
  c.dispatch({
    label: 'scatterAdd',
    key: `scatterAdd|${t}|${shape.length}|${check}`,
    code,
    uniforms: u.bytes(),
    buffers: [bufferOf(index), bufferOf(src), bufferOf(out), ...(check ? [c.indexErrorBuffer()] : [])],
    workgroups: grid(n, WG, c.limits.maxComputeWorkgroupsPerDimension),
  });
}
