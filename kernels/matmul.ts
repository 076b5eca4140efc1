/**
 * Batched matmul on WebGPU: out[..., M, N] = a[..., M, K] @ b[..., K, N], f32.
 *
 * Tiling (the classic two-level scheme):
 *   - each workgroup owns one BM x BN tile of the output for one batch entry;
 *   - the K dim is walked in slabs of BK: the workgroup copies the BM x BK panel of `a` and the
 *     BK x BN panel of `b` into workgroup memory, then every thread accumulates its own TM x TN
 *     block of outputs in registers (register blocking), reading each staged value once per
 *     TM or TN multiply-adds instead of once per output;
 *   - the staged panels are double-buffered: slab t + 1 is copied in while slab t is consumed,
 *     so one barrier per slab suffices.
 *
 * The operands are read in place through strides (rows, cols and up to 8 batch dims in the
 * uniforms), so transposed, sliced and broadcast views need no copy. Only the way a panel is
 * fetched is specialised: with vec4 loads when the contiguous dim of a view is a multiple of
 * 4, with scalar loads otherwise. Sizes never appear in the WGSL, so one pipeline serves all.
 */
import { availableParallelism } from 'node:os';
import type { LinearActivation } from '../tensor/backend.js';
import { isHalf, type HalfDType } from '../tensor/dtype.js';
import { HALF_DECODE_WGSL } from './half.js';
import type { Tensor } from '../tensor/tensor.js';
import { MATH_WGSL } from './elementwise.js';
import { coalesce, Uniforms } from './layout.js';
import { dtypeCode, PlanCache, pushList, type PlannedDispatch, type Signature } from './plans.js';
import { bindWindow, bufferOf, ctx, type BufferBinding } from './runtime.js';

/** Work split of one matmul pipeline. */
export interface MatmulConfig {
  /** Output tile per workgroup: rows (of M) and cols (of N). */
  bm: number;
  bn: number;
  /** Depth of the K slab staged in workgroup memory per step. */
  bk: number;
  /** Outputs per thread: rows and cols, multiples of 4 (cols are held as vec4s). */
  tm: number;
  tn: number;
}

/**
 * How a panel of one operand is fetched into workgroup memory. A panel element (x, k) is
 * x = a row of `a` (or a col of `b`) and k = the shared inner dim.
 *   'x4': contiguous along x, vec4 loads;   'k4': contiguous along k, vec4 loads;
 *   'scalar': any strides and offsets, scalar loads.
 */
export type PanelMode = 'x4' | 'k4' | 'scalar';

/**
 * What is done to each output value before it is stored (the fused linear layer):
 * z = acc + bias[col]; optionally z is stored to a second output (the pre-activation, which a
 * backward needs); then y = act(z) + residual[row, col].
 */
export interface MatmulEpilogue {
  bias: boolean;
  act: 'none' | 'gelu' | 'geluErf';
  residual: boolean;
  preact: boolean;
}

/** One compiled specialisation: tile config, how each operand is fetched, how out is stored. */
export interface MatmulVariant {
  config: MatmulConfig;
  a: PanelMode;
  b: PanelMode;
  /** 'v4': out rows are a multiple of 4 long, stored as vec4s; 's': scalar stores. */
  out: 'v4' | 's';
  /** Fused epilogue (none when absent). Only for single matrices (no batch dims). */
  epilogue?: MatmulEpilogue;
  /** b holds bfloat16 or float16 (weights), decoded to f32 as panels are staged. */
  bHalf?: HalfMode;
}

/** The extra operands of an epilogue: bias [N], residual [M, N] (row stride any, cols unit), preact [M, N] contiguous. */
export interface EpilogueOperands {
  bias?: Tensor | null;
  residual?: Tensor | null;
  preact?: Tensor | null;
}

/** A tile config and its relative speed on whole tiles (output elements per second). */
export interface TileChoice {
  config: MatmulConfig;
  speed: number;
}

/**
 * Configs for CPU rasterisers (Mesa llvmpipe), measured with bench/lab/matmul-variants.ts.
 * There each workgroup runs on one core as a loop over 8-lane SIMD chunks, and every load from
 * workgroup memory is a per-lane loop, so big per-thread blocks (few loads per multiply-add)
 * win. The flatter tiles serve few-row products (M = 1..32: a token at a time, a vector) and
 * the narrow one matrix @ vector, without computing dozens of padded rows or cols. Each config
 * is a pipeline family of its own (up to 18 fetch/store variants, ~0.7 s to compile each for
 * 16x16 blocks on llvmpipe, then cached on disk by Mesa), so the table stays short.
 */
export const CPU_TILES: readonly TileChoice[] = [
  { config: { bm: 128, bn: 128, bk: 16, tm: 16, tn: 16 }, speed: 1 },
  { config: { bm: 64, bn: 128, bk: 16, tm: 16, tn: 16 }, speed: 0.88 },
  { config: { bm: 16, bn: 128, bk: 16, tm: 16, tn: 16 }, speed: 0.6 },
  { config: { bm: 4, bn: 128, bk: 16, tm: 4, tn: 16 }, speed: 0.2 },
  { config: { bm: 128, bn: 4, bk: 16, tm: 16, tn: 4 }, speed: 0.06 },
  // narrow outputs (widths 32-64: the tiny models' projections) without a 128-wide tile's
  // 2-4x padding; speeds from interleaved runs at M 2048-4096, N 32-96 (load ~4, noisy):
  // N=32 ran 1.7x faster on the 32-wide tile, N=48 and 64 1.1x on the 64-wide one
  { config: { bm: 128, bn: 64, bk: 16, tm: 16, tn: 16 }, speed: 0.55 },
  { config: { bm: 128, bn: 32, bk: 16, tm: 16, tn: 8 }, speed: 0.43 },
];

/**
 * Configs for hardware GPUs: the usual SGEMM shapes (256 threads, 8x8 or 4x4 per thread).
 * Not measured here (no GPU on the development machine); the WGSL is the same as on the CPU.
 */
export const GPU_TILES: readonly TileChoice[] = [
  { config: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 }, speed: 1 },
  { config: { bm: 64, bn: 64, bk: 8, tm: 4, tn: 4 }, speed: 0.5 },
  // narrow outputs (N <= 48): guesses until bench/gpu measures them
  { config: { bm: 64, bn: 32, bk: 8, tm: 4, tn: 4 }, speed: 0.3 },
];

