/**
 * Compressor D lab: D's forward (and forward + backward) at the paper's width (SigLIP so400m:
 * d = 1152, MLP 4304, 16 heads) and at the tiny width (config 'tiny'), on one 448x448 slice
 * (32x32 patches) and one 980x980 view (70x70 patches). Variants:
 *
 *   1. the module, llava-uhd/compressor.ts, with Compressor.fuseMiddle off: an unfused chain
 *      of library ops (LN1, q/k/v projections, window attention, head merge, out_proj,
 *      residual, unshuffle, window mean, pre_norm, linear_1, GELU, linear_2, add), as training
 *      still runs it;
 *   2. fused middle: the same module's weights, with everything between the q/k/v projections
 *      and linear_1 in one dispatch (kernels/window-merge.ts: window attention, out_proj,
 *      residual, unshuffle, window mean, pre_norm). Forward only; checked against variant 1.
 *
 * A second table times the middle alone, from fixed q, k, v to pre_norm's output and the window
 * mean: the module's ops against the fused kernel with 1, 2 and 4 windows per thread.
 *
 * FLOPs: 2 x D's MACs from llava-uhd/flops.ts (matmul MACs plus its 4 score operations per
 * attention score, counted there as MAC-equivalents), taken at 32x32 and scaled to the
 * view's tokens (every term of D is linear in the tokens: its attention sees 4 keys per query).
 * Forward + backward counts 3x the forward (each matmul's backward is two matmuls).
 *
 * Where linear_1's weight ([4·4304, 4·1152] f32 = 317 MB at the paper's width) exceeds the
 * adapter's maxStorageBufferBindingSize (128 MiB on llvmpipe's GL backend), the library cannot
 * bind it; the lab then runs linear_1 as row blocks of its weight (outputs concatenated), in
 * both variants alike, and says so in the report.
 *
 *   npx tsx bench/lab/compressor-variants.ts [llava-uhd-v4 | tiny] [--quick] [--samples n] [--wall]
 *       a config name runs that width only; --quick skips the paper-width 70x70 view (minutes
 *       on llvmpipe)
 */
import * as ag from '../../autograd/index.js';
import { bucketSize, ctx } from '../../kernels/runtime.js';
import { windowMerge, windowMergeTiles, WINDOWS_PER_THREAD } from '../../kernels/window-merge.js';
import { Compressor } from '../../llava-uhd/compressor.js';
import { CONFIGS, type VisionConfig } from '../../llava-uhd/config.js';
import { viewFlops } from '../../llava-uhd/flops.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { runLab, type LabReport } from './report.js';
import { countDispatches, itersFor, timeInterleaved } from './timing.js';

/** A run longer than this is timed once (its check run), not sampled again. */
const SLOW_MS = 20_000;

interface Width {
  label: string;
  config: string;
}
const WIDTHS: Width[] = [
  { label: 'paper d=1152', config: 'llava-uhd-v4' },
  { label: 'tiny d=32', config: 'tiny' },
];
const GRIDS = [
  { label: '448x448 slice (32x32)', h: 32, w: 32 },
  { label: '980x980 view (70x70)', h: 70, w: 70 },
];

/** D's forward FLOPs on `tokens` tokens of one view: all of it, and the middle (attention and out_proj). */
function forwardFlops(vision: VisionConfig, tokens: number): { all: number; middle: number } {
  const config = { ...CONFIGS['llava-uhd-v4'], vision_config: vision, insert_layer_id: 0 }; // D's cost does not depend on k
  const d = viewFlops(config, { width: 448, height: 448 }).modules.find((m) => m.group === 'compressor')!;
  const p = d.parts;
  const middle = p.attn_qk + p.attn_av + p.attn_softmax + p.out_proj;
  return { all: (2 * d.macs * tokens) / d.tokens, middle: (2 * middle * tokens) / d.tokens };
}

/**
 * Moves D to the GPU. A linear_1 weight over the binding limit becomes row blocks (each within
 * it after the pool's size rounding); returns the extra tensors that then hold its parameters,
 * and a note, or none.
 */
