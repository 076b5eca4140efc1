/**
 * Attention backward (f32) by recomputation: the Sq x Sk probability matrix is never stored,
 * it is rebuilt block by block from q, k and two numbers per query (FlashAttention-2, Dao 2023,
 * Algorithm 2). With s = scale · q kᵀ, P = softmax(s) over the visible keys, O = P v and dO
 * the output gradient:
 *
 *   dV = Pᵀ dO,   dP = dO vᵀ,   dS = P ∘ (dP − Δ),   dQ = scale · dS k,   dK = scale · dSᵀ q,
 *   Δ_i = Σ_d dO_id O_id = Σ_j P_ij dP_ij.
 *
 * Kernels in the style of kernels/attention.ts (same uniforms, mask code and tile profiles):
 *
 * - `stats`: one workgroup per (batch, q head, block of queries). A thread owns a few queries
 *   (scale·q and dO in registers) while key and value blocks stream through workgroup memory;
 *   it keeps the running max m, the sum l of exp(s − m) and Σ_j exp(s_ij − m) dP_ij, so Δ comes
 *   out without forming O. Writes lse = m + log l and Δ per query to a small stats buffer.
 * - `dq`: the same tiling; streams the keys again, P_ij = exp(s_ij − lse_i), dS, and dQ
 *   accumulated in registers.
 * - `dkv`: one workgroup per (batch, kv head, block of keys). A thread owns a few keys (k, v,
 *   dK, dV in registers) and streams the queries of every q head of its group (GQA), rebuilding
 *   P from the stored lse. Each workgroup owns its keys: no atomics.
 * - `window`: the 2x2-window path. A key is seen only by the 4 queries of its window, so one
 *   thread per (window, kv head) does everything directly with the 4x4 scores in registers.
 *
 * The streaming kernels are "row owners": rows are queries (`stats`, `dq`) or keys (`dkv`),
 * columns the other side. For each (row, column) pair all three compute the same two dots,
 * s = scale q·k and dP = dO·v, and differ only in what they accumulate. `stats` is separate
 * from `dq` (rather than a first sweep of it) because its rows hold only q and dO, so a
 * thread can own twice as many: on llvmpipe, where every workgroup-memory read is costly,
 * rows per thread set the speed. Work per visible (q head, query, key): 4·D (stats) + 6·D
 * (dq) + 8·D (dkv) = 18·D flops, against 10·D for a backward that stores P.
 *
 * Semantics (masks, GQA, fully masked rows contribute nothing) are those of the CPU
 * reference in tensor/cpu/grad.ts. q, k, v, dO and the segment ids may be strided views;
 * gq, gk, gv are fresh contiguous tensors.
 */
import type { AttentionParams } from '../tensor/backend.js';
import { Tensor } from '../tensor/tensor.js';
import { load4Fn, pushAttentionSignature, segUniforms, tileProfile, viewUniforms, type TileProfile } from './attention.js';
import { grid, Uniforms } from './layout.js';
import { PlanCache, pushList } from './plans.js';
import { bufferOf, ctx } from './runtime.js';

/** Workgroup memory the streaming kernels may use (the device gives 32 KiB; keep a margin). */
const SHARED_BUDGET = 28 * 1024;
/** Threads per workgroup of the window kernels. */
const WINDOW_WG = 64;

/** Which streaming kernel: softmax statistics or dQ (rows are queries), dK and dV (rows are keys). */
export type GradPass = 'stats' | 'dq' | 'dkv';

/** vec4 slices of per-row state, per slice of head dim: q, dO (stats); q, dO, dQ (dq); k, v, dK, dV (dkv). */
const ROW_STATE: Record<GradPass, number> = { stats: 2, dq: 3, dkv: 4 };

interface ProfileLimits {
  /** vec4s of the head dim one thread holds per row; beyond, threads split the head dim. */
  maxVec4PerThread: number;
  /** vec4s of per-row state (inputs and accumulators) one thread may hold. */
  registerVec4s: number;
  maxRowsPerThread: number;
  /** Threads per workgroup for long sequences. */
  threads: number;
}

/**
 * The two profiles of kernels/attention.ts. `cpu` (software adapters such as llvmpipe:
 * private variables are vector registers, workgroup reads are gathers) gives a thread a few
 * rows with their whole head dim; `gpu` keeps registers few and splits the head dim.
 */
const PROFILES: Record<TileProfile, ProfileLimits> = {
  cpu: { maxVec4PerThread: 32, registerVec4s: 128, maxRowsPerThread: 4, threads: 32 },
  gpu: { maxVec4PerThread: 8, registerVec4s: 32, maxRowsPerThread: 2, threads: 64 },
};

/** Tile sizes of one streaming pipeline; its WGSL depends on these, the pass and `seg` only. */
export interface GradTiles {
  /** vec4s of the head dim per thread and row. */
  ds: number;
  /** Threads per row (a power of two): they split the head dim. */
  tpr: number;
  /** Rows per thread. */
  r: number;
  /** Threads along rows: the workgroup has rt * tpr threads and rt * r rows. */
  rt: number;
  /** Columns per streamed block. */
  bc: number;
  seg: boolean;
}

/**
 * Tiles for `pass` at head dim `d` with `rows` rows (Sq, or Sk for `dkv`): the head-dim split
 * as in the forward kernel; rows per thread from the register budget and ROW_STATE (at D 64
 * on the cpu profile: 4 for stats, 2 for dq and dkv); short sequences get one row per thread
 * in a small workgroup; then the largest column block that fits in workgroup memory.
 */
