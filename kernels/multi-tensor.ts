/**
 * Multi-tensor kernels: one dispatch walks several tensors, each bound on its own (WGSL cannot
 * index across bindings, so a `switch` on the slot picks the binding). A workgroup covers
 * CHUNK consecutive elements of one slot; the uniforms hold each slot's element count, its
 * first workgroup and its element offsets. Slots per dispatch are bounded by the adapter's
 * storage bindings (16 on llvmpipe, 8 by WebGPU's default), at most MAX_SLOTS, and by the
 * runtime's solo bindings (`soloSlots`): the buffers that change from step to step (gradients)
 * are bound first, each in a bind group made once per buffer, and the ones that stay (parameters,
 * optimizer state, the partials) after them, in a group that is then the same every step. With
 * gradients in the shared group instead, every step met new combinations and made new bind
 * groups (~25 per step of the main job, ~40 µs each on Dawn's GL backend).
 *
 * A tensor larger than one binding (`gpuContext().bindingLimit`) is cut into windows of
 * `windowElements()` elements, each a slot of its own bound to a byte range of the buffer:
 * nothing here is limited by maxStorageBufferBindingSize.
 *
 *   - adamwMany: the AdamW step of many parameters (p, g, m, v per slot);
 *   - sumOfSquares: partial sums of x² per workgroup, then one workgroup adds the partials;
 *   - scaleMany: out_i = x_i * s (the gradient clipping's rescale).
 */
import type { AdamWItem } from '../tensor/backend.js';
import { Tensor } from '../tensor/tensor.js';
import { isDense } from './layout.js';
import { adamw } from './optim.js';
import { bindWindow, bufferOf, ctx, windowElements, type BufferBinding } from './runtime.js';

const WG = 256;
/** Elements per workgroup (4 per thread). */
const CHUNK = WG * 4;
const MAX_SLOTS = 8;

/** A piece of work for one slot: `count` elements of each of its tensors, from `start`. */
interface Piece<T> {
  item: T;
  tensors: Tensor[];
  start: number;
  count: number;
}

/** Cuts every item into windows that fit one binding each. */
function piecesOf<T>(items: readonly T[], tensorsOf: (it: T) => Tensor[]): Piece<T>[] {
  const c = ctx();
  const w = windowElements();
  const limit = c.bindingLimit;
  const out: Piece<T>[] = [];
  for (const item of items) {
    const tensors = tensorsOf(item);
    const n = tensors[0].size;
    // a tensor whose whole buffer fits one binding is bound whole (one slot, one bind group)
    let whole = true;
    for (const t of tensors) if (c.bufferSize(bufferOf(t)) > limit) whole = false;
    const step = whole ? n : w;
    for (let start = 0; start < n; start += step) out.push({ item, tensors, start, count: Math.min(step, n - start) });
  }
  return out;
}

/** Slots per dispatch when each slot binds `perSlot` buffers and `shared` more are bound once. */
function slotsPerDispatch(perSlot: number, shared: number): number {
  const limit = ctx().limits.maxStorageBuffersPerShaderStage;
  return Math.max(1, Math.min(MAX_SLOTS, Math.floor((limit - shared) / perSlot)));
}

/**
 * Slots per dispatch when each slot has one buffer that changes from step to step (bound
 * first, one solo bind group each): at most the runtime's solo bindings.
 */
function soloSlots(perSlot: number, shared: number): number {
  return Math.max(1, Math.min(ctx().soloBindings, slotsPerDispatch(perSlot, shared)));
}

/**
 * Uniforms: per slot a vec4u (count, first workgroup, -, -) and a vec4u of element offsets
 * (one per tensor of the slot), then a vec4f of per-slot floats, then 4 shared floats and 4
 * more u32s. One buffer serves every dispatch (the runtime copies the uniforms as it queues
 * one): `startUniforms` zeroes it, the setters fill it.
 */
const U_WORDS = new Uint32Array(MAX_SLOTS * 12 + 8);
const U_FLOATS = new Float32Array(U_WORDS.buffer);

