/** The fused AdamW step: one pass over param, grad, m, v (decoupled weight decay, bias correction). */
import type { AdamWHyper } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import { coalesce, flatIndex, grid, offsetCode, stridedUniforms, Uniforms } from './layout.js';
import { bufferOf, ctx } from './runtime.js';

const WG = 256;

/** Updates param, m and v in place (all contiguous); grad may be a strided view. */
export function adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWHyper): void {
  const n = param.size;
  if (n === 0) return;
  const c = ctx();
  const { shape, strides } = coalesce(grad.shape, [grad.strides]);
  const u = new Uniforms()
    .u32('n', n)
    .f32('lr', h.lr)
    .f32('beta1', h.beta1)
    .f32('beta2', h.beta2)
    .f32('eps', h.eps)
    .f32('decay', 1 - h.lr * h.weightDecay)
    .f32('c1', 1 - h.beta1 ** h.step)
    .f32('c2', 1 - h.beta2 ** h.step);
  stridedUniforms(u, shape, [['g', strides[0], grad.offset]]);
  const code = () => /* wgsl */ `
${u.declaration()}
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let flat = ${flatIndex(WG)};
  if (flat >= P.n) { return; }
${offsetCode(shape.length, ['g'])}
  let gi = g[off_g];
  let mi = P.beta1 * m[flat] + (1.0 - P.beta1) * gi;
  let vi = P.beta2 * v[flat] + (1.0 - P.beta2) * gi * gi;
  m[flat] = mi;
  v[flat] = vi;
  p[flat] = p[flat] * P.decay - P.lr * (mi / P.c1) / (sqrt(vi / P.c2) + P.eps);
}`;
  c.dispatch({
    label: 'adamw',
    key: `adamw|${shape.length}`,
    code,
    uniforms: u.bytes(),
    buffers: [bufferOf(param), bufferOf(grad), bufferOf(m), bufferOf(v)],
    workgroups: grid(n, WG, c.limits.maxComputeWorkgroupsPerDimension),
  });
}
