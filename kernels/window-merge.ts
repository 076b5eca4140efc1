/**
 * The middle of the compressor D (LLaVA-UHD-V4.md, "The intra-ViT compressor D") in one
 * dispatch: everything between the q/k/v projections and `linear_1`.
 *
 *   o    = WindowAttn(q, k, v)                   each token attends to the 4 of its 2x2 window
 *   y    = x + o · out_projᵀ + out_bias           the attention output projection and residual
 *   z    = pre_norm(pixelUnshuffle(y))            a window's 4 rows [tl, tr, bl, br] as one 4d row
 *   mean = mean4(y)                               the window mean, D's residual branch
 *
 * The output projection has to sit inside: pre_norm needs whole rows of y. One workgroup owns
 * WB windows and all d columns of their rows, so no row crosses a workgroup. A thread owns RW
 * windows (4·RW rows) and CV vec4s of output columns: a register block of the projection, as a
 * tiled matmul's, that holds all 4 tokens of each of its windows and columns. Over the heads,
 * HC at a time (the projection's inner dim, a chunk of HC·head_dim):
 *
 *   1. attention: one (window, head) pair per thread at a time; the 4x4 scores stay in
 *      registers, the pair's 4 output rows go to workgroup memory ([4·WB, HC·head_dim]);
 *   2. projection: each thread adds that chunk's share of o · out_projᵀ to its block, o from
 *      workgroup memory, out_proj from storage (Linear's [out, in] layout makes each output
 *      column a contiguous row along the inner dim).
 *
 * Then the residual and the bias, the window means (at hand in each thread), and pre_norm: each
 * thread's values of a window give a count, mean and M2, merged by Chan's formula over the
 * window's threads in workgroup memory; each thread writes its share of the normalised rows.
 *
 * Inputs are dense: x, q, k, v [B, h*w, d] (q, k, v with the heads side by side, as the
 * projections produce them), out_proj [d, d], out_bias [d], pre_norm weight and bias [4d].
 * d and the head dim must be multiples of 4. Outputs: z [B, h*w/4, 4d], mean [B, h*w/4, d].
 */
import { fmt } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { grid, Uniforms } from './layout.js';
import { bufferOf, ctx } from './runtime.js';

/** Workgroup memory for one head chunk of the attention output. */
const O_BUDGET = 24 * 1024;
/** Threads along one row of windows at most (d / 4 / CV of them). */
const MAX_THREADS = 256;
/** Threads per workgroup the tiling aims at. */
const TARGET_THREADS = 64;
/**
 * Windows per thread (16 rows of the register block, as the CPU matmul tiles' 16). On llvmpipe
 * at d = 1152, 8 windows ran about 20% faster than 4 but took 30 s to compile, against 1-2 s.
 */
export const WINDOWS_PER_THREAD = 4;

export interface WindowMergeArgs {
  /** D's input, the residual: [B, h*w, d]. */
  x: Tensor;
  /** The projections, [B, h*w, d] each (heads side by side). */
  q: Tensor;
  k: Tensor;
  v: Tensor;
  /** out_proj weight [d, d] (Linear's [out, in]) and bias [d]. */
  outWeight: Tensor;
  outBias: Tensor;
  /** pre_norm weight and bias [4d]. */
  normWeight: Tensor;
  normBias: Tensor;
  grid: { h: number; w: number };
  heads: number;
  eps: number;
}

/** Tile sizes of one pipeline; the WGSL depends only on these. */
export interface WindowMergeTiles {
  /** vec4s per row of d. */
  d4: number;
  /** vec4s per head. */
  hd4: number;
  heads: number;
  /** vec4 output columns per thread. */
  cv: number;
  /** Threads per window row of the workgroup: d4 / cv. */
  tpw: number;
  /** Windows per thread. */
  rw: number;
  /** Windows per workgroup: rw times the thread rows. */
  wb: number;
  /** Heads per chunk of the projection's inner dim. */
  hc: number;
}

export function windowMergeTiles(d: number, heads: number, rw = WINDOWS_PER_THREAD): WindowMergeTiles {
  const t = planTiles(d, heads, rw);
  if (typeof t === 'string') throw new Error(t);
  return t;
}