const cores = availableParallelism();

/** Workgroups that run at once: CPU cores for a CPU rasteriser, a guess for a GPU. */
function parallelism(cpu: boolean): number {
  return cpu ? cores : 256;
}

const cpuAdapter = new WeakMap<object, boolean>();

/** True when the adapter is a CPU rasteriser rather than a GPU (asked once per device). */
function isCpuAdapter(): boolean {
  const c = ctx();
  let cpu = cpuAdapter.get(c);
  if (cpu === undefined) {
    const { device, description, architecture } = c.info;
    cpu = /llvmpipe|lavapipe|softpipe|swiftshader/i.test(`${device} ${description} ${architecture}`);
    cpuAdapter.set(c, cpu);
  }
  return cpu;
}

/**
 * The tile config with the least modelled time for `batches` M x N outputs: rounds of
 * workgroups (tiles over the parallelism) times the padded tile area over its speed.
 */
export function chooseConfig(M: number, N: number, batches: number, cpu = isCpuAdapter()): MatmulConfig {
  return (cpu ? CPU_TILES : GPU_TILES)[configIndex(M, N, batches, cpu)].config;
}

/** The index in CPU_TILES or GPU_TILES of `chooseConfig`'s choice. */
function configIndex(M: number, N: number, batches: number, cpu: boolean): number {
  const tiles = cpu ? CPU_TILES : GPU_TILES;
  const p = parallelism(cpu);
  let best = 0;
  let bestTime = Infinity;
  for (let i = 0; i < tiles.length; i++) {
    const t = tiles[i];
    const { bm, bn } = t.config;
    const count = Math.ceil(M / bm) * Math.ceil(N / bn) * batches;
    const time = (Math.ceil(count / p) * bm * bn) / t.speed;
    if (time < bestTime) [best, bestTime] = [i, time];
  }
  return best;
}

/**
 * Checks that a config tiles evenly (thread blocks of vec4 columns, whole vec4 loads) and fits
 * 1024 threads and 32 KiB of workgroup memory (llvmpipe's limits; GPU_TILES stay within the
 * WebGPU default of 16 KiB).
 */
export function validateConfig(c: MatmulConfig): void {
  const ok =
    c.tm % 4 === 0 && c.tn % 4 === 0 && c.bm % c.tm === 0 && c.bn % c.tn === 0 && c.bk % 4 === 0 &&
    (c.bm / c.tm) * (c.bn / c.tn) <= 1024 && 2 * 4 * c.bk * (c.bm + c.bn) <= 32768;
  if (!ok) throw new Error(`matmul: invalid tile config ${JSON.stringify(c)}`);
}

const wgslCache = new Map<string, string>();

/** A short name of a variant (its config and modes). */
function variantKey(v: MatmulVariant): string {
  const c = v.config;
  const e = v.epilogue;
  const epi = e ? ',epilogue' : '';
  const half = v.bHalf ? `,${v.bHalf.dtype}${v.bHalf.native ? '-native' : ''}` : '';
  return `${c.bm},${c.bn},${c.bk},${c.tm},${c.tn},${v.a},${v.b},${v.out}${epi}${half}`;
}

/** The WGSL of one variant (generated once, then cached). Uniform names match `matmulUniforms`. */
export function matmulWGSL(v: MatmulVariant): string {
  const key = variantKey(v);
  let code = wgslCache.get(key);
  if (code === undefined) wgslCache.set(key, (code = generateWGSL(v)));
  return code;
}