export function gradTiles(pass: GradPass, d: number, rows: number, seg: boolean, profile: TileProfile): GradTiles {
  const lim = PROFILES[profile];
  const dv = Math.max(1, Math.ceil(d / 4));
  let tpr = 1;
  while (Math.ceil(dv / tpr) > lim.maxVec4PerThread) tpr *= 2;
  const ds = Math.ceil(dv / tpr);
  const perRow = ROW_STATE[pass] * ds;
  const short = rows <= 16;
  const r = short ? 1 : Math.max(1, Math.min(lim.maxRowsPerThread, Math.floor(lim.registerVec4s / perRow)));
  const rt = short ? 8 : Math.max(1, lim.threads / tpr);
  // Per column: two [DVP] vec4 rows, the split's partial dots (a vec2f per row and thread),
  // and a segment id (stats, dq) or a query's stats (dkv, a vec4u).
  const perColumn = 2 * ds * tpr * 16 + (tpr > 1 ? r * rt * tpr * 8 : 0) + (pass === 'dkv' ? 16 : seg ? 4 : 0);
  let bc = 64;
  while (bc > 1 && bc * perColumn > SHARED_BUDGET) bc /= 2;
  if (bc * perColumn > SHARED_BUDGET) {
    throw new Error(`attentionGrad: head dim ${d} is too large for the webgpu kernel's workgroup memory`);
  }
  return { ds, tpr, r, rt, bc, seg };
}

// ---- uniforms and bindings --------------------------------------------------------------

/**
 * Uniforms of all kernels: sizes, scale, causal shift, the layouts of q, k, v and dO (`go`),
 * the output offsets, and the segment-id layouts (`segq`, `segk`) when present.
 */
function gradUniforms(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, gOut: Tensor, gq: Tensor, gk: Tensor, gv: Tensor): Uniforms {
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
  viewUniforms(u, 'go', gOut);
  u.u32('dq_off', gq.offset).u32('dk_off', gk.offset).u32('dv_off', gv.offset);
  if (p.segmentIdsQ && p.segmentIdsK) {
    segUniforms(u, 'segq', p.segmentIdsQ);
    segUniforms(u, 'segk', p.segmentIdsK);
  }
  return u;
}

/** `@binding(1..)` storage declarations, in order, from [name, element type, access]. */
function storageBindings(list: [string, string, 'read' | 'read_write'][]): string {
  return list.map(([name, type, access], i) => `@group(0) @binding(${i + 1}) var<storage, ${access}> ${name}: array<${type}>;`).join('\n');
}

// ---- WGSL building blocks ------------------------------------------------------------------

/** WGSL `fn <name>(row, d0, x)`: writes the lanes of x that fall inside the head dim to a contiguous row of `buf`. */
function rowStorer(name: string, buf: string): string {
  return /* wgsl */ `
fn ${name}(row: u32, d0: u32, x: vec4f) {
  for (var e = 0u; e < 4u; e++) {
    if (d0 + e < P.d) { ${buf}[row + d0 + e] = x[e]; }
  }
}`;
}

/**
 * One line per row r of this thread, or per head-dim vec4 c of its slice. A thread keeps its
 * state in separately named variables (`x0_3`, `acc1_2`, ...) rather than private arrays: the
 * shader compiler keeps those in registers (see kernels/attention.ts).
 */
function eachRow(t: GradTiles, f: (r: number) => string): string {
  return Array.from({ length: t.r }, (_, r) => f(r)).join('\n');
}
function eachSlice(t: GradTiles, f: (c: number) => string): string {
  return Array.from({ length: t.ds }, (_, c) => f(c)).join('\n');
}
function eachRowSlice(t: GradTiles, f: (r: number, c: number) => string): string {
  return eachRow(t, (r) => eachSlice(t, (c) => f(r, c)));
}

/** Index, within a DVP-long row, of this thread's c-th vec4: slices interleave across the TPR threads of a row. */
function slot(t: GradTiles, c: number): string {
  return t.tpr > 1 ? `${c}u * TPR + part` : `${c}u`;
}

/** Constants and workgroup arrays shared by the three streaming kernels. */
function tileHeader(t: GradTiles): string {
  return /* wgsl */ `
const DS = ${t.ds}u;       // vec4s of the head dim per thread and row
const TPR = ${t.tpr}u;     // threads per row (they split the head dim)
const R = ${t.r}u;         // rows per thread
const RT = ${t.rt}u;       // threads along rows
const DVP = DS * TPR;      // vec4s per (zero-padded) head-dim row
const BR = RT * R;         // rows per workgroup
const BC = ${t.bc}u;       // columns per streamed block
const WG = RT * TPR;
const NEG = -3.0e38;       // running-max start: below any score, and exp(NEG - s) = 0
const I32_MAX = 2147483647;
const I32_MIN = -2147483647 - 1;

// The column block: a and b are k and v (stats, dq passes), or scale * q and dO (dkv pass).
var<workgroup> aS: array<vec4f, ${t.bc * t.ds * t.tpr}>;   // [BC, DVP]
var<workgroup> bS: array<vec4f, ${t.bc * t.ds * t.tpr}>;   // [BC, DVP]
${t.tpr > 1 ? `var<workgroup> partS: array<vec2f, ${t.bc * t.r * t.rt * t.tpr}>;   // [BC, R, RT, TPR] partial (s, dP)` : ''}`;
}

/**
 * Column j of the staged block as a<c>, b<c> (this thread's slices), read once: on llvmpipe
 * every workgroup-memory read is a per-lane loop, so a column is read once per row group and
 * serves both the dots and the accumulations of all R rows.
 */
function columnReads(t: GradTiles, indent: string, which: 'ab' | 'a'): string {
  return eachSlice(t, (c) => `${indent}let a${c} = aS[j * DVP + ${slot(t, c)}];${which === 'ab' ? ` let b${c} = bS[j * DVP + ${slot(t, c)}];` : ''}`);
}