function startUniforms(): void {
  U_WORDS.fill(0);
}
function setSlot(i: number, count: number, wg0: number): void {
  U_WORDS[i * 4] = count;
  U_WORDS[i * 4 + 1] = wg0;
}
function setSlotOffset(i: number, j: number, offset: number): void {
  U_WORDS[MAX_SLOTS * 4 + i * 4 + j] = offset;
}
function setSlotFloat(i: number, j: number, x: number): void {
  U_FLOATS[MAX_SLOTS * 8 + i * 4 + j] = x;
}
function setShared(j: number, x: number): void {
  U_FLOATS[MAX_SLOTS * 12 + j] = x;
}
function setExtra(j: number, x: number): void {
  U_WORDS[MAX_SLOTS * 12 + 4 + j] = x;
}

/** Per slot count, the pipeline key and WGSL of a kernel family (made once each). */
function perSlotCount(family: string, wgsl: (slots: number) => string): { key: string; code: () => string }[] {
  const out: { key: string; code: () => string }[] = [];
  for (let n = 0; n <= MAX_SLOTS; n++) out.push({ key: `${family}|${n}`, code: () => wgsl(n) });
  return out;
}

const UNIFORMS_WGSL = /* wgsl */ `
struct Params {
  slot: array<vec4u, ${MAX_SLOTS}>,   // count, first workgroup
  offs: array<vec4u, ${MAX_SLOTS}>,   // element offsets of the slot's tensors
  hyper: array<vec4f, ${MAX_SLOTS}>,  // per-slot floats
  glob: vec4f,
  extra: vec4u,
}
@group(0) @binding(0) var<uniform> P: Params;
`;

/** WGSL that finds this workgroup's slot `s` and its chunk's first element `base` within the slot. */
function slotLookup(slots: number): string {
  return `
  let w = wid.y * nwg.x + wid.x;
  var s = 0u;
  for (var i = 1u; i < ${slots}u; i++) { if (w >= P.slot[i].y && P.slot[i].x > 0u) { s = i; } }
  let base = (w - P.slot[s].y) * ${CHUNK}u;
  let count = P.slot[s].x;`;
}

const MAIN_ARGS = '@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u';

/**
 * Groups pieces into dispatches of at most `per` slots and queues each: `queue` gets the
 * group's first piece and its end, and the uniforms already hold every slot's count and first
 * workgroup.
 */
function run<T>(pieces: Piece<T>[], per: number, queue: (from: number, to: number, workgroups: number) => void): void {
  for (let i = 0; i < pieces.length; i += per) {
    const to = Math.min(i + per, pieces.length);
    startUniforms();
    let total = 0;
    for (let k = i; k < to; k++) {
      setSlot(k - i, pieces[k].count, total);
      total += Math.ceil(pieces[k].count / CHUNK);
    }
    if (total > 0) queue(i, to, total);
  }
}

/** 2-d grid for `total` workgroups. */
function gridOf(total: number): [number, number] {
  const max = ctx().limits.maxComputeWorkgroupsPerDimension;
  if (total <= max) return [total, 1];
  const y = Math.ceil(total / max);
  return [Math.ceil(total / y), y];
}

/**
 * The bindings of pieces [from, to), slot by slot, each slot's first `perSlot` tensors in order
 * (windows where a tensor is cut), their element offsets written into the uniforms.
 */
function bindPieces<T>(pieces: readonly Piece<T>[], from: number, to: number, perSlot: number): BufferBinding[] {
  const buffers: BufferBinding[] = [];
  for (let k = from; k < to; k++) {
    const p = pieces[k];
    for (let j = 0; j < perSlot; j++) {
      const w = bindWindow(p.tensors[j], p.start, p.count);
      buffers.push(w.binding);
      setSlotOffset(k - from, j, w.elemOffset);
    }
  }
  return buffers;
}

/** Queues one multi-tensor dispatch of `kernel` over `total` workgroups with the shared uniforms. */
function queue(label: string, kernel: { key: string; code: () => string }, buffers: BufferBinding[], total: number): void {
  ctx().dispatch({ label, key: kernel.key, code: kernel.code, uniforms: U_WORDS, buffers, workgroups: gridOf(total) });
}