function generateWGSL(v: MatmulVariant): string {
  const { bm, bn, bk, tm, tn } = v.config;
  validateConfig(v.config);
  const tx = bn / tn; // threads along N
  const ty = bm / tm; // threads along M
  const nt = tx * ty;
  const arr = (m: PanelMode) => (m === 'scalar' ? 'f32' : 'vec4f');

  // The inner product: a thread's rows come as TM/4 vec4s of As, its cols as TN/4 vec4s of Bs.
  // Thread (lid.x, lid.y) owns rows (lid.y + i*TY)*4 + 0..3 and cols (lid.x + j*TX)*4 + 0..3,
  // so neighbouring threads read neighbouring vec4s of workgroup memory.
  const accDecl: string[] = [];
  const fmas: string[] = [];
  const stores: string[] = [];
  const aLoads = range(tm / 4).map((i) => `let a${i} = As[a_buf + k * ${bm / 4}u + ${i * ty}u];`);
  const bLoads = range(tn / 4).map((j) => `let b${j} = Bs[b_buf + k * ${bn / 4}u + ${j * tx}u];`);
  for (let i = 0; i < tm / 4; i++) {
    for (let c = 0; c < 4; c++) {
      const row = `row0 + (lid.y + ${i * ty}u) * 4u + ${c}u`;
      stores.push(`{ let r = ${row};`);
      for (let j = 0; j < tn / 4; j++) {
        const acc = `acc${i * 4 + c}_${j}`;
        accDecl.push(`var ${acc} = vec4f();`);
        fmas.push(`${acc} = fma(vec4f(a${i}[${c}]), b${j}, ${acc});`);
        const col = `col0 + (lid.x + ${j * tx}u) * 4u`;
        stores.push(v.epilogue
          ? `  { let c = ${col}; store_out(o_base, r, c, epilogue(r, c, ${acc})); }`
          : `  store_out(o_base, r, ${col}, ${acc});`);
      }
      stores.push('}');
    }
  }

  const sizeA = (bk * bm) / 4; // vec4s per staged panel
  const sizeB = (bk * bn) / 4;
  return /* wgsl */ `${v.bHalf?.native ? 'enable f16;' : ''}
${UNIFORMS_WGSL}
@group(0) @binding(1) var<storage, read> a: array<${arr(v.a)}>;
@group(0) @binding(2) var<storage, read> b: array<${v.bHalf ? halfArray(v.b, v.bHalf) : arr(v.b)}>;
${v.bHalf && !v.bHalf.native ? HALF_DECODE_WGSL : ''}
@group(0) @binding(3) var<storage, read_write> o: array<${v.out === 'v4' ? 'vec4f' : 'f32'}>;
${v.epilogue ? epilogueWGSL(v.out) : ''}

// Staged panels, k-major and double-buffered: As[buf * ${sizeA} + k * BM/4 + m/4][m % 4] holds
// a[row0 + m, k0 + k]; Bs likewise holds b[k0 + k, col0 + n].
var<workgroup> As: array<vec4f, ${2 * sizeA}>;
var<workgroup> Bs: array<vec4f, ${2 * sizeB}>;

${panelStage('a', 'As', v.a, bm, bk, nt, 'P.M', 'P.a_sx', 'P.a_sk')}
${panelStage('b', 'Bs', v.b, bn, bk, nt, 'P.N', 'P.b_sx', 'P.b_sk', v.bHalf)}
${storeOutFn(v.out)}

@compute @workgroup_size(${tx}, ${ty})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  // Batch entry -> element offsets of its matrices (broadcast batch dims have stride 0).
  let batch = wid.z + P.batch0;
  var rem = batch;
  var a_base = P.a_off;
  var b_base = P.b_off;
  for (var d = P.nb; d > 0u; d--) {
    let s = P.bshape[(d - 1u) / 4u][(d - 1u) % 4u];
    let c = rem % s;
    rem = rem / s;
    a_base += c * P.a_bstr[(d - 1u) / 4u][(d - 1u) % 4u];
    b_base += c * P.b_bstr[(d - 1u) / 4u][(d - 1u) % 4u];
  }
  let o_base = P.o_off + batch * P.M * P.o_rs;
  let row0 = (wid.y + P.tile_y0) * ${bm}u;
  let col0 = (wid.x + P.tile_x0) * ${bn}u;

  ${accDecl.join('\n  ')}

  // Slab t is read from buffer t % 2 while slab t + 1 is staged into the other one, so one
  // barrier per slab suffices: it separates the reads of a buffer from its next overwrite.
  let slabs = (P.K + ${bk - 1}u) / ${bk}u;
  stage_a(li, row0, a_base, 0u, 0u);
  stage_b(li, col0, b_base, 0u, 0u);
  workgroupBarrier();
  for (var t = 0u; t < slabs; t++) {
    if (t + 1u < slabs) {
      let next = ((t + 1u) & 1u);
      stage_a(li, row0, a_base, (t + 1u) * ${bk}u, next * ${sizeA}u);
      stage_b(li, col0, b_base, (t + 1u) * ${bk}u, next * ${sizeB}u);
    }
    let a_buf = (t & 1u) * ${sizeA}u + lid.y;
    let b_buf = (t & 1u) * ${sizeB}u + lid.x;
    // Rank-1 updates of the thread's ${tm}x${tn} block, one per k of the slab.
    for (var k = 0u; k < ${bk}u; k++) {
      ${aLoads.join('\n      ')}
      ${bLoads.join('\n      ')}
      ${fmas.join('\n      ')}
    }
    workgroupBarrier();
  }

  ${stores.join('\n  ')}
}
`;
}

/**
 * The epilogue's bindings (4: bias, 5: residual, 6: preact) and `epilogue(r, c, v)`, which
 * returns the value to store at out[r, c..c+3]. Which parts apply is read from the uniforms
 * (P.epi: bit 0 bias, bit 1 residual, bit 2 preact, bits 3-4 the activation), so one pipeline
 * per tile config serves every combination; an absent operand is bound to one of the context's
 * scratch buffers (readScratch for bias and residual, scratch for preact) and never read.
 */
function epilogueWGSL(mode: 'v4' | 's'): string {
  return `@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> res: array<f32>;
@group(0) @binding(6) var<storage, read_write> pre: array<${mode === 'v4' ? 'vec4f' : 'f32'}>;
${MATH_WGSL}
fn epilogue(r: u32, c: u32, v: vec4f) -> vec4f {
  var z = v;
  if ((P.epi & 1u) != 0u) {
    for (var j = 0u; j < 4u; j++) { if (c + j < P.N) { z[j] += bias[P.bias_off + c + j]; } }
  }
  if ((P.epi & 4u) != 0u) {
    ${mode === 'v4'
    ? 'if (r < P.M && c < P.N) { pre[(P.pre_off + r * P.o_rs + c) / 4u] = z; }'
    : 'if (r < P.M) { for (var j = 0u; j < 4u; j++) { if (c + j < P.N) { pre[P.pre_off + r * P.o_rs + c + j] = z[j]; } } }'}
  }
  let act = (P.epi >> 3u) & 3u;
  if (act == 1u) { z = vec4f(gelu_tanh(z.x), gelu_tanh(z.y), gelu_tanh(z.z), gelu_tanh(z.w)); }
  if (act == 2u) { z = vec4f(gelu_erf(z.x), gelu_erf(z.y), gelu_erf(z.z), gelu_erf(z.w)); }
  if ((P.epi & 2u) != 0u && r < P.M) {
    for (var j = 0u; j < 4u; j++) { if (c + j < P.N) { z[j] += res[P.res_off + r * P.res_rs + c + j]; } }
  }
  return z;
}`;
}

/** `store_out(o_base, r, c, v)`: writes out[r, c..c+3] of one batch entry (those inside the matrix). */
function storeOutFn(mode: 'v4' | 's'): string {
  if (mode === 'v4') {
    return /* wgsl */ `fn store_out(o_base: u32, r: u32, c: u32, v: vec4f) {
  if (r < P.M && c < P.N) { o[(o_base + r * P.o_rs + c) / 4u] = v; }
}`;
  }
  return /* wgsl */ `fn store_out(o_base: u32, r: u32, c: u32, v: vec4f) {
  if (r >= P.M) { return; }
  let base = o_base + r * P.o_rs;
  for (var j = 0u; j < 4u; j++) {
    if (c + j < P.N) { o[base + c + j] = v[j]; }
  }
}`;
}