/**
 * The two dots of row r with column j, as sp<r> = (s, dP) = (x<r>·a, y<r>·b), where the rows
 * hold x<r>_<c> and y<r>_<c> (q and dO, or k and v). Without a head-dim split, from the
 * column reads a<c>, b<c>; with one, the row's TPR threads first write their partial dots for
 * the whole block (partialDots, before the column loop) and each sums them here.
 */
function pairDots(t: GradTiles, indent: string): string {
  const lines = [eachRow(t, (r) => `${indent}var sp${r} = vec2f(0.0);`)];
  if (t.tpr > 1) {
    lines.push(eachRow(t, (r) => `${indent}for (var u = 0u; u < TPR; u++) { sp${r} += partS[((j * R + ${r}u) * RT + ri) * TPR + u]; }`));
  } else {
    lines.push(columnReads(t, indent, 'ab'));
    lines.push(eachSlice(t, (c) => `${indent}${eachRow(t, (r) => `sp${r} += vec2f(dot(x${r}_${c}, a${c}), dot(y${r}_${c}, b${c}));`).split('\n').join(' ')}`));
  }
  return lines.join('\n');
}

/** With a head-dim split: every thread's partial (s, dP) for each column of the block, then a barrier. */
function partialDots(t: GradTiles, indent: string): string {
  if (t.tpr === 1) return '';
  return `${indent}for (var j = 0u; j < nc; j++) {
${eachRow(t, (r) => `${indent}  var sp${r} = vec2f(0.0);`)}
${eachSlice(t, (c) => `${indent}  { let ac = aS[j * DVP + ${slot(t, c)}]; let bc = bS[j * DVP + ${slot(t, c)}];${eachRow(t, (r) => ` sp${r} += vec2f(dot(x${r}_${c}, ac), dot(y${r}_${c}, bc));`)} }`)}
${eachRow(t, (r) => `${indent}  partS[((j * R + ${r}u) * RT + ri) * TPR + part] = sp${r};`)}
${indent}}
${indent}workgroupBarrier();`;
}

/** `vis0 || vis1 || ...`: some row of this thread sees the column. */
function anyVisible(t: GradTiles): string {
  return Array.from({ length: t.r }, (_, r) => `vis${r}`).join(' || ');
}

// ---- stats and dq passes (rows are queries) ---------------------------------------------------

/**
 * The WGSL of the two passes whose rows are queries (x = scale·q, y = dO) and columns keys
 * (a = k, b = v): `stats` streams the keys once for each query's softmax statistics and Δ
 * and writes them to the stats buffer as (lse, Δ, segment id, 0) u32 bits; `dq` reads them
 * back, streams the keys again and accumulates dQ = scale Σ_j P_ij (dP_ij − Δ_i) k_j.
 */
