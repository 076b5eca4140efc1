/**
 * Fused scaled-dot-product attention (f32), two kernels:
 *
 * - `flash`: one workgroup per (batch, kv head, block of BQ queries of the q heads that share
 *   that kv head). Keys and values are streamed through workgroup memory in blocks of BK,
 *   once for all those q heads (grouped-query attention); each query keeps a running max `m`,
 *   a running sum `l` and its output accumulator in registers (online softmax), so the
 *   Sq x Sk score matrix never exists. A thread owns RQ queries (each k and v vector read
 *   serves them all); with large head dims TPQ threads share a query, each holding a slice
 *   of the head dim, and sum their partial q·k dots through workgroup memory.
 *   Causal attention stops streaming after the block's last visible key; with segment ids a
 *   key block is skipped when its id range is disjoint from the workgroup's query ids (so
 *   per-view attention over views laid end to end costs only the views' diagonal blocks).
 * - `window`: the 2x2-window path of the compressor. Each query sees only the 4 tokens of
 *   its window, so one thread per window reads its 4 q, k and v rows directly.
 *
 * Semantics (masks, GQA, fully masked rows -> 0) are those of tensor/cpu/attention.ts.
 * q, k, v and the segment ids may be strided views: their strides and offsets travel in the
 * uniforms. Pipelines are specialised only on tile sizes and on whether segment ids exist;
 * tile sizes follow one of two profiles (`TileProfile`): software adapters and real GPUs.
 */
import type { AttentionParams } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import { grid, Uniforms } from './layout.js';
import { PlanCache, pushList, type PlannedDispatch, type Signature } from './plans.js';
import { bufferOf, ctx } from './runtime.js';

/** Workgroup memory the flash kernel may use (the device gives 32 KiB; keep a margin). */
const SHARED_BUDGET = 28 * 1024;
/** Threads per workgroup of the window kernel (one per query). */
const WINDOW_WG = 64;

/**
 * How flash tiles are sized. `cpu` is for software adapters (llvmpipe): there every read of
 * workgroup memory is a per-lane gather while private variables are plain vector registers,
 * so a thread owns several queries (each k and v read then serves all of them) and a whole
 * head dim, at a large register cost. `gpu` keeps a thread's registers few, as real GPUs
 * need: the head dim is split across threads once it passes 32 floats.
 */
export type TileProfile = 'cpu' | 'gpu';

interface ProfileLimits {
  /** vec4s of the head dim one thread holds per query; beyond, threads split the head dim. */
  maxVec4PerThread: number;
  /** vec4s of queries plus accumulators one thread may hold. */
  registerVec4s: number;
  maxQueriesPerThread: number;
  /** Threads per workgroup for long query sequences. */
  threads: number;
}

const PROFILES: Record<TileProfile, ProfileLimits> = {
  cpu: { maxVec4PerThread: 32, registerVec4s: 128, maxQueriesPerThread: 4, threads: 32 },
  gpu: { maxVec4PerThread: 8, registerVec4s: 16, maxQueriesPerThread: 2, threads: 64 },
};

let profileOverride: TileProfile | null = null;

/** Forces a tile profile (tests run the `gpu` tiles on llvmpipe too); null restores the default. */
export function setTileProfile(profile: TileProfile | null): void {
  profileOverride = profile;
}

/** `cpu` on software adapters, `gpu` otherwise (the backward kernels use the same choice). */
export function tileProfile(): TileProfile {
  if (profileOverride) return profileOverride;
  const c = ctx();
  let profile = profiles.get(c);
  if (profile === undefined) {
    const { description, device, vendor, architecture } = c.info;
    profile = /llvmpipe|lavapipe|softpipe|swiftshader/i.test(`${description} ${device} ${vendor} ${architecture}`) ? 'cpu' : 'gpu';
    profiles.set(c, profile);
  }
  return profile;
}
/** The adapter's profile, per context (asked once). */
const profiles = new WeakMap<object, TileProfile>();

/** Tile sizes of one flash pipeline; the WGSL depends on these and on `seg` only. */
export interface FlashTiles {
  /** vec4s of the head dim per thread and query. */
  ds: number;
  /** Threads per query (a power of two): the head dim is split across them. */
  tpq: number;
  /** Queries per thread. */
  rq: number;
  /** Threads along queries: the workgroup has qt * tpq threads and qt * rq queries. */
  qt: number;
  /** Keys per streamed block. */
  bk: number;
  seg: boolean;
}

