/**
 * Attention forward lab (llm.c style): each variant is checked against the CPU reference
 * (tensor/cpu/attention.ts), then timed, in the two shapes of the paper's ViT (d = 1152,
 * 16 heads of 72): full attention over one 448x448 slice (1024 tokens), and the compressor's
 * window attention over the 2x2 windows of its 32x32 patch grid. Variants:
 *
 *   1. plain: scores = q·kᵀ (a batched matmul, the scores materialised), softmax, p·v. For the
 *      windows, the 4 tokens of each window are first gathered into a [windows, 4, 72] batch
 *      (and scattered back after), so the matmuls are 4x4 per window instead of 1024x1024.
 *   2. the library's flash kernel (kernels/attention.ts `flashWgsl`): online softmax, keys and
 *      values streamed through workgroup memory, no score matrix. For the windows it runs with
 *      each window's index as the segment id (the mask the window path makes unnecessary).
 *   3. the library's window kernel (`windowWgsl`), chosen by kernels/attention.ts whenever the
 *      call passes `window: {h, w}`: one thread per window holds its 4x4 scores in registers.
 *
 * q, k and v are dense [1, 16, S, 72] tensors (q pre-scaled by 1/sqrt(72) for the plain
 * variant, outside the timing). FLOPs: 4·72 per (query, visible key) pair, as
 * bench/suites/attention.ts counts them; GB/s: q, k, v read once and the output written once.
 *
 *   npx tsx bench/lab/attention-variants.ts [--quick] [--samples n] [--wall]
 */
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { runLab } from './report.js';
import { countDispatches, itersFor, timeInterleaved } from './timing.js';

interface Inputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  /** q times the softmax scale. */
  qScaled: Tensor;
  /** Window index of each token, [1, S] int32 (window problems only). */
  windowIds: Tensor | null;
}

interface Problem {
  name: string;
  heads: number;
  tokens: number;
  headDim: number;
  /** The 2x2-window grid, or null for full attention. */
  window: { h: number; w: number } | null;
}

interface Variant {
  name: string;
  /** Whether the variant applies to this problem. */
  fits: (p: Problem) => boolean;
  /** Returns the output [1, H, S, D] (a new tensor the caller disposes). */
  run: (x: Inputs, p: Problem) => Tensor;
}

/** [1, H, h*w, D] -> [H * windows, 4, D]: the 4 tokens of each 2x2 window, windows row-major. */
function gatherWindows(t: Tensor, p: Problem): Tensor {
  const { h, w } = p.window!;
  const D = p.headDim;
  return uhd.tidy(() => t.reshape([p.heads, h / 2, 2, w / 2, 2, D]).permute(0, 1, 3, 2, 4, 5).contiguous().reshape([(p.heads * p.tokens) / 4, 4, D]));
}

/** The inverse of gatherWindows. */
function scatterWindows(t: Tensor, p: Problem): Tensor {
  const { h, w } = p.window!;
  const D = p.headDim;
  return uhd.tidy(() => t.reshape([p.heads, h / 2, w / 2, 2, 2, D]).permute(0, 1, 3, 2, 4, 5).contiguous().reshape([1, p.heads, p.tokens, D]));
}

const plain: Variant = {
  name: '1 plain: matmul, softmax, matmul',
  fits: () => true,
  run: (x, p) =>
    uhd.tidy(() => {
      if (!p.window) return uhd.matmul(uhd.softmax(uhd.matmul(x.qScaled, x.k.transpose(-2, -1)), -1), x.v);
      const [q, k, v] = [x.qScaled, x.k, x.v].map((t) => gatherWindows(t, p));
      return scatterWindows(uhd.matmul(uhd.softmax(uhd.matmul(q, k.transpose(-2, -1)), -1), v), p);
    }),
};

const flash: Variant = {
  name: '2 library flash (online softmax)',
  fits: () => true,
  run: (x, p) => uhd.attention(x.q, x.k, x.v, p.window ? { segmentIds: x.windowIds! } : {}),
};

const windowKernel: Variant = {
  name: '3 library 2x2-window kernel',
  fits: (p) => p.window !== null,
  run: (x, p) => uhd.attention(x.q, x.k, x.v, { window: p.window! }),
};

const VARIANTS = [plain, flash, windowKernel];

/** Window index (row-major over the windows) of each token of an h x w grid. */
function windowIds(h: number, w: number, device: 'cpu' | 'webgpu'): Tensor {
  const ids = Int32Array.from({ length: h * w }, (_, t) => Math.floor(Math.floor(t / w) / 2) * (w / 2) + Math.floor((t % w) / 2));
  return uhd.tensor(ids, { shape: [1, h * w], dtype: 'int32', device });
}

await runLab('attention-variants', async (report) => {
  const { samples, quick } = report.settings;
  const problems: Problem[] = [
    { name: 'full, 16 heads x 1024 tok x 72', heads: 16, tokens: 1024, headDim: 72, window: null },
    { name: '2x2 windows over 32x32, 16 heads x 72', heads: 16, tokens: 1024, headDim: 72, window: { h: 32, w: 32 } },
  ];
  const table = report.table('attention forward, f32', ['problem', 'variant', 'dispatches', 'median ms', 'GFLOP/s', 'GB/s', 'max abs err', 'iters/sample']);
  for (const p of problems) {
    const { heads: H, tokens: S, headDim: D } = p;
    uhd.manualSeed(S + D);
    const shape = [1, H, S, D];
    const [q, k, v] = [uhd.randn(shape), uhd.randn(shape), uhd.randn(shape)];
    const want = await uhd.attention(q, k, v, p.window ? { window: p.window } : {}).data();
    const g: Inputs = {
      q: q.to('webgpu'),
      k: k.to('webgpu'),
      v: v.to('webgpu'),
      qScaled: q.mul(1 / Math.sqrt(D)).to('webgpu'),
      windowIds: p.window ? windowIds(p.window.h, p.window.w, 'webgpu') : null,
    };
    const pairs = H * S * (p.window ? 4 : S);
    const flops = 4 * D * pairs;
    const bytes = 4 * 4 * H * S * D;
    // check every variant first, then time them interleaved
    const timed: { variant: Variant; dispatches: number; err: number; run: () => void; iters: number }[] = [];
    for (const variant of VARIANTS) {
      if (!variant.fits(p)) continue;
      const { result: out, dispatches } = countDispatches(() => variant.run(g, p));
      const got = await out.data();
      out.dispose();
      let err = 0;
      for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
      if (!(err < 2e-4)) {
        report.row(table, [p.name, variant.name, dispatches, 'WRONG', '', '', err.toExponential(1), '']);
        continue;
      }
      const run = () => variant.run(g, p).dispose();
      timed.push({ variant, dispatches, err, run, iters: await itersFor(report.timer, run, quick ? 20 : 50) });
    }
    const ms = await timeInterleaved(report.timer, timed, samples);
    timed.forEach((t, i) => {
      report.row(table, [p.name, t.variant.name, t.dispatches, ms[i], flops / (ms[i] / 1e3) / 1e9, bytes / (ms[i] / 1e3) / 1e9, t.err.toExponential(1), t.iters]);
    });
    for (const t of [q, k, v, ...Object.values(g)]) t?.dispose();
  }
});