/** The tiling for width d, or why the kernel cannot tile it. */
function planTiles(d: number, heads: number, rw: number): WindowMergeTiles | string {
  const hd = d / heads;
  if (d % 4 || !Number.isInteger(hd) || hd % 4) return `windowMerge: d ${d} and head dim ${hd} (d / ${heads} heads) must be multiples of 4`;
  const d4 = d / 4;
  const hd4 = hd / 4;
  const cv = [4, 2, 1].find((c) => d4 % c === 0)!;
  const tpw = d4 / cv;
  if (tpw > MAX_THREADS) return `windowMerge: d ${d} needs ${tpw} threads per window, more than ${MAX_THREADS}`;
  // bytes of workgroup memory per window and head: 4 rows of hd4 vec4s
  const perWindowHead = 4 * hd4 * 16;
  let rows = Math.max(1, Math.floor(TARGET_THREADS / tpw));
  while (rows > 1 && rows * rw * perWindowHead > O_BUDGET) rows = Math.floor(rows / 2);
  let r = rw;
  while (r > 1 && rows * r * perWindowHead > O_BUDGET) r--;
  const wb = rows * r;
  let hc = heads;
  while (hc > 1 && (heads % hc || wb * hc * perWindowHead > O_BUDGET)) hc--;
  if (wb * hc * perWindowHead > O_BUDGET) return `windowMerge: head dim ${hd} is too large for the kernel's workgroup memory`;
  return { d4, hd4, heads, cv, tpw, rw: r, wb, hc };
}

/** Storage buffers the kernel binds: x, q, k, v, out_proj weight and bias, pre_norm weight and bias, z, mean. */
const STORAGE_BUFFERS = 10;

/** Why this device cannot run a pipeline with these tiles (workgroup memory, size, bindings), or null. */
function deviceLimitsExceeded(t: WindowMergeTiles): string | null {
  const lim = ctx().limits;
  const threads = (t.wb / t.rw) * t.tpw;
  // oS, then stN, stMean and stM2 (see windowMergeWgsl)
  const bytes = t.wb * 4 * t.hc * t.hd4 * 16 + 3 * t.rw * threads * 4;
  if (bytes > lim.maxComputeWorkgroupStorageSize) return `windowMerge: needs ${bytes} bytes of workgroup memory, the device allows ${lim.maxComputeWorkgroupStorageSize}`;
  if (threads > lim.maxComputeInvocationsPerWorkgroup || threads > lim.maxComputeWorkgroupSizeX) return `windowMerge: needs ${threads} threads per workgroup, the device allows ${Math.min(lim.maxComputeInvocationsPerWorkgroup, lim.maxComputeWorkgroupSizeX)}`;
  if (STORAGE_BUFFERS > lim.maxStorageBuffersPerShaderStage) return `windowMerge: binds ${STORAGE_BUFFERS} storage buffers, the device allows ${lim.maxStorageBuffersPerShaderStage}`;
  return null;
}

/** Whether windowMerge runs at width d with `heads` heads on this WebGPU device (default tiling). */
export function windowMergeFits(d: number, heads: number): boolean {
  const t = planTiles(d, heads, WINDOWS_PER_THREAD);
  return typeof t !== 'string' && deviceLimitsExceeded(t) === null;
}

const uniforms = () => new Uniforms().u32('windows', 0).u32('per_view', 0).u32('half_w', 0).u32('w', 0).u32('tokens', 0).f32('scale', 0).f32('eps', 0);

