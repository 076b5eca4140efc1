/**
 * Elementwise kernels: unary maps, binary ops, where, copy/cast and fill over strided views.
 * One generated kernel per (op, dtypes, coalesced rank); shapes and strides go in uniforms.
 */
import type { BinaryOp, UnaryOp } from '../tensor/backend.js';
import { isHalf } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { copyHalf } from './half.js';
import { coalesce, flatIndex, grid, offsetCode, stridedUniforms, Uniforms, wgslType } from './layout.js';
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

interface Input {
  name: string;
  t: Tensor;
}

/**
 * Generic strided map: out[i] = expr(inputs at i). `out` may itself be a strided view.
 * `expr` receives each input's WGSL value expression by name.
 */
export function mapKernel(label: string, inputs: Input[], out: Tensor, expr: (v: Record<string, string>) => string): void {
  const n = out.size;
  if (n === 0) return;
  const c = ctx();
  const all = [...inputs.map((i) => i.t), out];
  const { shape, strides } = coalesce(out.shape, all.map((t) => t.strides));
  const names = [...inputs.map((i) => i.name), 'o'];
  const u = new Uniforms().u32('n', n);
  stridedUniforms(u, shape, names.map((name, k) => [name, strides[k], all[k].offset]));
  // label names the expression: one pipeline per (label, dtypes, coalesced rank)
  let key = `map|${label}|${shape.length}|${out.dtype}`;
  for (const i of inputs) key += `|${i.name}:${i.t.dtype}`;
  const code = () => {
    const vals: Record<string, string> = {};
    for (const i of inputs) vals[i.name] = `${i.name}[off_${i.name}]`;
    const decls = inputs
      .map((inp, k) => `@group(0) @binding(${k + 1}) var<storage, read> ${inp.name}: array<${wgslType(inp.t.dtype)}>;`)
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
  o[off_o] = ${wgslType(out.dtype)}(${expr(vals)});
}`;
  };
  c.dispatch({
    label,
    key,
    code,
    uniforms: u.bytes(),
    buffers: all.map(bufferOf),
    workgroups: grid(n, WG, c.limits.maxComputeWorkgroupsPerDimension),
  });
}

export function unary(op: UnaryOp, x: Tensor, out: Tensor): void {
  mapKernel(op, [{ name: 'x', t: x }], out, (v) => UNARY_WGSL[op](v.x, wgslType(x.dtype)));
}

/** out = gy * f'(x): the fused backward of a unary op. */
export function unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor, out: Tensor): void {
  mapKernel(`${op}Grad`, [{ name: 'x', t: x }, { name: 'g', t: gy }], out, (v) => `${v.g} * ${UNARY_GRAD_WGSL[op](v.x)}`);
}

export function binary(op: BinaryOp, a: Tensor, b: Tensor, out: Tensor): void {
  mapKernel(op, [{ name: 'a', t: a }, { name: 'b', t: b }], out, (v) => BINARY_WGSL[op](v.a, v.b, wgslType(a.dtype)));
}

export function where(cond: Tensor, a: Tensor, b: Tensor, out: Tensor): void {
  const zero = `${wgslType(cond.dtype)}(0)`;
  mapKernel('where', [{ name: 'c', t: cond }, { name: 'a', t: a }, { name: 'b', t: b }], out, (v) => `select(${v.b}, ${v.a}, ${v.c} != ${zero})`);
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
    mapKernel('copy', [{ name: 'x', t: x }], dense, (v) => v.x);
    mapKernel('copy', [{ name: 'x', t: dense }], out, (v) => v.x);
    dense.dispose();
    return;
  }
  mapKernel('copy', [{ name: 'x', t: x }], out, (v) => v.x);
}

export function fill(out: Tensor, value: number): void {
  const t = wgslType(out.dtype);
  const n = out.size;
  if (n === 0) return;
  const c = ctx();
  const { shape, strides } = coalesce(out.shape, [out.strides]);
  const u = new Uniforms().u32('n', n);
  if (t === 'i32') u.i32('value', value);
  else u.f32('value', value);
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
  c.dispatch({ label: 'fill', key: `fill|${t}|${shape.length}`, code, uniforms: u.bytes(), buffers: [bufferOf(out)], workgroups: grid(n, WG, c.limits.maxComputeWorkgroupsPerDimension) });
}
