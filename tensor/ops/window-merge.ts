/**
 * The middle of the compressor D (LLaVA-UHD-V4.md, "The intra-ViT compressor D") as one op:
 * everything between its q/k/v projections and linear_1.
 *
 *   y    = x + WindowAttn(q, k, v) · outWeightᵀ + outBias     attention within each 2x2 window
 *   z    = layerNorm(pixelUnshuffle(y), normWeight, normBias)  pre_norm of each window's 4 rows
 *   mean = avgPool2x2(y)                                        D's residual branch
 *
 * A backend that offers the fused kernel (`Backend.windowMerge`, WebGPU's
 * kernels/window-merge.ts) runs it in one dispatch, unless a gradient is being recorded
 * through the inputs (the kernel has no backward) or it declines the shape; otherwise the op
 * is composed from the plain ops below, which is also the fused kernel's reference.
 */
import { getBackend, type WindowMergeArgs } from '../backend.js';
import { ops, recording } from '../dispatch.js';
import { tidy } from '../memory.js';
import { fmt } from '../shape.js';
import { Tensor } from '../tensor.js';
import { backendFor, requireDtype } from './common.js';
import { contiguous } from './elementwise.js';

export type { WindowMergeArgs } from '../backend.js';

/** z [B, h*w/4, 4d] and mean [B, h*w/4, d] for D's input x [B, h*w, d] (see the file comment). */
export function windowMerge(a: WindowMergeArgs): { z: Tensor; mean: Tensor } {
  checkWindowMerge(a);
  const inputs = [a.x, a.q, a.k, a.v, a.outWeight, a.outBias, a.normWeight, a.normBias];
  const backend = getBackend(a.x.device);
  if (backend.windowMerge && a.x.dtype === 'float32' && !recording(...inputs)) {
    const dense = inputs.map(contiguous);
    const [x, q, k, v, outWeight, outBias, normWeight, normBias] = dense;
    const [B, S, d] = a.x.shape;
    const z = Tensor.empty([B, S / 4, 4 * d], 'float32', a.x.device);
    const mean = Tensor.empty([B, S / 4, d], 'float32', a.x.device);
    const done = backend.windowMerge({ ...a, x, q, k, v, outWeight, outBias, normWeight, normBias }, z, mean);
    for (const t of dense) t.dispose();
    if (done) return { z, mean };
    z.dispose();
    mean.dispose();
  }
  return windowMergeReference(a);
}

/** The composition of plain ops (through the op table, so it records gradients under autograd). */
export function windowMergeReference(a: WindowMergeArgs): { z: Tensor; mean: Tensor } {
  checkWindowMerge(a);
  const o = ops();
  return tidy(() => {
    const [B, S, d] = a.x.shape;
    const hd = d / a.heads;
    const split = (t: Tensor) => o.permute(o.reshape(t, [B, S, a.heads, hd]), [0, 2, 1, 3]);
    const heads = o.attention(split(a.q), split(a.k), split(a.v), { window: a.grid });
    const merged = o.reshape(o.permute(heads, [0, 2, 1, 3]), [B, S, d]);
    const y = o.add(a.x, o.add(o.matmul(merged, o.transpose(a.outWeight)), a.outBias));
    const z = o.layerNorm(o.pixelUnshuffle(y, a.grid.h, a.grid.w, 2), a.normWeight, a.normBias, a.eps);
    return { z, mean: o.avgPool2x2(y, a.grid.h, a.grid.w) };
  });
}

function checkWindowMerge(a: WindowMergeArgs): void {
  const { x, grid: g, heads } = a;
  backendFor('windowMerge', x, a.q, a.k, a.v, a.outWeight, a.outBias, a.normWeight, a.normBias);
  if (x.rank !== 3) throw new Error(`windowMerge: x must be [B, h*w, d], got ${fmt(x.shape)}`);
  const [B, S, d] = x.shape;
  if (!Number.isInteger(g.h) || !Number.isInteger(g.w) || g.h % 2 || g.w % 2 || g.h * g.w !== S) {
    throw new Error(`windowMerge: grid ${g.h}x${g.w} (even sides) does not hold the ${S} tokens of x ${fmt(x.shape)}`);
  }
  if (!Number.isInteger(heads) || heads < 1 || d % heads !== 0) throw new Error(`windowMerge: ${heads} heads do not divide d = ${d}`);
  requireDtype('windowMerge', 'x', x, ['float32', 'float64']);
  const expect: [string, Tensor, number[]][] = [
    ['q', a.q, [B, S, d]], ['k', a.k, [B, S, d]], ['v', a.v, [B, S, d]],
    ['outWeight', a.outWeight, [d, d]], ['outBias', a.outBias, [d]], ['normWeight', a.normWeight, [4 * d]], ['normBias', a.normBias, [4 * d]],
  ];
  for (const [name, t, shape] of expect) {
    if (t.shape.length !== shape.length || t.shape.some((n, i) => n !== shape[i])) throw new Error(`windowMerge: ${name} must be ${fmt(shape)}, got ${fmt(t.shape)}`);
    if (t.dtype !== x.dtype) throw new Error(`windowMerge: ${name} is ${t.dtype}, x is ${x.dtype}`);
  }
}