/**
 * WGSL `stage_<src>(li, x0, base, k0, dst)`: copies the BX x BK panel (x0.., k0..) of operand
 * `src` into workgroup array `dst` from index `dst` on (k-major, x contiguous, zeros outside the
 * matrix). Element (x, k) of the operand lives at base + x*sx + k*sk. Each step moves a 4x4
 * block: four vec4 (or 16 scalar) loads, four vec4 stores of 4 consecutive x at one k.
 * Loads past the matrix are discarded by `select` (WebGPU keeps the read itself in bounds), so
 * there is no branch; the loop's trip count depends on the thread, so Mesa does not unroll it,
 * which keeps compile time down.
 */
function panelStage(src: string, dst: string, mode: PanelMode, bx: number, bk: number, nt: number,
  X: string, sx: string, sk: string, half?: HalfMode): string {
  // a half operand reads through b_v4 (4 halves from 2 words, or one vec4<f16>) and b_s
  const v4 = (i: string) => (half ? `${src}_v4(${i})` : `${src}[${i}]`);
  const s1 = (i: string) => (half ? `${src}_s(${i})` : `${src}[${i}]`);
  const blocks = (bx / 4) * (bk / 4);
  // Block order: consecutive threads take blocks that are adjacent along the contiguous dim.
  const [xq, kq] = mode === 'k4'
    ? [`e / ${bk / 4}u`, `e % ${bk / 4}u`]
    : [`e % ${bx / 4}u`, `e / ${bx / 4}u`];
  let fetch: string;
  if (mode === 'x4') {
    // one vec4 along x per k
    fetch = range(4).map((j) => `let r${j} = select(vec4f(), ${v4(`(base + x + (k + ${j}u) * ${sk}) / 4u`)}, x < ${X} && k + ${j}u < P.K);`).join('\n    ');
  } else if (mode === 'k4') {
    // one vec4 along k per x, then a 4x4 transpose in registers
    fetch = range(4).map((i) => `let c${i} = select(vec4f(), ${v4(`(base + (x + ${i}u) * ${sx} + k) / 4u`)}, x + ${i}u < ${X} && k < P.K);`).join('\n    ');
    fetch += '\n    ' + range(4).map((j) => `let r${j} = vec4f(c0[${j}], c1[${j}], c2[${j}], c3[${j}]);`).join('\n    ');
  } else {
    const ld = (i: number, j: number) => `ld_${src}(base, x + ${i}u, k + ${j}u)`;
    fetch = range(4).map((j) => `let r${j} = vec4f(${range(4).map((i) => ld(i, j)).join(', ')});`).join('\n    ');
  }
  const scalarLoad = mode === 'scalar'
    ? `fn ld_${src}(base: u32, x: u32, k: u32) -> f32 {
  return select(0.0, ${s1(`base + x * ${sx} + k * ${sk}`)}, x < ${X} && k < P.K);
}
` : '';
  return `${half ? halfReaders(src, mode, half) : ''}${scalarLoad}fn stage_${src}(li: u32, x0: u32, base: u32, k0: u32, dst: u32) {
  for (var e = li; e < ${blocks}u; e += ${nt}u) {
    let xq = ${xq};
    let kq = ${kq};
    let x = x0 + xq * 4u;
    let k = k0 + kq * 4u;
    ${fetch}
    let at = dst + kq * ${bx}u + xq; // = (kq * 4 + j) * BX/4 + xq at j = 0
${range(4).map((j) => `    ${dst}[at + ${(j * bx) / 4}u] = r${j};`).join('\n')}
  }
}`;
}

/**
 * How a half operand is stored and read: its dtype, and `native` when the adapter's shader-f16
 * lets a float16 operand be declared array<vec4<f16>> (else two halves per u32, decoded).
 */
export interface HalfMode {
  dtype: HalfDType;
  native: boolean;
}

/** WGSL `<src>_v4(i)`: elements 4i..4i+3 as vec4f, and `<src>_s(e)`: element e. */
function halfReaders(src: string, mode: PanelMode, h: HalfMode): string {
  if (h.native) {
    return mode === 'scalar'
      ? `fn ${src}_s(e: u32) -> f32 { return f32(${src}[e]); }\n`
      : `fn ${src}_v4(i: u32) -> vec4f { return vec4f(${src}[i]); }\n`;
  }
  if (mode === 'scalar') return `fn ${src}_s(e: u32) -> f32 { return half_${h.dtype}(${src}[e / 2u], (e & 1u) == 1u); }\n`;
  return `fn ${src}_v4(i: u32) -> vec4f {
  let w = ${src}[i];
  return vec4f(half_${h.dtype}(w.x, false), half_${h.dtype}(w.x, true), half_${h.dtype}(w.y, false), half_${h.dtype}(w.y, true));
}
`;
}

/** The WGSL element type of a half operand's array. */
function halfArray(mode: PanelMode, h: HalfMode): string {
  if (h.native) return mode === 'scalar' ? 'f16' : 'vec4<f16>';
  return mode === 'scalar' ? 'u32' : 'vec2u';
}

/** What one dispatch is told: sizes, operand views, the first tile and batch entry it covers. */
interface MatmulParams {
  M: number;
  N: number;
  K: number;
  /** [offset, stride along x (M for a, N for b), stride along k] of each operand. */
  a: [number, number, number];
  b: [number, number, number];
  oOff: number;
  /** Row stride of out (default N; larger when a dispatch writes a block of columns). */
  oRow?: number;
  /** Coalesced batch dims and each operand's strides over them (0 where broadcast). */
  batch: { shape: number[]; a: number[]; b: number[] };
  /** First workgroup's tile along N, along M, and batch entry (for split dispatches). */
  tile: [number, number, number];
  /** Element offsets of the epilogue's operands and the residual's row stride. */
  epi?: { flags: number; bias: number; res: number; resRow: number; pre: number };
}

/** The uniform struct of every variant (the WGSL declaration does not depend on the values). */
function matmulUniforms(p: MatmulParams): Uniforms {
  return new Uniforms()
    .u32('M', p.M).u32('N', p.N).u32('K', p.K)
    .u32('a_off', p.a[0]).u32('a_sx', p.a[1]).u32('a_sk', p.a[2])
    .u32('b_off', p.b[0]).u32('b_sx', p.b[1]).u32('b_sk', p.b[2])
    .u32('o_off', p.oOff).u32('o_rs', p.oRow ?? p.N)
    .u32('nb', p.batch.shape.length)
    .u32('tile_x0', p.tile[0]).u32('tile_y0', p.tile[1]).u32('batch0', p.tile[2])
    .u32('epi', p.epi?.flags ?? 0).u32('bias_off', p.epi?.bias ?? 0).u32('res_off', p.epi?.res ?? 0).u32('res_rs', p.epi?.resRow ?? 0).u32('pre_off', p.epi?.pre ?? 0)
    .vec8('bshape', p.batch.shape).vec8('a_bstr', p.batch.a).vec8('b_bstr', p.batch.b);
}