async function toGpu(d: Compressor): Promise<{ extra: Tensor[]; note: string | null }> {
  for (const m of [d.layer_norm1, d.self_attn, d.pre_norm, d.linear_2]) await m.to('webgpu');
  const lin = d.linear_1;
  const limit = ctx().limits.maxStorageBufferBindingSize;
  const [out, inF] = lin.weight.shape;
  if (bucketSize(out * inF * 4) <= limit) {
    await lin.to('webgpu');
    return { extra: [], note: null };
  }
  let parts = 2;
  while (bucketSize(Math.ceil(out / parts) * inF * 4) > limit) parts++;
  const rows = Math.ceil(out / parts);
  const blocks: Tensor[] = [];
  for (let r = 0; r < out; r += rows) {
    const slice = lin.weight.narrow(0, r, Math.min(rows, out - r));
    const block = slice.contiguous();
    blocks.push(block.to('webgpu'));
    slice.dispose();
    block.dispose();
  }
  const bias = lin.bias!.to('webgpu');
  for (const t of [...blocks, bias]) t.requiresGrad = true;
  lin.forward = (x: Tensor) => {
    const ys = blocks.map((w) => ag.matmul(x, ag.transpose(w)));
    const y = ag.concat(ys, -1);
    for (const t of ys) t.dispose();
    return ag.add(y, bias);
  };
  const mib = (b: number) => `${Math.round(b / 2 ** 20)} MiB`;
  return {
    extra: [...blocks, bias],
    note: `${d.config.hidden_size === 1152 ? 'paper width' : `d=${d.config.hidden_size}`}: linear_1's weight (${mib(out * inF * 4)}) exceeds maxStorageBufferBindingSize (${mib(limit)}): run as ${blocks.length} row blocks and a concat, in both variants; the library itself cannot run D at this width on this adapter`,
  };
}

/** The middle as the module runs it (nn/attention.ts after the projections, then compressor.ts up to linear_1). */
function unfusedMiddle(d: Compressor, x: Tensor, q: Tensor, k: Tensor, v: Tensor, g: { h: number; w: number }): Tensor[] {
  return ag.noGrad(() =>
    uhd.tidy(() => {
      const a = d.self_attn;
      const [B, S, width] = x.shape;
      const split = (t: Tensor) => ag.permute(ag.reshape(t, [B, S, a.heads, a.headDim]), [0, 2, 1, 3]);
      const o = ag.attention(split(q), split(k), split(v), { window: g });
      const y = ag.add(x, a.out.forward(ag.reshape(ag.permute(o, [0, 2, 1, 3]), [B, S, width])));
      const z = d.pre_norm.forward(ag.reshape(ag.pixelUnshuffle(y, g.h, g.w, 2), [1, S / 4, 4 * width]));
      return [z, ag.reshape(ag.avgPool2x2(y, g.h, g.w), [1, S / 4, width])];
    }),
  );
}

/** Variant 1: D's forward as the library ops compose it (the module with its own fusion off). */
function unfusedForward(d: Compressor, x: Tensor, grids: { h: number; w: number }[]): Tensor {
  const before = Compressor.fuseMiddle;
  Compressor.fuseMiddle = false;
  try {
    return ag.noGrad(() => d.forward(x, grids));
  } finally {
    Compressor.fuseMiddle = before;
  }
}

/** Variant 2: D's forward with the middle fused (kernels/window-merge.ts), as the module now runs it under no-grad. */
function fusedForward(d: Compressor, x: Tensor, g: { h: number; w: number }): Tensor {
  return ag.noGrad(() =>
    uhd.tidy(() => {
      const a = d.self_attn;
      const normed = d.layer_norm1.forward(x);
      const { z, mean } = windowMerge({
        x, q: a.q_proj.forward(normed), k: a.k_proj.forward(normed), v: a.v_proj.forward(normed),
        outWeight: a.out.weight, outBias: a.out.bias!, normWeight: d.pre_norm.weight, normBias: d.pre_norm.bias,
        grid: g, heads: a.heads, eps: d.pre_norm.eps,
      });
      return ag.add(mean, d.linear_2.forward(ag.gelu(d.linear_1.forward(z), 'tanh')));
    }),
  );
}

