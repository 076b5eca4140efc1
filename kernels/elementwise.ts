/**
 * Elementwise kernels: unary maps, binary ops, where, copy/cast and fill over strided views.
 * One generated kernel per (op, dtypes, coalesced rank); shapes and strides go in uniforms.
 */
import type { BinaryOp, UnaryOp } from '../tensor/backend.js';
import { isHalf } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { copyHalf } from './half.js';
import { coalesce, coalesceInto, flatIndex, grid, offsetCode, stridedUniforms, Uniforms, wgslType, writeVec8 } from './layout.js';
import { dtypeCode, PlanCache, type PlannedDispatch } from './plans.js';
import { bufferOf, ctx } from './runtime.js';

const WG = 256;

/** Numerically safe tanh (llvmpipe's overflows to NaN for large |x|) and erf (A&S 7.1.26, |err| < 1.5e-7). */
export const MATH_WGSL = /* wgsl */ `
fn tanh_safe(x: f32) -> f32 {
  let t = exp(-2.0 * abs(x));
  return sign(x) * (1.0 - t) / (1.0 + t);
}
fn erf_approx(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
  return sign(x) * y;
}
fn sigmoid_f(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}
fn gelu_tanh(x: f32) -> f32 {
  return 0.5 * x * (1.0 + tanh_safe(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
fn gelu_erf(x: f32) -> f32 {
  return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}
fn gelu_tanh_grad(x: f32) -> f32 {
  let k = 0.7978845608028654;
  let t = tanh_safe(k * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 0.134145 * x * x);
}
fn gelu_erf_grad(x: f32) -> f32 {
  return 0.5 * (1.0 + erf_approx(x * 0.7071067811865476)) + x * exp(-0.5 * x * x) * 0.3989422804014327;
}
fn pow_signed(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  let p = pow(abs(a), b);
  if (a >= 0.0) { return p; }
  let nan_bits = 0x7fc00000u; // a let, so WGSL does not fold the NaN at compile time
  if (fract(b) != 0.0) { return bitcast<f32>(nan_bits); }
  return select(p, -p, fract(b * 0.5) != 0.0);
}
`;

const UNARY_WGSL: Record<UnaryOp, (x: string, t: string) => string> = {
  neg: (x) => `-${x}`,
  abs: (x) => `abs(${x})`,
  exp: (x) => `exp(${x})`,
  log: (x) => `log(${x})`,
  sqrt: (x) => `sqrt(${x})`,
  rsqrt: (x) => `inverseSqrt(${x})`,
  tanh: (x) => `tanh_safe(${x})`,
  sigmoid: (x) => `sigmoid_f(${x})`,
  relu: (x, t) => `max(${x}, ${t}(0))`,
  gelu: (x) => `gelu_tanh(${x})`,
  geluErf: (x) => `gelu_erf(${x})`,
  silu: (x) => `${x} * sigmoid_f(${x})`,
};

/** d/dx of each unary op in terms of x (WGSL), for the fused backward gx = gy * f'(x). */
const UNARY_GRAD_WGSL: Record<UnaryOp, (x: string) => string> = {
  neg: () => `-1.0`,
  abs: (x) => `sign(${x})`,
  exp: (x) => `exp(${x})`,
  log: (x) => `1.0 / ${x}`,
  sqrt: (x) => `0.5 * inverseSqrt(${x})`,
  rsqrt: (x) => `-0.5 * inverseSqrt(${x}) / ${x}`,
  tanh: (x) => `(1.0 - tanh_safe(${x}) * tanh_safe(${x}))`,
  sigmoid: (x) => `(sigmoid_f(${x}) * (1.0 - sigmoid_f(${x})))`,
  relu: (x) => `select(0.0, 1.0, ${x} > 0.0)`,
  gelu: (x) => `gelu_tanh_grad(${x})`,
  geluErf: (x) => `gelu_erf_grad(${x})`,
  silu: (x) => `(sigmoid_f(${x}) * (1.0 + ${x} * (1.0 - sigmoid_f(${x}))))`,
};

const BINARY_WGSL: Record<BinaryOp, (a: string, b: string, t: string) => string> = {
  add: (a, b) => `${a} + ${b}`,
  sub: (a, b) => `${a} - ${b}`,
  mul: (a, b) => `${a} * ${b}`,
  div: (a, b) => `${a} / ${b}`,
  pow: (a, b) => `pow_signed(${a}, ${b})`,
  maximum: (a, b) => `max(${a}, ${b})`,
  minimum: (a, b) => `min(${a}, ${b})`,
  eq: (a, b, t) => `select(${t}(0), ${t}(1), ${a} == ${b})`,
  ne: (a, b, t) => `select(${t}(0), ${t}(1), ${a} != ${b})`,
  lt: (a, b, t) => `select(${t}(0), ${t}(1), ${a} < ${b})`,
  le: (a, b, t) => `select(${t}(0), ${t}(1), ${a} <= ${b})`,
  gt: (a, b, t) => `select(${t}(0), ${t}(1), ${a} > ${b})`,
  ge: (a, b, t) => `select(${t}(0), ${t}(1), ${a} >= ${b})`,
};