const UNIFORMS_TEMPLATE = matmulUniforms({
  M: 0, N: 0, K: 0, a: [0, 0, 0], b: [0, 0, 0], oOff: 0, batch: { shape: [], a: [], b: [] }, tile: [0, 0, 0],
});
const UNIFORMS_WGSL = UNIFORMS_TEMPLATE.declaration();
/** Words of a_off, b_off, o_off, bias_off, res_off, pre_off (the struct is the same for every call). */
const OFFSET_WORDS: readonly number[] = ['a_off', 'b_off', 'o_off', 'bias_off', 'res_off', 'pre_off'].map((f) => UNIFORMS_TEMPLATE.wordOf(f));
/** Words of M, N, K and o_rs. */
const SIZE_WORDS: readonly number[] = ['M', 'N', 'K', 'o_rs'].map((f) => UNIFORMS_TEMPLATE.wordOf(f));

/** Panel mode for an operand whose element (x, k) sits at off + x*sx + k*sk (+ batch strides). */
function panelMode(X: number, K: number, sx: number, sk: number, off: number, bstr: readonly number[]): PanelMode {
  const aligned = off % 4 === 0 && bstr.every((s) => s % 4 === 0);
  if (sx === 1 && X % 4 === 0 && sk % 4 === 0 && aligned) return 'x4';
  if (sk === 1 && K % 4 === 0 && sx % 4 === 0 && aligned) return 'k4';
  return 'scalar';
}

/** The variant a call needs: the best tile config, vec4 fetches where the views allow them. */
export function chooseVariant(a: Tensor, b: Tensor, out: Tensor): MatmulVariant {
  return variantOf(geometry(a, b, out), b.dtype);
}

/** The variant for a call's geometry (b's dtype says whether b holds half weights). */
function variantOf(g: ReturnType<typeof geometry>, bDtype: Tensor['dtype']): MatmulVariant {
  const v: MatmulVariant = {
    config: chooseConfig(g.M, g.N, g.batches),
    a: panelMode(g.M, g.K, g.a[1], g.a[2], g.a[0], g.batch.a),
    b: panelMode(g.N, g.K, g.b[1], g.b[2], g.b[0], g.batch.b),
    out: g.N % 4 === 0 && g.oOff % 4 === 0 ? 'v4' : 's',
  };
  if (isHalf(bDtype)) v.bHalf = { dtype: bDtype, native: bDtype === 'float16' && ctx().hasFeature('shader-f16') };
  return v;
}

/** What `geometry` reads of an operand: a tensor, or the transposed layout of one (linear's weight). */
type View = Pick<Tensor, 'shape' | 'strides' | 'offset' | 'rank'>;

/** Sizes, strides (size-1 dims get stride 0) and coalesced batch dims of a call. */
function geometry(a: View, b: View, out: View): Omit<MatmulParams, 'tile'> & { batches: number } {
  const r = a.rank;
  const [M, K] = a.shape.slice(-2);
  const N = b.shape[b.rank - 1];
  const s = (t: View, d: number) => (t.shape[d] === 1 ? 0 : t.strides[d]);
  const batchShape = out.shape.slice(0, -2);
  const nb = batchShape.length;
  const { shape, strides } = coalesce(batchShape, [a.strides.slice(0, nb), b.strides.slice(0, nb), out.strides.slice(0, nb)]);
  // a single matrix (no batch dims, or all of size 1) coalesces to [1]: drop it
  const single = shape.length === 1 && shape[0] === 1;
  const batch = single ? { shape: [], a: [], b: [] } : { shape, a: strides[0], b: strides[1] };
  return {
    M, N, K,
    batches: batchShape.reduce((x, y) => x * y, 1),
    a: [a.offset, s(a, r - 2), s(a, r - 1)],
    b: [b.offset, s(b, r - 1), s(b, r - 2)],
    oOff: out.offset,
    batch,
  };
}

/**
 * Queues `variant` for out = a @ b (shapes as in `matmul`), splitting past the per-dim
 * workgroup limit. `code` replaces the generated WGSL (for experiments in bench/lab).
 */
export function matmulWith(variant: MatmulVariant, a: Tensor, b: Tensor, out: Tensor, code?: string, epi: EpilogueOperands = {}): void {
  if (out.size === 0) return;
  const c = ctx();
  const g = geometry(a, b, out);
  const { bm, bn } = variant.config;
  const tilesX = Math.ceil(g.N / bn);
  const tilesY = Math.ceil(g.M / bm);
  const max = c.limits.maxComputeWorkgroupsPerDimension;
  const limit = c.bindingLimit;
  if ([a, b, out, epi.bias, epi.residual, epi.preact].some((t) => t && c.bufferSize(bufferOf(t)) > limit)) {
    matmulSplit(variant, a, b, out, code, epi, g);
    return;
  }
  const buffers: BufferBinding[] = [bufferOf(a), bufferOf(b), bufferOf(out)];
  const e = variant.epilogue;
  let epiOffsets: MatmulParams['epi'];
  if (e) {
    if (g.batch.shape.length > 0) throw new Error('matmul: a fused epilogue needs a single matrix (no batch dims)');
    const need = (t: Tensor | null | undefined, what: string): Tensor => {
      if (!t) throw new Error(`matmul: the epilogue needs ${what}`);
      return t;
    };
    const bias = e.bias ? need(epi.bias, 'a bias') : null;
    const res = e.residual ? need(epi.residual, 'a residual') : null;
    const pre = e.preact ? need(epi.preact, 'a preact output') : null;
    buffers.push(bias ? bufferOf(bias) : c.readScratch, res ? bufferOf(res) : c.readScratch, pre ? bufferOf(pre) : c.scratch);
    const act = { none: 0, gelu: 1, geluErf: 2 }[e.act];
    const flags = (bias ? 1 : 0) | (res ? 2 : 0) | (pre ? 4 : 0) | (act << 3);
    epiOffsets = { flags, bias: bias?.offset ?? 0, res: res?.offset ?? 0, resRow: res ? res.strides[0] : 0, pre: pre?.offset ?? 0 };
  }
  const key = code === undefined ? `matmul|${variantKey(variant)}` : undefined;
  const wgsl = code ?? (() => matmulWGSL(variant));
  for (let z0 = 0; z0 < g.batches; z0 += max) {
    for (let y0 = 0; y0 < tilesY; y0 += max) {
      for (let x0 = 0; x0 < tilesX; x0 += max) {
        const u = matmulUniforms({ ...g, tile: [x0, y0, z0], epi: epiOffsets });
        c.dispatch({
          label: e ? 'linear' : 'matmul',
          key,
          code: wgsl,
          uniforms: u.bytes(),
          buffers,
          workgroups: [Math.min(max, tilesX - x0), Math.min(max, tilesY - y0), Math.min(max, g.batches - z0)],
        });
      }
    }
  }
}