/** One variant of a group: checked (its first run, timed), then sampled with the group's others. */
interface Entry {
  name: string;
  run: () => Tensor | null;
  /** Gets the first run's output; false means wrong (the entry is then not timed). */
  check: (out: Tensor | null) => Promise<boolean>;
  dispatches?: number;
  /** Median ms per run, or null when wrong; runs behind it (1: the check run alone). */
  ms?: number | null;
  runs?: number;
}

/**
 * Checks each entry (its first run, timed and its dispatches counted), then times those whose
 * first run took at most SLOW_MS in interleaved rounds; the slower ones keep their first run
 * as their one measurement.
 */
async function measureGroup(report: LabReport, entries: Entry[]): Promise<void> {
  const { samples, quick } = report.settings;
  const sampled: Entry[] = [];
  for (const e of entries) {
    let out: Tensor | null = null;
    let dispatches = 0;
    const first = await report.timer.sample(() => ({ result: out, dispatches } = countDispatches(e.run)));
    const ok = await e.check(out);
    (out as Tensor | null)?.dispose();
    e.dispatches = dispatches;
    [e.ms, e.runs] = ok ? [first, 1] : [null, 0];
    if (ok && first <= SLOW_MS) sampled.push(e);
  }
  const runs: { run: () => void; iters: number }[] = [];
  for (const e of sampled) {
    const run = () => e.run()?.dispose();
    runs.push({ run, iters: await itersFor(report.timer, run, quick ? 50 : 200, 50) });
  }
  const ms = await timeInterleaved(report.timer, runs, samples);
  sampled.forEach((e, i) => {
    e.ms = ms[i];
    e.runs = samples * runs[i].iters;
  });
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
};