export function queryRowsWgsl(pass: 'stats' | 'dq', t: GradTiles, uniformDecl: string): string {
  const { seg } = t;
  const stats = pass === 'stats';
  const bindings: [string, string, 'read' | 'read_write'][] = [
    ['q', 'f32', 'read'], ['k', 'f32', 'read'], ['v', 'f32', 'read'], ['go', 'f32', 'read'],
    ['stats', 'vec4u', stats ? 'read_write' : 'read'],
  ];
  if (!stats) bindings.push(['dq', 'f32', 'read_write']);
  if (seg) bindings.push(['segq', 'i32', 'read'], ['segk', 'i32', 'read']);

  return /* wgsl */ `
${uniformDecl}
${storageBindings(bindings)}
${tileHeader(t)}
${seg ? 'var<workgroup> segS: array<i32, BC>;   // segment ids of the key block' : ''}

${load4Fn('loadQ', 'q')}
${load4Fn('loadK', 'k')}
${load4Fn('loadV', 'v')}
${load4Fn('loadGO', 'go')}
${stats ? `
/**
 * One key's step of the online statistics st = (m, l, a) of a query: running max m, running
 * sum l of exp(s - m), and a = sum of exp(s - m) · dP (so that a / l = Δ at the end).
 */
fn statsStep(st: vec3f, s: f32, dp: f32) -> vec3f {
  if (s <= st.x) {
    let e = exp(s - st.x);
    return vec3f(st.x, st.y + e, st.z + e * dp);
  }
  let shrink = exp(st.x - s);   // the max grows: earlier terms are rescaled
  return vec3f(s, st.y * shrink + 1.0, st.z * shrink + dp);
}` : rowStorer('storeDq', 'dq')}

@compute @workgroup_size(${t.rt * t.tpr})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let flat = wid.y * nwg.x + wid.x;
  if (flat >= P.groups) { return; }
  let nrb = (P.sq + BR - 1u) / BR;
  let rb = flat % nrb;
  let bh = flat / nrb;
  let h = bh % P.hq;
  let b = bh / P.hq;
  let kh = h / P.group;             // grouped-query: q head h reads kv head h / (Hq / Hkv)
  let ri = lid / TPR;               // this thread owns queries row<r> = r0 + ri * R + r, r < R,
  let part = lid % TPR;             // and slice \`part\` of their head dim
  let r0 = rb * BR;
  let statsHead = (b * P.hq + h) * P.sq;

  // Per query r: x<r>_<c> = scale · q and y<r>_<c> = dO (this thread's slice), then
${stats ? '  // the online statistics st<r>.' : '  // lse<r> and delta<r> from the stats pass, and the dQ accumulator acc<r>_<c>.'}
${eachRow(t, (r) => `  let row${r} = r0 + ri * R + ${r}u;
  let ok${r} = row${r} < P.sq;
  let at${r} = min(row${r}, P.sq - 1u);
  let qRow${r} = P.q_off + b * P.q_sb + h * P.q_sh + at${r} * P.q_ss;
  let goRow${r} = P.go_off + b * P.go_sb + h * P.go_sh + at${r} * P.go_ss;${stats ? `
  var st${r} = vec3f(NEG, 0.0, 0.0);` : `
  let lse${r} = bitcast<f32>(stats[statsHead + at${r}].x);
  let delta${r} = bitcast<f32>(stats[statsHead + at${r}].y);`}${seg ? `
  let seg${r} = segq[P.segq_off + b * P.segq_sb + at${r} * P.segq_ss];` : ''}`)}
${eachRowSlice(t, (r, c) => `  let x${r}_${c} = loadQ(qRow${r}, P.q_sd, (${slot(t, c)}) * 4u, ok${r}) * P.scale;
  let y${r}_${c} = loadGO(goRow${r}, P.go_sd, (${slot(t, c)}) * 4u, ok${r});${stats ? '' : `
  var acc${r}_${c} = vec4f(0.0);`}`)}

  // Causal: the block's last query sees keys < r0 + BR + (Sk - Sq); stream no further.
  var kEnd = P.sk;
  if (P.causal != 0u) { kEnd = u32(clamp(i32(r0 + BR) + P.shift, 0, i32(P.sk))); }
  let kHead = P.k_off + b * P.k_sb + kh * P.k_sh;
  let vHead = P.v_off + b * P.v_sb + kh * P.v_sh;
${seg ? `
  // The range of this workgroup's query ids (read-only storage at workgroup-uniform indices:
  // a workgroup-uniform value, so the block skip keeps the barriers in uniform control flow).
  var qLo = I32_MAX;
  var qHi = I32_MIN;
  for (var i = r0; i < min(r0 + BR, P.sq); i++) {
    let id = segq[P.segq_off + b * P.segq_sb + i * P.segq_ss];
    qLo = min(qLo, id);
    qHi = max(qHi, id);
  }` : ''}
  for (var k0 = 0u; k0 < kEnd; k0 += BC) {
    let nc = min(BC, kEnd - k0);
${seg ? `    // Skip the block when its key ids cannot meet the queries' ids (disjoint ranges).
    var kLo = I32_MAX;
    var kHi = I32_MIN;
    for (var j = k0; j < k0 + nc; j++) {
      let id = segk[P.segk_off + b * P.segk_sb + j * P.segk_ss];
      kLo = min(kLo, id);
      kHi = max(kHi, id);
    }
    if (kHi < qLo || kLo > qHi) { continue; }
    for (var j = lid; j < nc; j += WG) { segS[j] = segk[P.segk_off + b * P.segk_sb + (k0 + j) * P.segk_ss]; }
` : ''}    // Stage the key and value block, zeros past Sk and past D.
    for (var i = lid; i < BC * DVP; i += WG) {
      let j = i / DVP;
      let d0 = (i % DVP) * 4u;
      let key = min(k0 + j, P.sk - 1u);
      aS[i] = loadK(kHead + key * P.k_ss, P.k_sd, d0, j < nc);
      bS[i] = loadV(vHead + key * P.v_ss, P.v_sd, d0, j < nc);
    }
    workgroupBarrier();
${partialDots(t, '    ')}
    for (var j = 0u; j < nc; j++) {
      let key = i32(k0 + j);
${eachRow(t, (r) => `      let vis${r} = ok${r} && (P.causal == 0u || key <= i32(row${r}) + P.shift)${seg ? ` && segS[j] == seg${r}` : ''};`)}
      if (${anyVisible(t)}) {
${pairDots(t, '        ')}
${stats
    ? eachRow(t, (r) => `        if (vis${r}) { st${r} = statsStep(st${r}, sp${r}.x, sp${r}.y); }`)
    : `        // P = exp(s - lse), dS = P (dP - Δ), dQ += dS k.
${eachRow(t, (r) => `        let ds${r} = select(0.0, exp(sp${r}.x - lse${r}), vis${r}) * (sp${r}.y - delta${r});`)}${t.tpr > 1 ? `\n${columnReads(t, '        ', 'a')}` : ''}
${eachSlice(t, (c) => `       ${eachRow(t, (r) => ` acc${r}_${c} += ds${r} * a${c};`).split('\n').join('')}`)}`}
      }
    }
    workgroupBarrier();   // the next block overwrites the workgroup arrays
  }

${stats
    ? `  // lse = m + log l and Δ = a / l; a query that sees no key keeps zeros (and is never visible).
${eachRow(t, (r) => `  if (ok${r} && part == 0u) {
    let seen = st${r}.y > 0.0;
    let lse = select(0.0, st${r}.x + log(st${r}.y), seen);
    let delta = select(0.0, st${r}.z / st${r}.y, seen);
    stats[statsHead + row${r}] = vec4u(bitcast<u32>(lse), bitcast<u32>(delta), ${seg ? `bitcast<u32>(seg${r})` : '0u'}, 0u);
  }`)}`
    : `  // dQ = scale · Σ_j dS_ij k_j.
${eachRow(t, (r) => `  if (ok${r}) {
${eachSlice(t, (c) => `    storeDq(P.dq_off + (statsHead + row${r}) * P.d, (${slot(t, c)}) * 4u, acc${r}_${c} * P.scale);`)}
  }`)}`}
}`;
}

// ---- dkv pass --------------------------------------------------------------------------------

/**
 * The dkv pass's WGSL. Rows are keys (x = k, y = v), columns queries (a = scale·q, b = dO)
 * of every q head of the kv head's group, with their stats (lse, Δ, segment id).
 */