/**
 * A matmul whose operands do not all fit one storage binding (a large weight such as
 * Qwen3-8B's embedding used as the LM head, or long rows of activations): the output is cut
 * into blocks of rows (when a row-major `a`, out, residual or preact is too large) and of
 * columns (when the weight is), each one dispatch binding only its windows of the operands.
 * b must then be a weight read transposed (the Linear layout: b = Wᵀ with W [N, K] dense) or
 * fit whole; a must be row-major.
 */
function matmulSplit(variant: MatmulVariant, a: Tensor, b: Tensor, out: Tensor, code: string | undefined, epi: EpilogueOperands, g: ReturnType<typeof geometry>): void {
  const c = ctx();
  const { M, N, K } = g;
  const limit = c.bindingLimit;
  const align = c.limits.minStorageBufferOffsetAlignment;
  const window = limit - align; // usable bytes of one windowed binding
  const fits = (t: Tensor | null | undefined) => !t || c.bufferSize(bufferOf(t)) <= limit;
  const name = (t: Tensor) => `${t.dtype} ${t.toString()}`;
  if (g.batch.shape.length > 0) throw new Error(`matmul: operands over the binding limit ${limit} bytes need a single matrix, got batch dims ${JSON.stringify(g.batch.shape)}`);
  const aRowMajor = g.a[2] === 1 && (g.a[1] === K || M === 1);
  if (!aRowMajor && !fits(a)) throw new Error(`matmul: a (${name(a)}) is over the binding limit ${limit} bytes and not row-major; make it contiguous`);
  const bRows = g.b[2] === 1 && (g.b[1] === K || N === 1); // b = Wᵀ, W's rows dense
  if (!fits(b) && !bRows) throw new Error(`matmul: b (${name(b)}) is over the binding limit ${limit} bytes; only a transposed dense weight (b = Wᵀ, W [N, K]) can be split`);
  const res = epi.residual ?? null;
  const pre = epi.preact ?? null;
  const bpeB = b.storage.bytes / Math.max(b.storage.numel, 1);
  const rowBytes = Math.max(fits(a) ? 0 : K * 4, fits(out) ? 0 : N * 4, fits(res) ? 0 : (res?.strides[0] ?? 0) * 4, fits(pre) ? 0 : N * 4);
  const { bm, bn } = variant.config;
  let mb = M;
  if (rowBytes > 0) {
    mb = Math.floor(window / rowBytes / bm) * bm || Math.floor(window / rowBytes);
    if (mb < 1) throw new Error(`matmul: one row of ${rowBytes} bytes is over the binding limit ${limit}`);
  }
  let nb = N;
  if (!fits(b)) {
    nb = Math.floor(window / (K * bpeB) / bn) * bn || Math.floor(window / (K * bpeB) / 4) * 4;
    if (nb < 1) throw new Error(`matmul: one row of the weight (${K * bpeB} bytes) is over the binding limit ${limit}`);
  }
  const max = c.limits.maxComputeWorkgroupsPerDimension;
  const wholeOrWindow = (t: Tensor, start: number, count: number) => (fits(t) ? { binding: bufferOf(t), elemOffset: t.offset + start } : bindWindow(t, start, count));
  for (let m0 = 0; m0 < M; m0 += mb) {
    const rows = Math.min(mb, M - m0);
    const aw = wholeOrWindow(a, m0 * g.a[1], (rows - 1) * g.a[1] + K);
    const ow = wholeOrWindow(out, m0 * N, rows * N);
    const rw = res ? wholeOrWindow(res, m0 * res.strides[0], (rows - 1) * res.strides[0] + N) : null;
    const pw = pre ? wholeOrWindow(pre, m0 * N, rows * N) : null;
    for (let n0 = 0; n0 < N; n0 += nb) {
      const cols = Math.min(nb, N - n0);
      const bw = fits(b) ? { binding: bufferOf(b), elemOffset: b.offset + n0 * g.b[1] } : bindWindow(b, n0 * K, (cols - 1) * K + K);
      const oOff = ow.elemOffset + n0;
      const v: MatmulVariant = {
        ...variant,
        a: panelMode(rows, K, g.a[1], g.a[2], aw.elemOffset, []),
        b: panelMode(cols, K, g.b[1], g.b[2], bw.elemOffset, []),
        out: N % 4 === 0 && oOff % 4 === 0 && cols % 4 === 0 ? 'v4' : 's',
      };
      const buffers: BufferBinding[] = [aw.binding, bw.binding, ow.binding];
      let epiOffsets: MatmulParams['epi'];
      if (v.epilogue) {
        const act = { none: 0, gelu: 1, geluErf: 2 }[v.epilogue.act];
        const bias = epi.bias ?? null;
        buffers.push(bias ? bufferOf(bias) : c.readScratch, rw ? rw.binding : c.readScratch, pw ? pw.binding : c.scratch);
        const flags = (bias ? 1 : 0) | (rw ? 2 : 0) | (pw ? 4 : 0) | (act << 3);
        epiOffsets = { flags, bias: (bias?.offset ?? 0) + n0, res: (rw?.elemOffset ?? 0) + n0, resRow: res ? res.strides[0] : 0, pre: (pw?.elemOffset ?? 0) + n0 };
      }
      const key = code === undefined ? `matmul|${variantKey(v)}` : undefined;
      const wgsl = code ?? (() => matmulWGSL(v));
      const tilesX = Math.ceil(cols / bn);
      const tilesY = Math.ceil(rows / bm);
      for (let y0 = 0; y0 < tilesY; y0 += max) {
        for (let x0 = 0; x0 < tilesX; x0 += max) {
          const u = matmulUniforms({
            M: rows, N: cols, K, a: [aw.elemOffset, g.a[1], g.a[2]], b: [bw.elemOffset, g.b[1], g.b[2]], oOff, oRow: N,
            batch: { shape: [], a: [], b: [] }, tile: [x0, y0, 0], epi: epiOffsets,
          });
          c.dispatch({
            label: v.epilogue ? 'linear (split)' : 'matmul (split)',
            key, code: wgsl, uniforms: u.bytes(), buffers,
            workgroups: [Math.min(max, tilesX - x0), Math.min(max, tilesY - y0), 1],
          });
        }
      }
    }
  }
}