// ---- AdamW ---------------------------------------------------------------------------------

function adamwWgsl(slots: number): string {
  const decls: string[] = [];
  const cases: string[] = [];
  // the gradients first (they change every step), then each slot's parameter and moments
  for (let s = 0; s < slots; s++) decls.push(`@group(0) @binding(${1 + s}) var<storage, read> g${s}: array<f32>;`);
  for (let s = 0; s < slots; s++) {
    const b = 1 + slots + 3 * s;
    decls.push(`@group(0) @binding(${b}) var<storage, read_write> p${s}: array<f32>;
@group(0) @binding(${b + 1}) var<storage, read_write> m${s}: array<f32>;
@group(0) @binding(${b + 2}) var<storage, read_write> v${s}: array<f32>;`);
    cases.push(`    case ${s}u: {
      let gi = g${s}[o.y + i];
      let mi = b1 * m${s}[o.z + i] + (1.0 - b1) * gi;
      let vi = b2 * v${s}[o.w + i] + (1.0 - b2) * gi * gi;
      m${s}[o.z + i] = mi;
      v${s}[o.w + i] = vi;
      p${s}[o.x + i] = p${s}[o.x + i] * h.y - h.x * (mi / h.z) / (sqrt(vi / h.w) + eps);
    }`);
  }
  return /* wgsl */ `${UNIFORMS_WGSL}
${decls.join('\n')}

// per slot: hyper = (lr, 1 - lr * weight decay, 1 - beta1^t, 1 - beta2^t); glob = (beta1, beta2, eps)
@compute @workgroup_size(${WG})
fn main(${MAIN_ARGS}) {
${slotLookup(slots)}
  let o = P.offs[s];
  let h = P.hyper[s];
  let b1 = P.glob.x;
  let b2 = P.glob.y;
  let eps = P.glob.z;
  for (var k = 0u; k < 4u; k++) {
    let i = base + k * ${WG}u + lid.x;
    if (i >= count) { break; }
    switch s {
${cases.join('\n')}
      default: {}
    }
  }
}`;
}

const ADAMW = perSlotCount('adamwMany', adamwWgsl);
const adamwTensors = (it: AdamWItem): Tensor[] => [it.param, it.grad, it.m, it.v];

/**
 * AdamW for many parameters: float32, param/m/v contiguous, grad dense (at any offset). Items
 * that share beta1, beta2 and eps run together; others (or a grad that is a strided view)
 * fall back to the one-parameter kernel.
 */
export function adamwMany(items: readonly AdamWItem[]): boolean {
  const c = ctx();
  if (!c.tuning.fused) return false;
  // groups in the order of their first item (usually one: every item shares the betas and eps)
  const groups: AdamWItem[][] = [];
  for (const it of items) {
    if (it.param.size === 0) continue;
    if (it.param.dtype !== 'float32' || !isDense(it.grad)) {
      adamw(it.param, it.grad, it.m, it.v, it.h);
      continue;
    }
    let g: AdamWItem[] | undefined;
    for (const list of groups) {
      const h = list[0].h;
      if (sameNumber(h.beta1, it.h.beta1) && sameNumber(h.beta2, it.h.beta2) && sameNumber(h.eps, it.h.eps)) g = list;
    }
    if (g) g.push(it);
    else groups.push([it]);
  }
  const per = soloSlots(4, 0);
  for (const list of groups) {
    const { beta1, beta2, eps } = list[0].h;
    const pieces = piecesOf(list, adamwTensors);
    run(pieces, per, (from, to, total) => {
      const n = to - from;
      const buffers: BufferBinding[] = new Array(4 * n);
      for (let k = from; k < to; k++) {
        const p = pieces[k];
        const i = k - from;
        // offsets in the order (param, grad, m, v); bindings: grads, then (param, m, v) per slot
        for (let j = 0; j < 4; j++) {
          const w = bindWindow(p.tensors[j], p.start, p.count);
          buffers[j === 1 ? i : n + 3 * i + (j === 0 ? 0 : j - 1)] = w.binding;
          setSlotOffset(i, j, w.elemOffset);
        }
        const h = p.item.h;
        setSlotFloat(i, 0, h.lr);
        setSlotFloat(i, 1, 1 - h.lr * h.weightDecay);
        setSlotFloat(i, 2, 1 - h.beta1 ** h.step);
        setSlotFloat(i, 3, 1 - h.beta2 ** h.step);
      }
      setShared(0, beta1);
      setShared(1, beta2);
      setShared(2, eps);
      queue('adamwMany', ADAMW[to - from], buffers, total);
    });
  }
  return true;
}