export function windowMergeWgsl(t: WindowMergeTiles): string {
  const { d4, hd4, heads, cv, tpw, rw, wb, hc } = t;
  const wg = (wb / rw) * tpw;
  const tree = 2 ** Math.ceil(Math.log2(tpw));
  const R = 4 * rw; // rows of the register block: row r is corner r % 4 of the thread's window r / 4
  const lines = (n: number, f: (i: number) => string, indent = '  ') => Array.from({ length: n }, (_, i) => indent + f(i)).join('\n');
  const block = (f: (r: number, j: number) => string, indent = '  ') => lines(R * cv, (i) => f(Math.floor(i / cv), i % cv), indent);
  const perWindow = (f: (w: number) => string, indent = '  ') => lines(rw, f, indent);
  return /* wgsl */ `
${uniforms().declaration()}
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> q: array<vec4f>;
@group(0) @binding(3) var<storage, read> k: array<vec4f>;
@group(0) @binding(4) var<storage, read> v: array<vec4f>;
@group(0) @binding(5) var<storage, read> wo: array<vec4f>;
@group(0) @binding(6) var<storage, read> bo: array<vec4f>;
@group(0) @binding(7) var<storage, read> nw: array<vec4f>;
@group(0) @binding(8) var<storage, read> nb: array<vec4f>;
@group(0) @binding(9) var<storage, read_write> z: array<vec4f>;
@group(0) @binding(10) var<storage, read_write> m: array<vec4f>;

const D4 = ${d4}u;    // vec4s per token row
const HD4 = ${hd4}u;  // vec4s per head
const H = ${heads}u;
const HC = ${hc}u;    // heads per chunk of the inner dim
const KC = ${hc * hd4}u;   // vec4s of the inner dim per chunk
const CV = ${cv}u;    // vec4 output columns per thread
const TPW = ${tpw}u;  // threads along the columns
const RW = ${rw}u;    // windows per thread
const WB = ${wb}u;    // windows per workgroup
const WG = ${wg}u;

var<workgroup> oS: array<vec4f, ${wb * 4 * hc * hd4}>;   // [WB, 4, KC]: one head chunk of the attention output
var<workgroup> stN: array<f32, ${rw * wg}>;              // [RW, WG] statistics per thread and window
var<workgroup> stMean: array<f32, ${rw * wg}>;
var<workgroup> stM2: array<f32, ${rw * wg}>;

/** Token row (over all views) of corner i (tl, tr, bl, br) of window \`win\`; windows row-major per view. */
fn tokenRow(win: u32, i: u32) -> u32 {
  let b = win / P.per_view;
  let wi = win % P.per_view;
  let top = b * P.tokens + (wi / P.half_w) * 2u * P.w + (wi % P.half_w) * 2u;
  return top + (i & 1u) + (i >> 1u) * P.w;
}

fn cornerRows(win: u32) -> vec4u {
  return vec4u(tokenRow(win, 0u), tokenRow(win, 1u), tokenRow(win, 2u), tokenRow(win, 3u));
}

fn softmax4(s: vec4f) -> vec4f {
  let e = exp(s - vec4f(max(max(s.x, s.y), max(s.z, s.w))));
  return e / (e.x + e.y + e.z + e.w);
}

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let first = (wid.y * nwg.x + wid.x) * WB;   // the workgroup's first window
  let tr = lid / TPW;   // this thread's windows: first + tr * RW + t, t < RW
  let cg = lid % TPW;   // its vec4 columns: c0 + j, j < CV
  let c0 = cg * CV;
${block((r, j) => `var acc${r}_${j} = vec4f(0.0);`)}

  for (var h0 = 0u; h0 < H; h0 += HC) {
    // 1. Attention of heads h0 .. h0 + HC - 1, one (window, head) pair per thread at a time;
    // windows past the end redo the last one (never stored).
    for (var p = lid; p < WB * HC; p += WG) {
      let wl = p / HC;
      let hh = p % HC;
      let r = cornerRows(min(first + wl, P.windows - 1u)) * D4 + vec4u((h0 + hh) * HD4);
      var s0 = vec4f(0.0);
      var s1 = vec4f(0.0);
      var s2 = vec4f(0.0);
      var s3 = vec4f(0.0);
      for (var e = 0u; e < HD4; e++) {
        let k0 = k[r.x + e];
        let k1 = k[r.y + e];
        let k2 = k[r.z + e];
        let k3 = k[r.w + e];
        let q0 = q[r.x + e];
        let q1 = q[r.y + e];
        let q2 = q[r.z + e];
        let q3 = q[r.w + e];
        s0 += vec4f(dot(q0, k0), dot(q0, k1), dot(q0, k2), dot(q0, k3));
        s1 += vec4f(dot(q1, k0), dot(q1, k1), dot(q1, k2), dot(q1, k3));
        s2 += vec4f(dot(q2, k0), dot(q2, k1), dot(q2, k2), dot(q2, k3));
        s3 += vec4f(dot(q3, k0), dot(q3, k1), dot(q3, k2), dot(q3, k3));
      }
      let p0 = softmax4(s0 * P.scale);
      let p1 = softmax4(s1 * P.scale);
      let p2 = softmax4(s2 * P.scale);
      let p3 = softmax4(s3 * P.scale);
      let o = wl * 4u * KC + hh * HD4;
      for (var e = 0u; e < HD4; e++) {
        let v0 = v[r.x + e];
        let v1 = v[r.y + e];
        let v2 = v[r.z + e];
        let v3 = v[r.w + e];
        oS[o + e] = p0.x * v0 + p0.y * v1 + p0.z * v2 + p0.w * v3;
        oS[o + KC + e] = p1.x * v0 + p1.y * v1 + p1.z * v2 + p1.w * v3;
        oS[o + 2u * KC + e] = p2.x * v0 + p2.y * v1 + p2.z * v2 + p2.w * v3;
        oS[o + 3u * KC + e] = p3.x * v0 + p3.y * v1 + p3.z * v2 + p3.w * v3;
      }
    }
    workgroupBarrier();

    // 2. This chunk's share of o · woᵀ: rows of the thread's windows (a<r>) times out_proj rows
    // 4(c0 + j) .. + 3 (output columns) along the chunk's inner dim.
    let aBase = tr * RW * 4u * KC;
    for (var kk = 0u; kk < KC; kk++) {
${lines(R, (r) => `let a${r} = oS[aBase + ${r}u * KC + kk];`, '      ')}
${lines(cv, (j) => `{
        let w = (4u * (c0 + ${j}u)) * D4 + h0 * HD4 + kk;
        let b0 = wo[w];
        let b1 = wo[w + D4];
        let b2 = wo[w + 2u * D4];
        let b3 = wo[w + 3u * D4];
${lines(R, (r) => `acc${r}_${j} += vec4f(dot(a${r}, b0), dot(a${r}, b1), dot(a${r}, b2), dot(a${r}, b3));`, '        ')}
      }`, '      ')}
    }
    workgroupBarrier();   // the next chunk overwrites oS
  }

  // The residual and the bias, then per window t: its mean and its statistics.
${perWindow((w) => `let win${w} = min(first + tr * RW + ${w}u, P.windows - 1u);
  let live${w} = first + tr * RW + ${w}u < P.windows;
  let rows${w} = cornerRows(win${w}) * D4 + vec4u(c0);`)}
${block((r, j) => `acc${r}_${j} += x[rows${Math.floor(r / 4)}[${r % 4}] + ${j}u] + bo[c0 + ${j}u];`)}
${perWindow((w) => `if (live${w}) {
${lines(cv, (j) => `m[win${w} * D4 + c0 + ${j}u] = (acc${4 * w}_${j} + acc${4 * w + 1}_${j} + acc${4 * w + 2}_${j} + acc${4 * w + 3}_${j}) * 0.25;`, '    ')}
  }`)}
  let n = ${16 * cv}.0;   // values of one window per thread
${perWindow((w) => {
    const vals = Array.from({ length: 4 * cv }, (_, i) => `acc${4 * w + Math.floor(i / cv)}_${i % cv}`);
    return `{
    let mean = (${vals.map((v) => `dot(${v}, vec4f(1.0))`).join(' + ')}) / n;
    var m2 = 0.0;
${vals.map((v) => `    { let d = ${v} - vec4f(mean); m2 += dot(d, d); }`).join('\n')}
    stN[${w}u * WG + lid] = n;
    stMean[${w}u * WG + lid] = mean;
    stM2[${w}u * WG + lid] = m2;
  }`;
  })}
  workgroupBarrier();
  // Chan's merge over the TPW threads of each window row (slots tr * TPW .. + TPW - 1).
  for (var stride = ${tree >> 1}u; stride > 0u; stride /= 2u) {
    if (cg < stride && cg + stride < TPW) {
      for (var t = 0u; t < RW; t++) {
        let sa = t * WG + lid;
        let sb = sa + stride;
        let na = stN[sa];
        let nb_ = stN[sb];
        let nn = na + nb_;
        let d = stMean[sb] - stMean[sa];
        stMean[sa] = stMean[sa] + d * (nb_ / nn);
        stM2[sa] = stM2[sa] + stM2[sb] + d * d * (na * nb_ / nn);
        stN[sa] = nn;
      }
    }
    workgroupBarrier();
  }

  // pre_norm: this thread's share of each window's 4d row [tl, tr, bl, br].
${perWindow((w) => `if (live${w}) {
    let s = ${w}u * WG + tr * TPW;
    let mu = vec4f(stMean[s]);
    let inv = inverseSqrt(stM2[s] / f32(16u * D4) + P.eps);
${lines(4 * cv, (i) => {
    const corner = Math.floor(i / cv);
    const j = i % cv;
    return `{ let c = ${corner}u * D4 + c0 + ${j}u; z[win${w} * 4u * D4 + c] = (acc${4 * w + corner}_${j} - mu) * inv * nw[c] + nb[c]; }`;
  }, '    ')}
  }`)}
}`;
}