export function dkvWgsl(t: GradTiles, uniformDecl: string): string {
  const { seg } = t;
  const bindings: [string, string, 'read' | 'read_write'][] = [
    ['q', 'f32', 'read'], ['k', 'f32', 'read'], ['v', 'f32', 'read'], ['go', 'f32', 'read'],
    ['stats', 'vec4u', 'read'], ['dk', 'f32', 'read_write'], ['dv', 'f32', 'read_write'],
  ];
  // The query ids come with the stats, so 8 storage bindings suffice.
  if (seg) bindings.push(['segk', 'i32', 'read']);

  return /* wgsl */ `
${uniformDecl}
${storageBindings(bindings)}
${tileHeader(t)}
var<workgroup> statS: array<vec4u, BC>;   // the query block's stats (lse, Δ, segment id) as bits

${load4Fn('loadQ', 'q')}
${load4Fn('loadK', 'k')}
${load4Fn('loadV', 'v')}
${load4Fn('loadGO', 'go')}
${rowStorer('storeDk', 'dk')}
${rowStorer('storeDv', 'dv')}

@compute @workgroup_size(${t.rt * t.tpr})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let flat = wid.y * nwg.x + wid.x;
  if (flat >= P.groups) { return; }
  let nrb = (P.sk + BR - 1u) / BR;
  let rb = flat % nrb;
  let bkh = flat / nrb;
  let kh = bkh % P.hkv;
  let b = bkh / P.hkv;
  let ri = lid / TPR;               // this thread owns keys row<r> = r0 + ri * R + r, r < R,
  let part = lid % TPR;             // and slice \`part\` of their head dim
  let r0 = rb * BR;

  // Per key r: x<r>_<c> = k and y<r>_<c> = v (this thread's slice), accumulators dk<r>_<c>, dv<r>_<c>.
${eachRow(t, (r) => `  let row${r} = r0 + ri * R + ${r}u;
  let ok${r} = row${r} < P.sk;
  let at${r} = min(row${r}, P.sk - 1u);
  let kRow${r} = P.k_off + b * P.k_sb + kh * P.k_sh + at${r} * P.k_ss;
  let vRow${r} = P.v_off + b * P.v_sb + kh * P.v_sh + at${r} * P.v_ss;${seg ? `
  let seg${r} = select(0, segk[P.segk_off + b * P.segk_sb + at${r} * P.segk_ss], ok${r});` : ''}`)}
${eachRowSlice(t, (r, c) => `  let x${r}_${c} = loadK(kRow${r}, P.k_sd, (${slot(t, c)}) * 4u, ok${r});
  let y${r}_${c} = loadV(vRow${r}, P.v_sd, (${slot(t, c)}) * 4u, ok${r});
  var dk${r}_${c} = vec4f(0.0);
  var dv${r}_${c} = vec4f(0.0);`)}

  // Causal: query i sees key j when j <= i + (Sk - Sq), so queries before r0 - (Sk - Sq) see
  // none of this block's keys.
  var cStart = 0u;
  if (P.causal != 0u) { cStart = u32(clamp(i32(r0) - P.shift, 0, i32(P.sq))); }
${seg ? `
  // The range of this workgroup's key ids (workgroup-uniform, as in the query-row passes).
  var kLo = I32_MAX;
  var kHi = I32_MIN;
  for (var i = r0; i < min(r0 + BR, P.sk); i++) {
    let id = segk[P.segk_off + b * P.segk_sb + i * P.segk_ss];
    kLo = min(kLo, id);
    kHi = max(kHi, id);
  }` : ''}
  // Every q head of this kv head's group adds to the same dK and dV.
  for (var g = 0u; g < P.group; g++) {
    let h = kh * P.group + g;
    let qHead = P.q_off + b * P.q_sb + h * P.q_sh;
    let goHead = P.go_off + b * P.go_sb + h * P.go_sh;
    let statsHead = (b * P.hq + h) * P.sq;
    for (var c0 = cStart; c0 < P.sq; c0 += BC) {
      let nc = min(BC, P.sq - c0);
${seg ? `      // Skip the block when its query ids cannot meet the keys' ids (disjoint ranges).
      var qLo = I32_MAX;
      var qHi = I32_MIN;
      for (var i = c0; i < c0 + nc; i++) {
        let id = bitcast<i32>(stats[statsHead + i].z);
        qLo = min(qLo, id);
        qHi = max(qHi, id);
      }
      if (qHi < kLo || qLo > kHi) { continue; }
` : ''}      // Stage scale · q, dO and the stats of the query block, zeros past Sq and past D.
      for (var i = lid; i < BC * DVP; i += WG) {
        let j = i / DVP;
        let d0 = (i % DVP) * 4u;
        let query = min(c0 + j, P.sq - 1u);
        aS[i] = loadQ(qHead + query * P.q_ss, P.q_sd, d0, j < nc) * P.scale;
        bS[i] = loadGO(goHead + query * P.go_ss, P.go_sd, d0, j < nc);
      }
      for (var j = lid; j < nc; j += WG) { statS[j] = stats[statsHead + c0 + j]; }
      workgroupBarrier();
${partialDots(t, '      ')}
      for (var j = 0u; j < nc; j++) {
        let query = i32(c0 + j);
        let st = statS[j];
${eachRow(t, (r) => `        let vis${r} = ok${r} && (P.causal == 0u || i32(row${r}) <= query + P.shift)${seg ? ` && bitcast<i32>(st.z) == seg${r}` : ''};`)}
        if (${anyVisible(t)}) {
${pairDots(t, '          ')}
          // P = exp(s - lse), dS = P (dP - Δ); dV += P dO, dK += dS (scale · q).
          let lse = bitcast<f32>(st.x);
          let delta = bitcast<f32>(st.y);
${eachRow(t, (r) => `          let p${r} = select(0.0, exp(sp${r}.x - lse), vis${r});
          let ds${r} = p${r} * (sp${r}.y - delta);`)}${t.tpr > 1 ? `\n${columnReads(t, '          ', 'ab')}` : ''}
${eachSlice(t, (c) => `         ${eachRow(t, (r) => ` dv${r}_${c} += p${r} * b${c}; dk${r}_${c} += ds${r} * a${c};`).split('\n').join('')}`)}
        }
      }
      workgroupBarrier();   // the next block overwrites the workgroup arrays
    }
  }

${eachRow(t, (r) => `  if (ok${r}) {
    let out${r} = ((b * P.hkv + kh) * P.sk + row${r}) * P.d;
${eachSlice(t, (c) => `    storeDk(P.dk_off + out${r}, (${slot(t, c)}) * 4u, dk${r}_${c});
    storeDv(P.dv_off + out${r}, (${slot(t, c)}) * 4u, dv${r}_${c});`)}
  }`)}
}`;
}