/** Equal as the group key `${a}` once was: the same number (NaN with NaN, 0 with -0). */
function sameNumber(a: number, b: number): boolean {
  return a === b || (a !== a && b !== b);
}

// ---- sum of squares ------------------------------------------------------------------------

function sumSquaresWgsl(slots: number): string {
  const decls: string[] = [];
  const cases: string[] = [];
  for (let s = 0; s < slots; s++) {
    decls.push(`@group(0) @binding(${s + 1}) var<storage, read> x${s}: array<f32>;`);
    cases.push(`      case ${s}u: { let v = x${s}[o + i]; acc += v * v; }`);
  }
  return /* wgsl */ `${UNIFORMS_WGSL}
${decls.join('\n')}
@group(0) @binding(${slots + 1}) var<storage, read_write> partials: array<f32>;
var<workgroup> sh: array<f32, ${WG}>;

// extra.x: where this dispatch's partials begin
@compute @workgroup_size(${WG})
fn main(${MAIN_ARGS}) {
${slotLookup(slots)}
  let o = P.offs[s].x;
  var acc = 0.0;
  for (var k = 0u; k < 4u; k++) {
    let i = base + k * ${WG}u + lid.x;
    if (i >= count) { break; }
    switch s {
${cases.join('\n')}
      default: {}
    }
  }
  sh[lid.x] = acc;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride = stride / 2u) {
    if (lid.x < stride) { sh[lid.x] += sh[lid.x + stride]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { partials[P.extra.x + w] = sh[0]; }
}`;
}

const FINAL_SUM_WGSL = /* wgsl */ `
struct Params { n: u32, o_off: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
var<workgroup> sh: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u) {
  var acc = 0.0;
  for (var i = lid.x; i < P.n; i += ${WG}u) { acc += partials[i]; }
  sh[lid.x] = acc;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride = stride / 2u) {
    if (lid.x < stride) { sh[lid.x] += sh[lid.x + stride]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { o[P.o_off] = sh[0]; }
}`;

const SUM_SQUARES = perSlotCount('sumOfSquares', sumSquaresWgsl);
const oneTensor = (x: Tensor): Tensor[] => [x];

/** out (0-d, float32) = Σ x² over every element of every x (dense float32 tensors). */
export function sumOfSquares(xs: readonly Tensor[], out: Tensor): boolean {
  const c = ctx();
  if (!c.tuning.fused) return false;
  for (const x of xs) if (x.dtype !== 'float32' || !isDense(x)) return false;
  const pieces = piecesOf(xs.filter((x) => x.size > 0), oneTensor);
  const per = soloSlots(1, 1);
  let totalGroups = 0;
  for (const p of pieces) totalGroups += Math.ceil(p.count / CHUNK);
  const partials = Tensor.empty([Math.max(totalGroups, 1)], 'float32', 'webgpu');
  try {
    let at = 0;
    run(pieces, per, (from, to, total) => {
      const buffers = bindPieces(pieces, from, to, 1);
      buffers.push(bufferOf(partials));
      setExtra(0, at);
      queue('sumOfSquares', SUM_SQUARES[to - from], buffers, total);
      at += total;
    });
    const u = new Uint32Array([totalGroups, out.offset, 0, 0]);
    c.dispatch({
      label: 'sumOfSquares (final)',
      key: 'sumOfSquares final',
      code: FINAL_SUM_WGSL,
      uniforms: u.buffer,
      buffers: [bufferOf(partials), bufferOf(out)],
      workgroups: [1],
    });
  } finally {
    partials.dispose();
  }
  return true;
}