/**
 * out = a @ b on WebGPU. a: [...batch, M, K], b: [...batch, K, N] (batch dims equal, possibly
 * stride-0 broadcast views), out: contiguous [...batch, M, N]. f32 only.
 */
export function matmul(a: Tensor, b: Tensor, out: Tensor): void {
  checkDtype(a, b);
  checkDtype(b, b);
  checkDtype(out, b);
  if (out.size === 0) return;
  const c = ctx();
  const limit = c.bindingLimit;
  if (overLimit(c, limit, a) || overLimit(c, limit, b) || overLimit(c, limit, out)) {
    matmulWith(chooseVariant(a, b, out), a, b, out);
    return;
  }
  const matrices = singleMatrix(a, b, out);
  const sig = matmulPlans.start(c);
  sig.push(0, dtypeCode(b.dtype));
  if (matrices) pushMatrices(sig, a, b, out, a.shape[a.rank - 2], a.shape[a.rank - 1], b.shape[b.rank - 1]);
  else {
    pushView(sig, a);
    pushView(sig, b);
    pushView(sig, out);
  }
  let plan = matmulPlans.find();
  if (plan === undefined) {
    const g = geometry(a, b, out);
    plan = matmulPlans.add(matmulPlan(variantOf(g, b.dtype), g, {}, matrices));
  }
  const workgroups = plan && planWorkgroups(plan, a.shape[a.rank - 2], a.shape[a.rank - 1], b.shape[b.rank - 1]);
  if (!plan || !workgroups) {
    matmulWith(chooseVariant(a, b, out), a, b, out);
    return;
  }
  const w = plan.words;
  const at = plan.offsetWords;
  w[at[0]] = a.offset;
  w[at[1]] = b.offset;
  w[at[2]] = out.offset;
  c.dispatch({ label: 'matmul', key: plan.key, code: plan.code, uniforms: w, buffers: [bufferOf(a), bufferOf(b), bufferOf(out)], workgroups });
}

/**
 * The signature of a single-matrix call (a [M, K], b [K, N], out [M, N], or linear's x, weight
 * and out) without the sizes, which change with the token count from step to step: instead,
 * what they decide (the tile config, vec4 access by their residues mod 4, size-1 dims' zero
 * strides). Such a plan writes M, N and K per call.
 */
function pushMatrices(sig: Signature, a: View, b: View, out: View, M: number, K: number, N: number): void {
  sig.push(-2, configIndex(M, N, 1, isCpuAdapter()), M & 3, K & 3, N & 3, M === 1 ? 1 : 0, K === 1 ? 1 : 0, N === 1 ? 1 : 0);
  const ra = a.rank;
  const rb = b.rank;
  const ro = out.rank;
  sig.push(a.strides[ra - 2], a.strides[ra - 1], a.offset & 3, b.strides[rb - 2], b.strides[rb - 1], b.offset & 3, out.strides[ro - 2], out.strides[ro - 1], out.offset & 3);
}

/** A product of one matrix pair: operands of one rank whose batch dims (if any) are all 1. */
function singleMatrix(a: View, b: View, out: View): boolean {
  const r = out.rank;
  if (a.rank !== r || b.rank !== r || r < 2) return false;
  for (let d = 0; d < r - 2; d++) if (out.shape[d] !== 1 || a.shape[d] !== 1 || b.shape[d] !== 1) return false;
  return true;
}

/** The workgroups of a call under `plan` (writing its sizes when the plan is size-free), or null past the per-dim limit. */
function planWorkgroups(plan: MatmulPlan, M: number, K: number, N: number): readonly [number, number, number] | null {
  if (!plan.sizeFree) return plan.workgroups;
  const tilesX = Math.ceil(N / plan.bn);
  const tilesY = Math.ceil(M / plan.bm);
  const max = ctx().limits.maxComputeWorkgroupsPerDimension;
  if (tilesX > max || tilesY > max) return null;
  const w = plan.words;
  w[SIZE_WORDS[0]] = M;
  w[SIZE_WORDS[1]] = N;
  w[SIZE_WORDS[2]] = K;
  w[SIZE_WORDS[3]] = N; // o_rs
  return [tilesX, tilesY, 1];
}

/** float32 operands, or a half `b` (weights). */
function checkDtype(t: Tensor, b: Tensor): void {
  if (t.dtype !== 'float32' && !(t === b && isHalf(t.dtype))) throw new Error(`matmul: webgpu supports float32 (and half weights as b) only, got ${t.dtype} ${t.toString()}`);
}

/** True when `t`'s buffer is larger than one storage binding may be (the call must split). */
function overLimit(c: ReturnType<typeof ctx>, limit: number, t: Tensor | null | undefined): boolean {
  return !!t && c.bufferSize(bufferOf(t)) > limit;
}

/**
 * What a single-dispatch matmul or linear of one signature needs, computed once: the variant's
 * pipeline key and code, the uniforms (operand offsets written per call) and the workgroups.
 */