// ---- 2x2 windows ---------------------------------------------------------------------------

/**
 * WGSL of the window path's helper when segment ids are given: one thread per (batch,
 * window) writes a 16-bit mask, bit 4i + a set when query i and key a of the window have the
 * same id (tokens in the order top-left, top-right, bottom-left, bottom-right). The main
 * window kernel then needs one binding for the ids instead of two, and stays within 8.
 */
export function windowSegMaskWgsl(uniformDecl: string): string {
  return /* wgsl */ `
${uniformDecl}
${storageBindings([['segq', 'i32', 'read'], ['segk', 'i32', 'read'], ['mask', 'u32', 'read_write']])}

${windowTokensFn()}

@compute @workgroup_size(${WINDOW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let t = (wid.y * nwg.x + wid.x) * ${WINDOW_WG}u + lid;
  let perBatch = P.sq / 4u;
  if (t >= P.batch * perBatch) { return; }
  let b = t / perBatch;
  let tok = windowTokens(t % perBatch);
  let gq = vec4u(P.segq_off + b * P.segq_sb) + tok * P.segq_ss;
  let gk = vec4u(P.segk_off + b * P.segk_sb) + tok * P.segk_ss;
  let idq = vec4i(segq[gq.x], segq[gq.y], segq[gq.z], segq[gq.w]);
  let idk = vec4i(segk[gk.x], segk[gk.y], segk[gk.z], segk[gk.w]);
  var bits = 0u;
  for (var i = 0u; i < 4u; i++) {
    let same = select(vec4u(0u), vec4u(1u), idk == vec4i(idq[i]));
    bits |= (same.x | (same.y << 1u) | (same.z << 2u) | (same.w << 3u)) << (4u * i);
  }
  mask[t] = bits;
}`;
}

/** WGSL `windowTokens(wi)`: the 4 tokens of window wi of the h x w grid (row-major), as in the forward kernel. */
function windowTokensFn(): string {
  return /* wgsl */ `
fn windowTokens(wi: u32) -> vec4u {
  let halfW = P.w / 2u;
  let top = (wi / halfW) * 2u * P.w + (wi % halfW) * 2u;   // the window's top-left token
  return vec4u(top, top + 1u, top + P.w, top + P.w + 1u);
}`;
}

/**
 * The window kernel's WGSL: one thread per (batch, kv head, window). For each q head of the
 * group it rebuilds the 4x4 scores and dP from the window's q, k, v and dO rows, then writes
 * dQ and adds into dK and dV (the thread owns the window's key rows of its kv head, so it
 * writes them for the first head of the group and adds for the others).
 */