/**
 * One elementwise expression: its label (which names the expression in pipeline keys), the
 * WGSL names of its inputs, and the expression over their values (`t` is the first input's
 * WGSL type). Its plans are memoized per call signature.
 */
export interface MapKind {
  label: string;
  names: readonly string[];
  expr: (v: Record<string, string>, t: 'f32' | 'i32') => string;
  plans: PlanCache<MapPlan>;
}

/**
 * What a map dispatch needs beyond its shape and strides, computed once per (dtypes, coalesced
 * rank): the pipeline key, the code, and where each value goes in the uniforms, which a call
 * writes whole (n, the coalesced shape, each operand's strides and offset).
 */
interface MapPlan extends PlannedDispatch {
  nWord: number;
  /** First word of the `shape` vec8, and per operand (the inputs, then out) of its `_str` vec8 and its `_off`. */
  shapeWord: number;
  strideWords: number[];
  offsetWords: number[];
}

export function mapKind(label: string, names: readonly string[], expr: MapKind['expr']): MapKind {
  return { label, names, expr, plans: new PlanCache() };
}

/** Scratch for coalescing a call's operands (at most 3 inputs and out). */
const cShape: number[] = [];
const cStrides: number[][] = [[], [], [], []];

/**
 * Generic strided map: out[i] = kind.expr(inputs at i). `out` may itself be a strided view.
 * The dims are coalesced per call (without allocating); the rest of the plan (pipeline key,
 * code, uniform layout) is computed once per (dtypes, coalesced rank) and the call writes its
 * sizes, strides and offsets into it.
 */
export function mapKernel(kind: MapKind, inputs: readonly Tensor[], out: Tensor): void {
  const n = out.size;
  if (n === 0) return;
  const c = ctx();
  const count = inputs.length + 1;
  if (count > cStrides.length) throw new Error(`${kind.label}: at most ${cStrides.length - 1} inputs, got ${inputs.length}`);
  const rank = coalesceInto(out.shape, inputs, out, cShape, cStrides);
  const sig = kind.plans.start(c);
  sig.push(dtypeCode(out.dtype), rank);
  for (let k = 0; k < inputs.length; k++) sig.push(dtypeCode(inputs[k].dtype));
  const plan = kind.plans.find() ?? kind.plans.add(mapPlan(kind, inputs, out));
  const words = plan.words;
  words[plan.nWord] = n;
  writeVec8(words, plan.shapeWord, cShape);
  const buffers: GPUBuffer[] = [];
  for (let k = 0; k < count; k++) {
    const t = k < inputs.length ? inputs[k] : out;
    writeVec8(words, plan.strideWords[k], cStrides[k]);
    words[plan.offsetWords[k]] = t.offset;
    buffers.push(bufferOf(t));
  }
  c.dispatch({ label: kind.label, key: plan.key, code: plan.code, uniforms: words, buffers, workgroups: grid(n, WG, c.limits.maxComputeWorkgroupsPerDimension) });
}

function mapPlan(kind: MapKind, inputs: readonly Tensor[], out: Tensor): MapPlan {
  const n = out.size;
  const all = [...inputs, out];
  const { shape, strides } = coalesce(out.shape, all.map((t) => t.strides));
  const names = [...kind.names, 'o'];
  if (kind.names.length !== inputs.length) throw new Error(`${kind.label}: ${kind.names.length} inputs expected, got ${inputs.length}`);
  const u = new Uniforms().u32('n', n);
  stridedUniforms(u, shape, names.map((name, k) => [name, strides[k], all[k].offset]));
  // label names the expression: one pipeline per (label, dtypes, coalesced rank)
  let key = `map|${kind.label}|${shape.length}|${out.dtype}`;
  inputs.forEach((t, k) => (key += `|${kind.names[k]}:${t.dtype}`));
  const dtypes = inputs.map((t) => t.dtype);
  const code = () => {
    const vals: Record<string, string> = {};
    for (const name of kind.names) vals[name] = `${name}[off_${name}]`;
    const decls = kind.names
      .map((name, k) => `@group(0) @binding(${k + 1}) var<storage, read> ${name}: array<${wgslType(dtypes[k])}>;`)
      .join('\n');
    return /* wgsl */ `
${u.declaration()}
${decls}
@group(0) @binding(${inputs.length + 1}) var<storage, read_write> o: array<${wgslType(out.dtype)}>;
${MATH_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let flat = ${flatIndex(WG)};
  if (flat >= P.n) { return; }
${offsetCode(shape.length, names)}
  o[off_o] = ${wgslType(out.dtype)}(${kind.expr(vals, wgslType(dtypes[0]))});
}`;
  };
  return {
    key,
    code,
    words: u.words32(),
    nWord: u.wordOf('n'),
    shapeWord: u.wordOf('shape'),
    strideWords: names.map((name) => u.wordOf(`${name}_str`)),
    offsetWords: names.map((name) => u.wordOf(`${name}_off`)),
  };
}