/**
 * Chooses tiles for head dim `d` and `queries` per (batch, kv head), i.e. (Hq / Hkv) · Sq:
 * threads per query from the head dim, then as many queries per thread as the register budget
 * allows (with the cpu profile: 4 at D <= 64, 3 at D = 72, 2 at D = 128); few queries
 * (decoding) get one query per thread and a small workgroup. Then the largest key block that
 * fits in workgroup memory.
 */
export function flashTiles(d: number, queries: number, seg: boolean, profile: TileProfile): FlashTiles {
  const lim = PROFILES[profile];
  const dv = Math.max(1, Math.ceil(d / 4));
  let tpq = 1;
  while (Math.ceil(dv / tpq) > lim.maxVec4PerThread) tpq *= 2;
  const ds = Math.ceil(dv / tpq);
  const short = queries <= 16;
  const rq = short ? 1 : Math.max(1, Math.min(lim.maxQueriesPerThread, Math.floor(lim.registerVec4s / (2 * ds))));
  const qt = short ? 8 : Math.max(1, lim.threads / tpq);
  const perKey = 2 * ds * tpq * 16 + (tpq > 1 ? qt * rq * tpq * 4 : 0) + (seg ? 4 : 0);
  let bk = 64;
  while (bk > 1 && bk * perKey > SHARED_BUDGET) bk /= 2;
  if (bk * perKey > SHARED_BUDGET) {
    throw new Error(`attention: head dim ${d} is too large for the webgpu kernel's workgroup memory`);
  }
  return { ds, tpq, rq, qt, bk, seg };
}

/**
 * WGSL reading 4 consecutive head-dim elements d0..d0+3 of one row of a strided view, zeros
 * past D or when `ok` is false. Branch-free: the head-dim index is clamped into the row (the
 * callers clamp rows into the tensor), so every read is in bounds; unwanted lanes are masked.
 */
export function load4Fn(name: string, buf: string): string {
  return /* wgsl */ `
fn ${name}(row: u32, sd: u32, d0: u32, ok: bool) -> vec4f {
  let d = vec4u(d0) + vec4u(0u, 1u, 2u, 3u);
  let i = vec4u(row) + min(d, vec4u(P.d - 1u)) * sd;
  let x = vec4f(${buf}[i.x], ${buf}[i.y], ${buf}[i.z], ${buf}[i.w]);
  return select(vec4f(0.0), x, (d < vec4u(P.d)) & vec4<bool>(ok));
}`;
}

/** The 4 strides (b, h, s, d) and offset of a [B, H, S, D] view, as uniforms `<p>_sb` ... `<p>_off`. */
export function viewUniforms(u: Uniforms, p: string, t: Tensor): void {
  const [sb, sh, ss, sd] = t.strides;
  u.u32(`${p}_sb`, sb).u32(`${p}_sh`, sh).u32(`${p}_ss`, ss).u32(`${p}_sd`, sd).u32(`${p}_off`, t.offset);
}

/** Strides (b, s) and offset of an int32 [B, S] segment-id view. */
export function segUniforms(u: Uniforms, p: string, t: Tensor): void {
  u.u32(`${p}_sb`, t.strides[0]).u32(`${p}_ss`, t.strides[1]).u32(`${p}_off`, t.offset);
}

/** Uniforms shared by both kernels: sizes, scale, causal shift, and every view's layout. */
function commonUniforms(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, out: Tensor): Uniforms {
  const [, Hq, Sq, D] = q.shape;
  const [, Hkv, Sk] = k.shape;
  const u = new Uniforms()
    .u32('hq', Hq)
    .u32('hkv', Hkv)
    .u32('group', Hq / Hkv)
    .u32('sq', Sq)
    .u32('sk', Sk)
    .u32('d', D)
    .u32('causal', p.causal ? 1 : 0)
    .i32('shift', Sk - Sq)
    .f32('scale', p.scale);
  viewUniforms(u, 'q', q);
  viewUniforms(u, 'k', k);
  viewUniforms(u, 'v', v);
  u.u32('o_off', out.offset);
  if (p.segmentIdsQ && p.segmentIdsK) {
    segUniforms(u, 'gq', p.segmentIdsQ);
    segUniforms(u, 'gk', p.segmentIdsK);
  }
  return u;
}

