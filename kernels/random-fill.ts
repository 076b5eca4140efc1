/**
 * Fills a dense tensor (float32, bfloat16 or float16) with uniform values in [-scale, scale)
 * from a counter-based hash of (element index, seed): large random weights made on the device
 * in one dispatch (the GPU benchmark's Qwen3-8B-shaped model), not drawn on the host. Not the
 * library's seeded generator: the values differ from `randn`'s.
 */
import { isHalf } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import { HALF_ENCODE_WGSL } from './half.js';
import { grid, flatIndex, Uniforms } from './layout.js';
import { bindWindow, ctx, windowElements } from './runtime.js';

const WG = 256;

export function fillUniform(t: Tensor, seed: number, scale: number): void {
  if (!t.isContiguous) throw new Error(`fillUniform: ${t.toString()} must be contiguous`);
  const c = ctx();
  const half = isHalf(t.dtype);
  if (!half && t.dtype !== 'float32') throw new Error(`fillUniform: float32, bfloat16 or float16 only, got ${t.dtype}`);
  const per = half ? 2 : 1; // elements per thread (one word)
  const step = Math.floor(windowElements(half ? 2 : 4) / 64) * 64;
  for (let start = 0; start < t.size; start += step) {
    const count = Math.min(step, t.size - start);
    const w = bindWindow(t, start, count);
    const u = new Uniforms().u32('n', count).u32('first', start).u32('seed', seed >>> 0).f32('scale', scale).u32('off', w.elemOffset);
    const code = () => /* wgsl */ `
${u.declaration()}
@group(0) @binding(1) var<storage, read_write> o: array<${half ? 'u32' : 'f32'}>;
${half ? HALF_ENCODE_WGSL : ''}
fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}
fn value(i: u32) -> f32 {
  let h = pcg(pcg(P.first + i) ^ P.seed);
  return (f32(h >> 8u) / 16777216.0 * 2.0 - 1.0) * P.scale;
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = ${flatIndex(WG)};
${half ? `  let i = t * 2u;
  if (i >= P.n) { return; }
  let lo = enc_${t.dtype}(value(i));
  var hi = 0u;
  if (i + 1u < P.n) { hi = enc_${t.dtype}(value(i + 1u)); }
  o[P.off / 2u + t] = lo | (hi << 16u);` : `  if (t >= P.n) { return; }
  o[P.off + t] = value(t);`}
}`;
    c.dispatch({
      label: 'fillUniform',
      key: `fillUniform|${t.dtype}`,
      code,
      uniforms: u.bytes(),
      buffers: [w.binding],
      workgroups: grid(Math.ceil(count / per), WG, c.limits.maxComputeWorkgroupsPerDimension),
    });
  }
}