/** One kind per op, made on first use. */
function kindsOf<Op extends string>(make: (op: Op) => MapKind): (op: Op) => MapKind {
  const kinds = new Map<Op, MapKind>();
  return (op) => {
    let k = kinds.get(op);
    if (!k) kinds.set(op, (k = make(op)));
    return k;
  };
}

const unaryKind = kindsOf((op: UnaryOp) => mapKind(op, ['x'], (v, t) => UNARY_WGSL[op](v.x, t)));
const unaryGradKind = kindsOf((op: UnaryOp) => mapKind(`${op}Grad`, ['x', 'g'], (v) => `${v.g} * ${UNARY_GRAD_WGSL[op](v.x)}`));
const binaryKind = kindsOf((op: BinaryOp) => mapKind(op, ['a', 'b'], (v, t) => BINARY_WGSL[op](v.a, v.b, t)));
const WHERE = mapKind('where', ['c', 'a', 'b'], (v, t) => `select(${v.b}, ${v.a}, ${v.c} != ${t}(0))`);
const COPY = mapKind('copy', ['x'], (v) => v.x);

export function unary(op: UnaryOp, x: Tensor, out: Tensor): void {
  mapKernel(unaryKind(op), [x], out);
}

/** out = gy * f'(x): the fused backward of a unary op. */
export function unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor, out: Tensor): void {
  mapKernel(unaryGradKind(op), [x, gy], out);
}

export function binary(op: BinaryOp, a: Tensor, b: Tensor, out: Tensor): void {
  mapKernel(binaryKind(op), [a, b], out);
}

export function where(cond: Tensor, a: Tensor, b: Tensor, out: Tensor): void {
  mapKernel(WHERE, [cond, a, b], out);
}

/** out (any view) = x, converting dtype (f32 -> i32 truncates toward zero). */
export function copy(x: Tensor, out: Tensor): void {
  if (isHalf(x.dtype) || isHalf(out.dtype)) {
    if (isHalf(out.dtype) || out.isContiguous) return copyHalf(x, out);
    const dense = Tensor.empty(x.shape, 'float32', 'webgpu'); // half -> f32 into a strided view
    copyHalf(x, dense);
    copy(dense, out);
    dense.dispose();
    return;
  }
  if (bufferOf(x) === bufferOf(out)) {
    // A buffer cannot be read and written in one dispatch: go through a temporary.
    const dense = Tensor.empty(x.shape, x.dtype, 'webgpu');
    mapKernel(COPY, [x], dense);
    mapKernel(COPY, [dense], out);
    dense.dispose();
    return;
  }
  mapKernel(COPY, [x], out);
}

/** fill's plans: per (dtype, coalesced rank); a call writes n, shape, strides, the value and the offset. */
interface FillPlan extends PlannedDispatch {
  /** The value's word seen as f32 and as i32 (views of `words`' buffer, `int` says which). */
  int: boolean;
  f32: Float32Array;
  i32: Int32Array;
  valueWord: number;
  offsetWord: number;
  nWord: number;
  shapeWord: number;
  strideWord: number;
}
const fillPlans = new PlanCache<FillPlan>();
const NO_INPUTS: readonly Tensor[] = [];

export function fill(out: Tensor, value: number): void {
  const n = out.size;
  if (n === 0) return;
  const c = ctx();
  const rank = coalesceInto(out.shape, NO_INPUTS, out, cShape, cStrides);
  const sig = fillPlans.start(c);
  sig.push(dtypeCode(out.dtype), rank);
  const plan = fillPlans.find() ?? fillPlans.add(fillPlan(out));
  const words = plan.words;
  if (plan.int) plan.i32[plan.valueWord] = value;
  else plan.f32[plan.valueWord] = value;
  words[plan.nWord] = n;
  writeVec8(words, plan.shapeWord, cShape);
  writeVec8(words, plan.strideWord, cStrides[0]);
  words[plan.offsetWord] = out.offset;
  c.dispatch({ label: 'fill', key: plan.key, code: plan.code, uniforms: words, buffers: [bufferOf(out)], workgroups: grid(n, WG, c.limits.maxComputeWorkgroupsPerDimension) });
}

function fillPlan(out: Tensor): FillPlan {
  const t = wgslType(out.dtype);
  const n = out.size;
  const { shape, strides } = coalesce(out.shape, [out.strides]);
  const u = new Uniforms().u32('n', n);
  if (t === 'i32') u.i32('value', 0);
  else u.f32('value', 0);
  stridedUniforms(u, shape, [['o', strides[0], out.offset]]);
  const code = () => /* wgsl */ `
${u.declaration()}
@group(0) @binding(1) var<storage, read_write> o: array<${t}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let flat = ${flatIndex(WG)};
  if (flat >= P.n) { return; }
${offsetCode(shape.length, ['o'])}
  o[off_o] = P.value;
}`;
  const words = u.words32();
  return {
    key: `fill|${t}|${shape.length}`, code, words, int: t === 'i32',
    f32: new Float32Array(words.buffer), i32: new Int32Array(words.buffer),
    valueWord: u.wordOf('value'), offsetWord: u.wordOf('o_off'), nWord: u.wordOf('n'), shapeWord: u.wordOf('shape'), strideWord: u.wordOf('o_str'),
  };
}