/** Storage bindings 1..: q, k, v, out, then segment ids when present. */
function bindings(seg: boolean): string {
  const lines = [
    '@group(0) @binding(1) var<storage, read> q: array<f32>;',
    '@group(0) @binding(2) var<storage, read> k: array<f32>;',
    '@group(0) @binding(3) var<storage, read> v: array<f32>;',
    '@group(0) @binding(4) var<storage, read_write> o: array<f32>;',
  ];
  if (seg) {
    lines.push('@group(0) @binding(5) var<storage, read> segq: array<i32>;');
    lines.push('@group(0) @binding(6) var<storage, read> segk: array<i32>;');
  }
  return lines.join('\n');
}

function buffersOf(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, out: Tensor): GPUBuffer[] {
  const bufs = [q, k, v, out].map(bufferOf);
  if (p.segmentIdsQ && p.segmentIdsK) bufs.push(bufferOf(p.segmentIdsQ), bufferOf(p.segmentIdsK));
  return bufs;
}

/**
 * One line per (query r, head-dim vec4 c) of this thread, in order. The flash kernel keeps
 * its per-thread state in separately named variables (`q1_3`, `acc1_3`, `m1`, ...) written
 * out by these helpers instead of in loops over private arrays: shader compilers (llvmpipe's
 * among them) keep such variables in registers, while a private array read in a loop that is
 * not unrolled goes through memory.
 */
function perQuery(rq: number, f: (r: number) => string): string {
  return Array.from({ length: rq }, (_, r) => f(r)).join('\n');
}
function perSlice(ds: number, f: (c: number) => string): string {
  return Array.from({ length: ds }, (_, c) => f(c)).join('\n');
}
/** Like perQuery, on one line. */
function perQueryInline(rq: number, f: (r: number) => string): string {
  return Array.from({ length: rq }, (_, r) => f(r)).join('');
}
/** `const NAME = value;` with its comment aligned. */
function constant(name: string, value: string, comment: string): string {
  return `${`const ${name} = ${value};`.padEnd(24)}// ${comment}`;
}