export function windowGradWgsl(seg: boolean, uniformDecl: string): string {
  const bindings: [string, string, 'read' | 'read_write'][] = [
    ['q', 'f32', 'read'], ['k', 'f32', 'read'], ['v', 'f32', 'read'], ['go', 'f32', 'read'],
    ['dq', 'f32', 'read_write'], ['dk', 'f32', 'read_write'], ['dv', 'f32', 'read_write'],
  ];
  if (seg) bindings.push(['mask', 'u32', 'read']);
  return /* wgsl */ `
${uniformDecl}
${storageBindings(bindings)}

const NEG = -3.0e38;

${windowTokensFn()}

/** Softmax over the visible entries of one query's 4 scores; zeros when none is visible. */
fn softmax4(s: vec4f, visible: vec4<bool>) -> vec4f {
  let m = max(max(select(NEG, s.x, visible.x), select(NEG, s.y, visible.y)),
              max(select(NEG, s.z, visible.z), select(NEG, s.w, visible.w)));
  let e = select(vec4f(0.0), exp(s - vec4f(m)), visible);
  let l = e.x + e.y + e.z + e.w;
  return select(vec4f(0.0), e / l, l > 0.0);
}

/** dS of one query over its 4 keys: P (dP - Δ), Δ = Σ_a P_a dP_a. */
fn softmaxGrad4(p: vec4f, dp: vec4f) -> vec4f {
  return p * (dp - vec4f(dot(p, dp)));
}

@compute @workgroup_size(${WINDOW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let t = (wid.y * nwg.x + wid.x) * ${WINDOW_WG}u + lid;
  if (t >= P.n) { return; }
  let perHead = P.sq / 4u;          // windows per (batch, head), row-major over the grid
  let wi = t % perHead;
  let bkh = t / perHead;
  let kh = bkh % P.hkv;
  let b = bkh / P.hkv;
  // The window's tokens are both its queries (index i) and its keys (index a).
  let tok = windowTokens(wi);

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
${seg ? `  let bits = mask[b * perHead + wi];
  let bit = vec4u(1u, 2u, 4u, 8u);
  vis0 = vis0 & ((vec4u(bits) & bit) != vec4u(0u));
  vis1 = vis1 & ((vec4u(bits >> 4u) & bit) != vec4u(0u));
  vis2 = vis2 & ((vec4u(bits >> 8u) & bit) != vec4u(0u));
  vis3 = vis3 & ((vec4u(bits >> 12u) & bit) != vec4u(0u));` : ''}

  let kRows = vec4u(P.k_off + b * P.k_sb + kh * P.k_sh) + tok * P.k_ss;
  let vRows = vec4u(P.v_off + b * P.v_sb + kh * P.v_sh) + tok * P.v_ss;
  let kvOut = vec4u((b * P.hkv + kh) * P.sk * P.d) + tok * P.d;
  let dkRows = vec4u(P.dk_off) + kvOut;
  let dvRows = vec4u(P.dv_off) + kvOut;

  for (var g = 0u; g < P.group; g++) {
    let h = kh * P.group + g;
    let qRows = vec4u(P.q_off + b * P.q_sb + h * P.q_sh) + tok * P.q_ss;
    let goRows = vec4u(P.go_off + b * P.go_sb + h * P.go_sh) + tok * P.go_ss;

    // s<i>[a] = q<i>·k<a> and dp<i>[a] = dO<i>·v<a>, accumulated over the head dim.
    var s0 = vec4f(0.0);
    var s1 = vec4f(0.0);
    var s2 = vec4f(0.0);
    var s3 = vec4f(0.0);
    var dp0 = vec4f(0.0);
    var dp1 = vec4f(0.0);
    var dp2 = vec4f(0.0);
    var dp3 = vec4f(0.0);
    for (var d = 0u; d < P.d; d++) {
      let qd = qRows + vec4u(d * P.q_sd);
      let kd = kRows + vec4u(d * P.k_sd);
      let vd = vRows + vec4u(d * P.v_sd);
      let od = goRows + vec4u(d * P.go_sd);
      let qv = vec4f(q[qd.x], q[qd.y], q[qd.z], q[qd.w]);
      let kv = vec4f(k[kd.x], k[kd.y], k[kd.z], k[kd.w]);
      let vv = vec4f(v[vd.x], v[vd.y], v[vd.z], v[vd.w]);
      let ov = vec4f(go[od.x], go[od.y], go[od.z], go[od.w]);
      s0 += qv.x * kv;
      s1 += qv.y * kv;
      s2 += qv.z * kv;
      s3 += qv.w * kv;
      dp0 += ov.x * vv;
      dp1 += ov.y * vv;
      dp2 += ov.z * vv;
      dp3 += ov.w * vv;
    }
    let p0 = softmax4(s0 * P.scale, vis0);
    let p1 = softmax4(s1 * P.scale, vis1);
    let p2 = softmax4(s2 * P.scale, vis2);
    let p3 = softmax4(s3 * P.scale, vis3);
    let ds0 = softmaxGrad4(p0, dp0);
    let ds1 = softmaxGrad4(p1, dp1);
    let ds2 = softmaxGrad4(p2, dp2);
    let ds3 = softmaxGrad4(p3, dp3);

    // dQ<i> = scale Σ_a dS<i>[a] k<a>;  dK<a> += scale Σ_i dS<i>[a] q<i>;  dV<a> += Σ_i P<i>[a] dO<i>.
    let dqRows = vec4u(P.dq_off + (b * P.hq + h) * P.sq * P.d) + tok * P.d;
    for (var d = 0u; d < P.d; d++) {
      let qd = qRows + vec4u(d * P.q_sd);
      let kd = kRows + vec4u(d * P.k_sd);
      let od = goRows + vec4u(d * P.go_sd);
      let qv = vec4f(q[qd.x], q[qd.y], q[qd.z], q[qd.w]);
      let kv = vec4f(k[kd.x], k[kd.y], k[kd.z], k[kd.w]);
      let ov = vec4f(go[od.x], go[od.y], go[od.z], go[od.w]);
      let gq = vec4f(dot(ds0, kv), dot(ds1, kv), dot(ds2, kv), dot(ds3, kv)) * P.scale;
      dq[dqRows.x + d] = gq.x;
      dq[dqRows.y + d] = gq.y;
      dq[dqRows.z + d] = gq.z;
      dq[dqRows.w + d] = gq.w;
      var gk = (ds0 * qv.x + ds1 * qv.y + ds2 * qv.z + ds3 * qv.w) * P.scale;
      var gv = p0 * ov.x + p1 * ov.y + p2 * ov.z + p3 * ov.w;
      let dkd = dkRows + vec4u(d);
      let dvd = dvRows + vec4u(d);
      if (g > 0u) {
        gk += vec4f(dk[dkd.x], dk[dkd.y], dk[dkd.z], dk[dkd.w]);
        gv += vec4f(dv[dvd.x], dv[dvd.y], dv[dvd.z], dv[dvd.w]);
      }
      dk[dkd.x] = gk.x;
      dk[dkd.y] = gk.y;
      dk[dkd.z] = gk.z;
      dk[dkd.w] = gk.w;
      dv[dvd.x] = gv.x;
      dv[dvd.y] = gv.y;
      dv[dvd.z] = gv.z;
      dv[dvd.w] = gv.w;
    }
  }
}`;
}

// ---- dispatch ----------------------------------------------------------------------------------

/**
 * Gradients of attention wrt q, k and v, given the output gradient gOut.
 * q, gOut: [B, Hq, Sq, D]; k, v: [B, Hkv, Sk, D] (any strides); gq: contiguous [B, Hq, Sq, D],
 * gk, gv: contiguous [B, Hkv, Sk, D].
 */