// ---- scaling many tensors ------------------------------------------------------------------

/**
 * out_i = x_i * scale. Out of place: the scale at binding 1, then each slot's x and out (offsets
 * .x, .y). In place (x_i *= scale): each slot's tensor first (one solo bind group each, see
 * soloSlots), then the scale (offset .x).
 */
function scaleWgsl(slots: number, inPlace: boolean): string {
  const decls: string[] = [];
  const cases: string[] = [];
  for (let s = 0; s < slots; s++) {
    if (inPlace) {
      decls.push(`@group(0) @binding(${s + 1}) var<storage, read_write> x${s}: array<f32>;`);
      cases.push(`      case ${s}u: { x${s}[o.x + i] = x${s}[o.x + i] * k; }`);
    } else {
      decls.push(`@group(0) @binding(${2 * s + 2}) var<storage, read> x${s}: array<f32>;
@group(0) @binding(${2 * s + 3}) var<storage, read_write> o${s}: array<f32>;`);
      cases.push(`      case ${s}u: { o${s}[o.y + i] = x${s}[o.x + i] * k; }`);
    }
  }
  const scale = `@group(0) @binding(${inPlace ? slots + 1 : 1}) var<storage, read> scale: array<f32>;`;
  return /* wgsl */ `${UNIFORMS_WGSL}
${scale}
${decls.join('\n')}
// extra.x: the scale's element offset
@compute @workgroup_size(${WG})
fn main(${MAIN_ARGS}) {
${slotLookup(slots)}
  let o = P.offs[s];
  let k = scale[P.extra.x];
  for (var j = 0u; j < 4u; j++) {
    let i = base + j * ${WG}u + lid.x;
    if (i >= count) { break; }
    switch s {
${cases.join('\n')}
      default: {}
    }
  }
}`;
}

const SCALE = perSlotCount('scaleMany', (n) => scaleWgsl(n, false));
const SCALE_IN_PLACE = perSlotCount('scaleMany in place', (n) => scaleWgsl(n, true));

/**
 * outs[i] = xs[i] * scale (dense float32 tensors; scale a float32 0-d tensor). outs may be xs
 * (in place: the gradient clipping's case, which keeps each gradient in its buffer).
 */
export function scaleMany(xs: readonly Tensor[], scale: Tensor, outs: readonly Tensor[]): boolean {
  const c = ctx();
  if (!c.tuning.fused || scale.dtype !== 'float32') return false;
  for (const x of xs) if (x.dtype !== 'float32' || !isDense(x)) return false;
  if (xs.every((x, i) => outs[i] === x)) return scaleInPlace(xs, scale);
  const pairs: Tensor[][] = [];
  for (let i = 0; i < xs.length; i++) if (xs[i].size > 0) pairs.push([xs[i], outs[i]]);
  const pieces = piecesOf(pairs, (p) => p);
  const per = slotsPerDispatch(2, 1);
  const scaleBuf = bufferOf(scale);
  run(pieces, per, (from, to, total) => {
    setExtra(0, scale.offset);
    queue('scaleMany', SCALE[to - from], [scaleBuf, ...bindPieces(pieces, from, to, 2)], total);
  });
  return true;
}

/** xs[i] *= scale, the tensors bound first (see soloSlots). */
function scaleInPlace(xs: readonly Tensor[], scale: Tensor): boolean {
  // two writable bindings of one buffer (views of one storage), or the scale in one of the
  // tensors, are refused by WebGPU: the caller composes those
  const scaleBuf = bufferOf(scale);
  const seen = new Set<GPUBuffer>([scaleBuf]);
  for (const x of xs) {
    const b = bufferOf(x);
    if (seen.has(b)) return false;
    seen.add(b);
  }
  const pieces = piecesOf(xs.filter((x) => x.size > 0), oneTensor);
  run(pieces, soloSlots(1, 1), (from, to, total) => {
    const buffers = bindPieces(pieces, from, to, 1);
    buffers.push(scaleBuf);
    setExtra(0, scale.offset);
    queue('scaleMany', SCALE_IN_PLACE[to - from], buffers, total);
  });
  return true;
}