/** The streaming (flash) kernel's WGSL for one set of tiles. */
export function flashWgsl(t: FlashTiles, uniformDecl: string): string {
  const { ds, tpq, rq, qt, bk, seg } = t;
  const split = tpq > 1;
  // Index within a DVP-long row of this thread's c-th vec4: slices interleave across TPQ threads.
  const slot = (c: number) => (split ? `${c}u * TPQ + part` : `${c}u`);
  // First head-dim element of that vec4.
  const d0 = (c: number) => (split ? `(${c}u * TPQ + part) * 4u` : `${4 * c}u`);
  const all = (f: (r: number, c: number) => string, indent: string) =>
    perQuery(rq, (r) => perSlice(ds, (c) => indent + f(r, c)));
  // s<r> += q<r>·k over this thread's slice of key j.
  const anyVisible = Array.from({ length: rq }, (_, r) => `vis${r}`).join(' || ');
  const dots = (indent: string) =>
    perSlice(ds, (c) => `${indent}{ let kc = kS[j * DVP + ${slot(c)}];${perQueryInline(rq, (r) => ` s${r} += dot(q${r}_${c}, kc);`)} }`);
  return /* wgsl */ `
${uniformDecl}
${bindings(seg)}

${constant('DS', `${ds}u`, 'vec4s of the head dim per thread and query')}
${constant('TPQ', `${tpq}u`, 'threads per query (they split the head dim)')}
${constant('RQ', `${rq}u`, 'queries per thread')}
${constant('QT', `${qt}u`, 'threads along queries')}
${constant('DVP', 'DS * TPQ', 'vec4s per (zero-padded) head-dim row')}
${constant('BQ', 'QT * RQ', 'queries per workgroup')}
${constant('BK', `${bk}u`, 'keys per streamed block')}
${constant('WG', 'QT * TPQ', 'threads per workgroup')}
${constant('NEG', '-3.0e38', 'running-max start: below any real score, and exp(NEG - s) = 0')}

var<workgroup> kS: array<vec4f, ${bk * ds * tpq}>;   // [BK, DVP] key block
var<workgroup> vS: array<vec4f, ${bk * ds * tpq}>;   // [BK, DVP] value block
${split ? `var<workgroup> partS: array<f32, ${bk * rq * qt * tpq}>;  // [BK, RQ, QT, TPQ] partial q·k` : ''}
${seg ? `var<workgroup> segS: array<i32, ${bk}>;   // segment ids of the key block
const I32_MAX = 2147483647;
const I32_MIN = -2147483647 - 1;` : ''}

${load4Fn('loadQ4', 'q')}
${load4Fn('loadK4', 'k')}
${load4Fn('loadV4', 'v')}

/** Online softmax step for one query: returns the new (max, sum, rescale factor of the accumulator, weight of this key). */
fn softmaxStep(m: f32, l: f32, s: f32) -> vec4f {
  if (s > m) {
    let a = exp(m - s);   // the max grows: older terms shrink by a
    return vec4f(s, l * a + 1.0, a, 1.0);
  }
  let e = exp(s - m);
  return vec4f(m, l + e, 1.0, e);
}

@compute @workgroup_size(${qt * tpq})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let flat = wid.y * nwg.x + wid.x;
  if (flat >= P.groups) { return; }
  // Grouped-query heads share the workgroup: kv head kh serves q heads kh * G .. kh * G + G - 1
  // (G = Hq / Hkv), whose queries are numbered f = row * G + (h - kh * G), so each key and
  // value block is staged once for all of them and a block of f covers consecutive rows.
  let nf = P.group * P.sq;          // queries per (batch, kv head)
  let nqb = (nf + BQ - 1u) / BQ;
  let qb = flat % nqb;
  let bkh = flat / nqb;
  let kh = bkh % P.hkv;
  let b = bkh / P.hkv;
  let qi = lid / TPQ;               // this thread owns queries f<r> = q0 + qi * RQ + r, r < RQ,
  let part = lid % TPQ;             // and slice \`part\` of their head dim
  let q0 = qb * BQ;

  // Per query r: whether it exists (ok<r>), its head and row, its slice of q (pre-multiplied
  // by the scale) as q<r>_<c>, the accumulator acc<r>_<c>, the running max m<r> and the sum
  // l<r> of exp(score - m<r>).
${perQuery(rq, (r) => `  let f${r} = q0 + qi * RQ + ${r}u;
  let ok${r} = f${r} < nf;
  let row${r} = min(f${r} / P.group, P.sq - 1u);
  let h${r} = kh * P.group + f${r} % P.group;
  let qRow${r} = P.q_off + b * P.q_sb + h${r} * P.q_sh + row${r} * P.q_ss;
  var m${r} = NEG;
  var l${r} = 0.0;${seg ? `
  let seg${r} = segq[P.gq_off + b * P.gq_sb + row${r} * P.gq_ss];` : ''}`)}
${all((r, c) => `let q${r}_${c} = loadQ4(qRow${r}, P.q_sd, ${d0(c)}, ok${r}) * P.scale;`, '  ')}
${all((r, c) => `var acc${r}_${c} = vec4f(0.0);`, '  ')}

  // The block's queries lie in rows rowLo ..= rowHi. Causal: the last row sees keys
  // < rowHi + 1 + (Sk - Sq); stream no further.
  let rowLo = q0 / P.group;
  let rowHi = (min(q0 + BQ, nf) - 1u) / P.group;
  var kEnd = P.sk;
  if (P.causal != 0u) { kEnd = u32(clamp(i32(rowHi + 1u) + P.shift, 0, i32(P.sk))); }
  let kHead = P.k_off + b * P.k_sb + kh * P.k_sh;
  let vHead = P.v_off + b * P.v_sb + kh * P.v_sh;
${seg ? `
  // The range of this workgroup's query segment ids. Read-only storage at workgroup-uniform
  // indices gives workgroup-uniform values, so the block skip below keeps barriers uniform.
  var qLo = I32_MAX;
  var qHi = I32_MIN;
  for (var i = rowLo; i <= rowHi; i++) {
    let id = segq[P.gq_off + b * P.gq_sb + i * P.gq_ss];
    qLo = min(qLo, id);
    qHi = max(qHi, id);
  }
` : ''}
  for (var k0 = 0u; k0 < kEnd; k0 += BK) {
    let nk = min(BK, kEnd - k0);
${seg ? `
    // Skip the block when its keys' ids cannot meet the queries' ids: the ranges are disjoint.
    var kLo = I32_MAX;
    var kHi = I32_MIN;
    for (var j = k0; j < k0 + nk; j++) {
      let id = segk[P.gk_off + b * P.gk_sb + j * P.gk_ss];
      kLo = min(kLo, id);
      kHi = max(kHi, id);
    }
    if (kHi < qLo || kLo > qHi) { continue; }
    for (var j = lid; j < nk; j += WG) { segS[j] = segk[P.gk_off + b * P.gk_sb + (k0 + j) * P.gk_ss]; }
` : ''}
    // Stage the key and value block: [BK, DVP] vec4s, zeros past Sk and past D.
    for (var i = lid; i < BK * DVP; i += WG) {
      let j = i / DVP;
      let d0 = (i % DVP) * 4u;
      let key = min(k0 + j, P.sk - 1u);
      kS[i] = loadK4(kHead + key * P.k_ss, P.k_sd, d0, j < nk);
      vS[i] = loadV4(vHead + key * P.v_ss, P.v_sd, d0, j < nk);
    }
    workgroupBarrier();
${split ? `
    // Partial q·k over this thread's head-dim slice; a query's TPQ threads sum them below.
    for (var j = 0u; j < nk; j++) {
${perQuery(rq, (r) => `      var s${r} = 0.0;`)}
${dots('      ')}
${perQuery(rq, (r) => `      partS[((j * RQ + ${r}u) * QT + qi) * TPQ + part] = s${r};`)}
    }
    workgroupBarrier();
` : ''}
    for (var j = 0u; j < nk; j++) {
      // Which of this thread's queries see key j; nothing to do when none does (the causal
      // diagonal, other segments' keys in a shared block).
      let key = i32(k0 + j);
${perQuery(rq, (r) => `      let vis${r} = ok${r} && (P.causal == 0u || key <= i32(row${r}) + P.shift)${seg ? ` && segS[j] == seg${r}` : ''};`)}
      if (${anyVisible}) {
        // Scores of key j for this thread's queries.
${perQuery(rq, (r) => `        var s${r} = 0.0;`)}
${split
    ? perQuery(rq, (r) => `        for (var t = 0u; t < TPQ; t++) { s${r} += partS[((j * RQ + ${r}u) * QT + qi) * TPQ + t]; }`)
    : dots('        ')}
        // Online softmax: e<r> is key j's weight for query r (0 when masked); the
        // accumulator is rescaled by a<r> when the running max grows.
${perQuery(rq, (r) => `        var a${r} = 1.0;
        var e${r} = 0.0;
        if (vis${r}) {
          let st = softmaxStep(m${r}, l${r}, s${r});
          m${r} = st.x;
          l${r} = st.y;
          a${r} = st.z;
          e${r} = st.w;
        }`)}
${perSlice(ds, (c) => `        { let vc = vS[j * DVP + ${slot(c)}];${perQueryInline(rq, (r) => ` acc${r}_${c} = acc${r}_${c} * a${r} + e${r} * vc;`)} }`)}
      }
    }
    workgroupBarrier();   // the next block overwrites the workgroup arrays
  }

  // Normalise and write; a query that saw no key (fully masked) writes zeros.
${perQuery(rq, (r) => `  if (ok${r}) {
    let inv = select(0.0, 1.0 / l${r}, l${r} > 0.0);
    let oRow = P.o_off + ((b * P.hq + h${r}) * P.sq + row${r}) * P.d;
${perSlice(ds, (c) => `    store4(oRow, ${d0(c)}, acc${r}_${c} * inv);`)}
  }`)}
}