interface MatmulPlan extends PlannedDispatch {
  label: 'matmul' | 'linear';
  /** Words of a_off, b_off, o_off, bias_off, res_off, pre_off. */
  offsetWords: readonly number[];
  workgroups: readonly [number, number, number];
  /** The signature left out M, N and K (`pushMatrices`): they and the workgroups are set per call. */
  sizeFree: boolean;
  bm: number;
  bn: number;
}

/** null: the signature needs more than one dispatch per dim limit (matmulWith handles it). */
const matmulPlans = new PlanCache<MatmulPlan | null>();

/** A view's shape, strides and offset modulo 4 (which decides vec4 access). */
function pushView(sig: Signature, t: Tensor): void {
  pushList(sig, t.shape);
  pushList(sig, t.strides);
  sig.push(t.offset & 3);
}

/** The plan of `variant` for a call's geometry (offsets are written per call), or null past the workgroup limit. */
function matmulPlan(variant: MatmulVariant, g: ReturnType<typeof geometry>, epi: EpilogueOperands, sizeFree: boolean): MatmulPlan | null {
  const { bm, bn } = variant.config;
  const tilesX = Math.ceil(g.N / bn);
  const tilesY = Math.ceil(g.M / bm);
  const max = ctx().limits.maxComputeWorkgroupsPerDimension;
  if (tilesX > max || tilesY > max || g.batches > max) return null;
  const e = variant.epilogue;
  let epiOffsets: MatmulParams['epi'];
  if (e) {
    if (g.batch.shape.length > 0) throw new Error('matmul: a fused epilogue needs a single matrix (no batch dims)');
    const act = { none: 0, gelu: 1, geluErf: 2 }[e.act];
    const flags = (epi.bias ? 1 : 0) | (epi.residual ? 2 : 0) | (epi.preact ? 4 : 0) | (act << 3);
    epiOffsets = { flags, bias: 0, res: 0, resRow: epi.residual ? epi.residual.strides[0] : 0, pre: 0 };
  }
  return {
    label: e ? 'linear' : 'matmul',
    key: `matmul|${variantKey(variant)}`,
    code: () => matmulWGSL(variant),
    words: matmulUniforms({ ...g, tile: [0, 0, 0], epi: epiOffsets }).words32(),
    offsetWords: OFFSET_WORDS,
    workgroups: [tilesX, tilesY, g.batches],
    sizeFree, bm, bn,
  };
}

/**
 * The fused linear layer (Backend.linear): out = act(x @ wᵀ + bias) + residual, and preact =
 * x @ wᵀ + bias when asked. x: [M, K], weight: [N, K], bias [N], residual [M, N] with unit
 * column stride, out and preact contiguous [M, N]. Declines (returns false) when fusion is off.
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor | null, act: LinearActivation, out: Tensor, preact: Tensor | null): boolean {
  const c = ctx();
  if (!c.tuning.fused) return false;
  if (x.dtype !== 'float32' || out.dtype !== 'float32' || (bias && bias.dtype !== 'float32') || (residual && residual.dtype !== 'float32') || (preact && preact.dtype !== 'float32')) return false;
  if (weight.dtype !== 'float32' && !isHalf(weight.dtype)) return false;
  if (residual && residual.rank === 2 && residual.strides[1] !== 1 && residual.shape[1] > 1) return false;
  if (out.size === 0) return true;
  const limit = c.bindingLimit;
  const fits = weight.rank === 2 && !(overLimit(c, limit, x) || overLimit(c, limit, weight) || overLimit(c, limit, out) || overLimit(c, limit, bias) || overLimit(c, limit, residual) || overLimit(c, limit, preact));
  if (fits) {
    const sig = matmulPlans.start(c);
    sig.push(1 + (bias ? 2 : 0) + (residual ? 4 : 0) + (preact ? 8 : 0) + 16 * ACTS.indexOf(act), dtypeCode(weight.dtype));
    if (x.rank === 2 && out.rank === 2) pushMatrices(sig, x, weight, out, x.shape[0], x.shape[1], weight.shape[0]);
    else {
      pushView(sig, x);
      pushView(sig, weight);
      pushView(sig, out);
    }
    sig.push(residual ? residual.strides[0] : -1);
    let plan = matmulPlans.find();
    if (plan === undefined) {
      // b = weightᵀ as a layout only (no view tensor is made)
      const wt: View = { shape: [weight.shape[1], weight.shape[0]], strides: [weight.strides[1], weight.strides[0]], offset: weight.offset, rank: 2 };
      const g = geometry(x, wt, out);
      const v = variantOf(g, weight.dtype);
      v.epilogue = { bias: bias !== null, residual: residual !== null, preact: preact !== null, act };
      plan = matmulPlans.add(matmulPlan(v, g, { bias, residual, preact }, x.rank === 2 && out.rank === 2));
    }
    const workgroups = plan && planWorkgroups(plan, x.shape[x.rank - 2], x.shape[x.rank - 1], weight.shape[0]);
    if (plan && workgroups) {
      const w = plan.words;
      const at = plan.offsetWords;
      w[at[0]] = x.offset;
      w[at[1]] = weight.offset;
      w[at[2]] = out.offset;
      w[at[3]] = bias ? bias.offset : 0;
      w[at[4]] = residual ? residual.offset : 0;
      w[at[5]] = preact ? preact.offset : 0;
      const a = bufferOf(x);
      const buffers = [a, bufferOf(weight), bufferOf(out), bias ? bufferOf(bias) : c.readScratch, residual ? bufferOf(residual) : c.readScratch, preact ? bufferOf(preact) : c.scratch];
      c.dispatch({ label: plan.label, key: plan.key, code: plan.code, uniforms: w, buffers, workgroups });
      return true;
    }
  }
  const wt = weight.transpose();
  try {
    const v = chooseVariant(x, wt, out);
    v.epilogue = { bias: bias !== null, residual: residual !== null, preact: preact !== null, act };
    matmulWith(v, x, wt, out, undefined, { bias, residual, preact });
  } finally {
    wt.dispose();
  }
  return true;
}

const ACTS: readonly LinearActivation[] = ['none', 'gelu', 'geluErf'];

function range(n: number): number[] {
  return [...Array(n).keys()];
}