/**
 * Queues D's window attention, output projection, residual, unshuffle, window mean and pre_norm;
 * `tiles` overrides the tiling (for the lab and tests); `into` gives the outputs (fresh, dense
 * [B, h*w/4, 4d] and [B, h*w/4, d]) instead of allocating them.
 */
export function windowMerge(a: WindowMergeArgs, tiles?: WindowMergeTiles, into?: { z: Tensor; mean: Tensor }): { z: Tensor; mean: Tensor } {
  const { x, grid: g, heads } = a;
  if (x.rank !== 3) throw new Error(`windowMerge: x must be [B, h*w, d], got ${fmt(x.shape)}`);
  const [B, S, d] = x.shape;
  if (g.h % 2 || g.w % 2 || g.h * g.w !== S) throw new Error(`windowMerge: grid ${g.h}x${g.w} (even sides) does not hold the ${S} tokens of x ${fmt(x.shape)}`);
  const expect: [string, Tensor, number[]][] = [
    ['x', x, [B, S, d]], ['q', a.q, [B, S, d]], ['k', a.k, [B, S, d]], ['v', a.v, [B, S, d]],
    ['outWeight', a.outWeight, [d, d]], ['outBias', a.outBias, [d]], ['normWeight', a.normWeight, [4 * d]], ['normBias', a.normBias, [4 * d]],
  ];
  for (const [name, t, shape] of expect) {
    if (t.shape.length !== shape.length || t.shape.some((n, i) => n !== shape[i])) throw new Error(`windowMerge: ${name} must be ${fmt(shape)}, got ${fmt(t.shape)}`);
    if (!t.isContiguous) throw new Error(`windowMerge: ${name} ${fmt(t.shape)} must be dense (call contiguous())`);
    if (t.device !== 'webgpu' || t.dtype !== 'float32') throw new Error(`windowMerge: ${name} must be a float32 webgpu tensor, got ${t.dtype} on ${t.device}`);
  }
  tiles ??= windowMergeTiles(d, heads);
  if (tiles.d4 * 4 !== d || tiles.heads !== heads) throw new Error(`windowMerge: tiles for d ${tiles.d4 * 4}, ${tiles.heads} heads given for d ${d}, ${heads} heads`);
  const exceeded = deviceLimitsExceeded(tiles);
  if (exceeded) throw new Error(exceeded);
  const windows = (B * S) / 4;
  const z = into?.z ?? Tensor.empty([B, S / 4, 4 * d], 'float32', 'webgpu');
  const mean = into?.mean ?? Tensor.empty([B, S / 4, d], 'float32', 'webgpu');
  if (windows === 0) return { z, mean };
  const u = new Uniforms()
    .u32('windows', windows)
    .u32('per_view', S / 4)
    .u32('half_w', g.w / 2)
    .u32('w', g.w)
    .u32('tokens', S)
    .f32('scale', 1 / Math.sqrt(d / heads))
    .f32('eps', a.eps);
  const c = ctx();
  c.dispatch({
    label: 'windowMerge',
    key: `windowMerge|${JSON.stringify(tiles)}`,
    code: () => windowMergeWgsl(tiles),
    uniforms: u.bytes(),
    buffers: [x, a.q, a.k, a.v, a.outWeight, a.outBias, a.normWeight, a.normBias, z, mean].map(bufferOf),
    workgroups: grid(Math.ceil(windows / tiles.wb), 1, c.limits.maxComputeWorkgroupsPerDimension),
  });
  return { z, mean };
}