/** Writes the elements of x that fall inside the head dim at o[row + d0 ...]. */
fn store4(row: u32, d0: u32, x: vec4f) {
  for (var e = 0u; e < 4u; e++) {
    if (d0 + e < P.d) { o[row + d0 + e] = x[e]; }
  }
}`;
}

/**
 * The 2x2-window kernel's WGSL: one thread per window. Its 4 queries see only its 4 keys, so
 * the thread reads each of the 4 q, k and v rows once and keeps the 4x4 scores in registers.
 */
export function windowWgsl(seg: boolean, uniformDecl: string): string {
  return /* wgsl */ `
${uniformDecl}
${bindings(seg)}

const NEG = -3.0e38;

/** Softmax over the visible entries of one query's 4 scores; all zeros when none is visible. */
fn softmax4(s: vec4f, visible: vec4<bool>) -> vec4f {
  let m = max(max(select(NEG, s.x, visible.x), select(NEG, s.y, visible.y)),
              max(select(NEG, s.z, visible.z), select(NEG, s.w, visible.w)));
  let e = select(vec4f(0.0), exp(s - vec4f(m)), visible);
  let l = e.x + e.y + e.z + e.w;
  return select(vec4f(0.0), e / l, l > 0.0);
}

@compute @workgroup_size(${WINDOW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let t = (wid.y * nwg.x + wid.x) * ${WINDOW_WG}u + lid;
  if (t >= P.n) { return; }
  let perHead = P.sq / 4u;          // windows per (batch, head), row-major over the grid
  let wi = t % perHead;
  let bh = t / perHead;
  let h = bh % P.hq;
  let b = bh / P.hq;
  let kh = h / P.group;
  let halfW = P.w / 2u;
  let top = (wi / halfW) * 2u * P.w + (wi % halfW) * 2u;   // token of the window's top-left
  // The window's tokens: top-left, top-right, bottom-left, bottom-right. They are both the
  // queries (index i) and the keys (index a) of the window.
  let tok = vec4u(top, top + 1u, top + P.w, top + P.w + 1u);

  // vis<i>[a]: query i sees key a.
  var vis0 = vec4<bool>(true);
  var vis1 = vec4<bool>(true);
  var vis2 = vec4<bool>(true);
  var vis3 = vec4<bool>(true);
  if (P.causal != 0u) {
    let kt = vec4i(tok);
    vis0 = kt <= vec4i(i32(tok.x) + P.shift);
    vis1 = kt <= vec4i(i32(tok.y) + P.shift);
    vis2 = kt <= vec4i(i32(tok.z) + P.shift);
    vis3 = kt <= vec4i(i32(tok.w) + P.shift);
  }
${seg ? `  let gq = vec4u(P.gq_off + b * P.gq_sb) + tok * P.gq_ss;
  let gk = vec4u(P.gk_off + b * P.gk_sb) + tok * P.gk_ss;
  let idq = vec4i(segq[gq.x], segq[gq.y], segq[gq.z], segq[gq.w]);
  let idk = vec4i(segk[gk.x], segk[gk.y], segk[gk.z], segk[gk.w]);
  vis0 = vis0 & (idk == vec4i(idq.x));
  vis1 = vis1 & (idk == vec4i(idq.y));
  vis2 = vis2 & (idk == vec4i(idq.z));
  vis3 = vis3 & (idk == vec4i(idq.w));` : ''}

  let qRows = vec4u(P.q_off + b * P.q_sb + h * P.q_sh) + tok * P.q_ss;
  let kRows = vec4u(P.k_off + b * P.k_sb + kh * P.k_sh) + tok * P.k_ss;
  let vRows = vec4u(P.v_off + b * P.v_sb + kh * P.v_sh) + tok * P.v_ss;

  // s<i>[a] = q<i> · k<a>, accumulated over the head dim.
  var s0 = vec4f(0.0);
  var s1 = vec4f(0.0);
  var s2 = vec4f(0.0);
  var s3 = vec4f(0.0);
  for (var d = 0u; d < P.d; d++) {
    let qd = qRows + vec4u(d * P.q_sd);
    let kd = kRows + vec4u(d * P.k_sd);
    let qv = vec4f(q[qd.x], q[qd.y], q[qd.z], q[qd.w]);
    let kv = vec4f(k[kd.x], k[kd.y], k[kd.z], k[kd.w]);
    s0 += qv.x * kv;
    s1 += qv.y * kv;
    s2 += qv.z * kv;
    s3 += qv.w * kv;
  }
  let p0 = softmax4(s0 * P.scale, vis0);
  let p1 = softmax4(s1 * P.scale, vis1);
  let p2 = softmax4(s2 * P.scale, vis2);
  let p3 = softmax4(s3 * P.scale, vis3);

  // out<i> = sum_a p<i>[a] v<a>.
  let oRows = vec4u(P.o_off + (b * P.hq + h) * P.sq * P.d) + tok * P.d;
  for (var d = 0u; d < P.d; d++) {
    let vd = vRows + vec4u(d * P.v_sd);
    let vv = vec4f(v[vd.x], v[vd.y], v[vd.z], v[vd.w]);
    o[oRows.x + d] = dot(p0, vv);
    o[oRows.y + d] = dot(p1, vv);
    o[oRows.z + d] = dot(p2, vv);
    o[oRows.w + d] = dot(p3, vv);
  }
}`;
}

/** An attention dispatch of one signature; the operands' offsets are written per call. */
interface AttentionPlan extends PlannedDispatch {
  label: string;
  /** Words of q_off, k_off, v_off, o_off, then gq_off, gk_off with segment ids. */
  offsetWords: readonly number[];
  workgroups: readonly [number, number];
}
const attentionPlans = new PlanCache<AttentionPlan>();

/** Pushes the signature part shared by the forward and backward plans: profile, mask, layouts. */
export function pushAttentionSignature(sig: Signature, q: Tensor, k: Tensor, v: Tensor, p: AttentionParams): void {
  const seg = p.segmentIdsQ !== null && p.segmentIdsK !== null;
  sig.push(tileProfile() === 'cpu' ? 0 : 1, p.causal ? 1 : 0, p.scale, p.window ? p.window.w : -1, seg ? 1 : 0);
  pushList(sig, q.shape);
  pushList(sig, q.strides);
  pushList(sig, k.shape);
  pushList(sig, k.strides);
  pushList(sig, v.shape);
  pushList(sig, v.strides);
  if (p.segmentIdsQ && p.segmentIdsK) {
    pushList(sig, p.segmentIdsQ.strides);
    pushList(sig, p.segmentIdsK.strides);
  }
}

/**
 * out[b, h, i, :] = softmax_j(scale · q[b, h, i] · k[b, h / (Hq/Hkv), j]) over the visible j, times v.
 * q: [B, Hq, Sq, D], k and v: [B, Hkv, Sk, D] (any strides), out: contiguous [B, Hq, Sq, D].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, out: Tensor): void {
  if (out.size === 0) return;
  if (q.dtype !== 'float32' || k.dtype !== 'float32' || v.dtype !== 'float32') throw new Error(`attention: webgpu supports float32 only, got ${q.dtype}`);
  const c = ctx();
  const sig = attentionPlans.start(c);
  pushAttentionSignature(sig, q, k, v, p);
  const plan = attentionPlans.find() ?? attentionPlans.add(attentionPlan(q, k, v, p, out));
  const w = plan.words;
  const at = plan.offsetWords;
  w[at[0]] = q.offset;
  w[at[1]] = k.offset;
  w[at[2]] = v.offset;
  w[at[3]] = out.offset;
  if (p.segmentIdsQ && p.segmentIdsK) {
    w[at[4]] = p.segmentIdsQ.offset;
    w[at[5]] = p.segmentIdsK.offset;
  }
  c.dispatch({ label: plan.label, key: plan.key, code: plan.code, uniforms: w, buffers: buffersOf(q, k, v, p, out), workgroups: plan.workgroups });
}

function attentionPlan(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, out: Tensor): AttentionPlan {
  const [B, Hq, Sq, D] = q.shape;
  const c = ctx();
  const seg = p.segmentIdsQ !== null && p.segmentIdsK !== null;
  const u = commonUniforms(q, k, v, p, out);
  const maxWg = c.limits.maxComputeWorkgroupsPerDimension;
  const offsetWords = () => ['q_off', 'k_off', 'v_off', 'o_off', ...(seg ? ['gq_off', 'gk_off'] : [])].map((f) => u.wordOf(f));
  if (p.window) {
    const n = (B * Hq * Sq) / 4; // windows
    u.u32('n', n).u32('w', p.window.w);
    return {
      label: 'attention (2x2 window)',
      key: `attention window|${seg}`,
      code: () => windowWgsl(seg, u.declaration()),
      words: u.words32(),
      offsetWords: offsetWords(),
      workgroups: grid(n, WINDOW_WG, maxWg),
    };
  }
  const Hkv = k.shape[1];
  const perKvHead = (Hq / Hkv) * Sq;
  const tiles = flashTiles(D, perKvHead, seg, tileProfile());
  const groups = B * Hkv * Math.ceil(perKvHead / (tiles.qt * tiles.rq));
  u.u32('groups', groups);
  return {
    label: 'attention',
    key: `attention|${seg}|${JSON.stringify(tiles)}`,
    code: () => flashWgsl(tiles, u.declaration()),
    words: u.words32(),
    offsetWords: offsetWords(),
    workgroups: grid(groups, 1, maxWg),
  };
}