export function attentionGrad(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, gOut: Tensor, gq: Tensor, gk: Tensor, gv: Tensor): void {
  if (q.dtype !== 'float32' || k.dtype !== 'float32' || v.dtype !== 'float32' || gOut.dtype !== 'float32') {
    throw new Error(`attentionGrad: webgpu supports float32 only, got q ${q.dtype}, k ${k.dtype}, v ${v.dtype}, gOut ${gOut.dtype}`);
  }
  if (gq.size === 0 && gk.size === 0) return;
  const [B, Hq, Sq] = q.shape;
  const c = ctx();
  const segQ = p.segmentIdsQ;
  const segK = p.segmentIdsK;
  const sig = gradPlans.start(c);
  pushAttentionSignature(sig, q, k, v, p);
  pushList(sig, gOut.strides);
  const plan = gradPlans.find() ?? gradPlans.add(gradPlan(q, k, v, p, gOut, gq, gk, gv));
  const offsets = [q.offset, k.offset, v.offset, gOut.offset, gq.offset, gk.offset, gv.offset, segQ && segK ? segQ.offset : 0, segQ && segK ? segK.offset : 0];
  for (const stage of plan.stages) {
    for (let i = 0; i < plan.offsetWords.length; i++) stage.words[plan.offsetWords[i]] = offsets[i];
  }
  const io = [bufferOf(q), bufferOf(k), bufferOf(v), bufferOf(gOut)];
  const outs = [bufferOf(gq), bufferOf(gk), bufferOf(gv)];

  if (p.window) {
    let mask: Tensor | null = null;
    if (segQ && segK) {
      mask = Tensor.empty([(B * Sq) / 4], 'int32', 'webgpu');
      dispatchStage(plan.stages[0], [bufferOf(segQ), bufferOf(segK), bufferOf(mask)]);
    }
    dispatchStage(plan.stages[plan.stages.length - 1], [...io, ...outs, ...(mask ? [bufferOf(mask)] : [])]);
    mask?.dispose();
    return;
  }

  const segBuffers = segQ && segK ? [bufferOf(segQ), bufferOf(segK)] : [];
  // Per query: lse, Δ and its segment id as u32 bits, from the stats pass to the others.
  const stats = Tensor.empty([B * Hq * Sq * 4], 'int32', 'webgpu');
  const statsBuf = bufferOf(stats);
  try {
    const [statsPass, dqPass, dkvPass] = plan.stages;
    dispatchStage(statsPass, [...io, statsBuf, ...segBuffers]);
    dispatchStage(dqPass, [...io, statsBuf, outs[0], ...segBuffers]);
    // The query ids come with the stats, so 8 storage bindings suffice.
    dispatchStage(dkvPass, [...io, statsBuf, outs[1], outs[2], ...segBuffers.slice(1)]);
  } finally {
    stats.dispose();
  }
}

/** One dispatch of an attention-gradient plan. */
interface GradStage {
  label: string;
  key: string;
  code: () => string;
  words: Uint32Array;
  workgroups: readonly [number, number];
}

/**
 * The dispatches of one signature: the 2x2-window kernel (after its segment mask with segment
 * ids), or the stats, dq and dkv passes. Every stage's uniforms begin with the same fields, so
 * the operands' offsets sit at the same `offsetWords` (q, k, v, gOut, gq, gk, gv, segq, segk).
 */
interface GradPlan {
  stages: GradStage[];
  offsetWords: readonly number[];
}
const gradPlans = new PlanCache<GradPlan>();

function gradPlan(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, gOut: Tensor, gq: Tensor, gk: Tensor, gv: Tensor): GradPlan {
  const [B, Hq, Sq, D] = q.shape;
  const [, Hkv, Sk] = k.shape;
  const maxWg = ctx().limits.maxComputeWorkgroupsPerDimension;
  const seg = p.segmentIdsQ !== null && p.segmentIdsK !== null;
  const fields = ['q_off', 'k_off', 'v_off', 'go_off', 'dq_off', 'dk_off', 'dv_off', ...(seg ? ['segq_off', 'segk_off'] : [])];
  const stages: GradStage[] = [];
  let first: Uniforms | null = null;
  if (p.window) {
    const n = (B * Hkv * Sq) / 4; // (batch, kv head, window) triples
    const u = gradUniforms(q, k, v, p, gOut, gq, gk, gv).u32('batch', B).u32('w', p.window.w).u32('n', n);
    first = u;
    if (seg) {
      stages.push({
        label: 'attentionGrad (2x2 window segment mask)',
        key: 'attentionGrad window mask',
        code: () => windowSegMaskWgsl(u.declaration()),
        words: u.words32(),
        workgroups: grid((B * Sq) / 4, WINDOW_WG, maxWg),
      });
    }
    stages.push({
      label: 'attentionGrad (2x2 window)',
      key: `attentionGrad window|${seg}`,
      code: () => windowGradWgsl(seg, u.declaration()),
      words: u.words32(),
      workgroups: grid(n, WINDOW_WG, maxWg),
    });
  } else {
    const profile = tileProfile();
    for (const pass of ['stats', 'dq', 'dkv'] as const) {
      const rows = pass === 'dkv' ? Sk : Sq;
      const tiles = gradTiles(pass, D, rows, seg, profile);
      const groups = B * (pass === 'dkv' ? Hkv : Hq) * Math.ceil(rows / (tiles.rt * tiles.r));
      const u = gradUniforms(q, k, v, p, gOut, gq, gk, gv).u32('groups', groups);
      first ??= u;
      stages.push({
        label: `attentionGrad (${pass})`,
        key: `attentionGrad ${pass}|${seg}|${JSON.stringify(tiles)}`,
        code: () => (pass === 'dkv' ? dkvWgsl(tiles, u.declaration()) : queryRowsWgsl(pass, tiles, u.declaration())),
        words: u.words32(),
        workgroups: grid(groups, 1, maxWg),
      });
    }
  }
  return { stages, offsetWords: fields.map((f) => first!.wordOf(f)) };
}

/**
 * Queues one stage of a plan on `buffers`. A module function, not a closure made per call: tsx
 * (the tests and benchmarks) names every such closure with Object.defineProperty, about a microsecond each.
 */
function dispatchStage(stage: GradStage, buffers: GPUBuffer[]): void {
  ctx().dispatch({ label: stage.label, key: stage.key, code: stage.code, uniforms: stage.words, buffers, workgroups: stage.workgroups });
}