await runLab('compressor-variants', async (report) => {
  const table = report.table('compressor D, f32', ['width', 'view', 'pass', 'variant', 'dispatches', 'median ms', 'GFLOP/s', 'fused/unfused time', 'runs'], 'D');
  const middleTable = report.table('the middle alone: q, k, v to z (pre_norm output) and the window mean, f32', ['width', 'view', 'variant', 'dispatches', 'median ms', 'GFLOP/s', 'fused/unfused time', 'max abs err', 'runs'], 'middle');
  const ratio = (e: Entry, base: Entry) => (e.ms && base.ms ? (e.ms / base.ms).toFixed(2) : '');
  const gflops = (e: Entry, flops: number) => (e.ms ? flops / (e.ms / 1e3) / 1e9 : '');
  const only = report.settings.rest;
  for (const width of WIDTHS.filter((w) => only.length === 0 || only.includes(w.config))) {
    const vision = CONFIGS[width.config].vision_config;
    uhd.manualSeed(0);
    // built on the CPU: at the paper's width linear_1 may not be bindable on the GPU in one piece
    const d = new Compressor(vision, { device: 'cpu' });
    const { extra, note } = await toGpu(d);
    if (note) report.note(note);
    const params = [...d.parameters().filter((p) => p.device === 'webgpu'), ...extra];
    const a = d.self_attn;
    for (const g of GRIDS) {
      const large = width.config !== 'tiny' && g.h > 32;
      if (report.settings.quick && large) {
        report.note(`--quick: ${width.label} ${g.label} skipped`);
        continue;
      }
      const n = g.h * g.w;
      const grids = [{ h: g.h, w: g.w }];
      const x = uhd.randn([1, n, vision.hidden_size], { device: 'webgpu' });
      const flops = forwardFlops(vision, n);

      // The middle alone, from fixed q, k, v: the module's ops, then the fused kernel's tilings
      // (only the default one on the paper-width 70x70 view, minutes each on llvmpipe).
      const normed = ag.noGrad(() => d.layer_norm1.forward(x));
      const [q, k, v] = ag.noGrad(() => [a.q_proj.forward(normed), a.k_proj.forward(normed), a.v_proj.forward(normed)]);
      let want: Float32Array[] = [];
      const middle: Entry[] = [{
        name: '1 module ops (unfused)',
        run: () => {
          const [z, mean] = unfusedMiddle(d, x, q, k, v, g);
          mean.dispose();
          return z;
        },
        check: async (z) => {
          const [, mean] = unfusedMiddle(d, x, q, k, v, g);
          want = [Float32Array.from(await z!.data()), Float32Array.from(await mean.data())];
          mean.dispose();
          return true;
        },
      }];
      const errs = new Map<Entry, number>();
      for (const rw of large ? [WINDOWS_PER_THREAD] : [1, 2, 4]) {
        const tiles = windowMergeTiles(vision.hidden_size, a.heads, rw);
        let firstMean: Tensor | null = null;
        const e: Entry = {
          name: `2 fused window-merge, ${rw} window${rw > 1 ? 's' : ''}/thread${rw === WINDOWS_PER_THREAD ? ' (default)' : ''} [${tiles.wb} windows, ${(tiles.wb / tiles.rw) * tiles.tpw} threads/workgroup]`,
          run: () => {
            const r = windowMerge({ x, q, k, v, outWeight: a.out.weight, outBias: a.out.bias!, normWeight: d.pre_norm.weight, normBias: d.pre_norm.bias, grid: g, heads: a.heads, eps: d.pre_norm.eps }, tiles);
            if (firstMean === null) firstMean = r.mean; // the check run's, compared below
            else r.mean.dispose();
            return r.z;
          },
          check: async (z) => {
            const err = Math.max(maxAbsDiff(await z!.data(), want[0]), maxAbsDiff(await firstMean!.data(), want[1]));
            (firstMean as Tensor | null)?.dispose();
            errs.set(e, err);
            return err <= 1e-4;
          },
        };
        middle.push(e);
      }
      await measureGroup(report, middle);
      for (const e of middle) {
        const err = errs.get(e);
        report.row(middleTable, [width.label, g.label, e.name, e.dispatches!, e.ms ?? 'WRONG', gflops(e, flops.middle), e === middle[0] ? '' : ratio(e, middle[0]), err === undefined ? '' : err.toExponential(1), e.runs!]);
      }
      for (const t of [normed, q, k, v]) t.dispose();

      // D's forward: the module (its check run gives the reference), then the fused variant
      let ref = new Float32Array(0);
      let worst = 0;
      const forward: Entry[] = [
        {
          name: '1 module (unfused)',
          run: () => unfusedForward(d, x, grids),
          check: async (out) => {
            ref = Float32Array.from(await out!.data());
            return true;
          },
        },
        {
          name: '2 fused window-merge',
          run: () => fusedForward(d, x, g),
          check: async (out) => {
            worst = maxAbsDiff(await out!.data(), ref);
            return worst <= 1e-4 * Math.max(1, ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
          },
        },
      ];
      await measureGroup(report, forward);
      report.note(`${width.label} ${g.label}: fused D forward ${forward[1].ms ? 'agrees with' : 'WRONG against'} the module's: max |err| ${worst.toExponential(1)}`);
      for (const e of forward) report.row(table, [width.label, g.label, 'forward', e.name, e.dispatches!, e.ms ?? 'WRONG', gflops(e, flops.all), e === forward[0] ? '' : ratio(e, forward[0]), e.runs!]);

      // forward + backward of the module (loss = sum of the output); x needs its gradient too
      x.requiresGrad = true;
      const train: Entry = {
        name: '1 module (unfused)',
        run: () => {
          uhd.tidy(() => ag.sum(d.forward(x, grids)).backward());
          ag.zeroGrad([...params, x]);
          return null;
        },
        check: async () => true,
      };
      await measureGroup(report, [train]);
      report.row(table, [width.label, g.label, 'forward+backward', train.name, train.dispatches!, train.ms!, gflops(train, 3 * flops.all), '', train.runs!]);
      x.dispose();
    }
    d.dispose();
    for (const t of extra) t.dispose();
  }
});
