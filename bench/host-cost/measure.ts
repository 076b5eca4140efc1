/**
 * Host cost per dispatch: for one training step of the main job's tiny model and for one ViT
 * encode, how many dispatches, buffer copies and submits the runtime queues, and how much main
 * thread time each dispatch costs in our JavaScript and Dawn's encoding, apart from the time
 * inside `queue.submit` (where Dawn's GL backend runs the kernels) and the waits for read-backs.
 *
 *   host µs per dispatch = (wall - submit - wait) / dispatches
 *
 * The data pipeline (image synthesis, slicing, tokenizing, packing) runs before the timed part
 * and is reported apart. Shared by bench/host-cost/run.ts and the GPU benchmark (bench/gpu/).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ag from '../../autograd/index.js';
import { gpuContext } from '../../kernels/index.js';
import { CONFIGS, type LlavaUHDConfig } from '../../llava-uhd/config.js';
import { loadDatasets } from '../../llava-uhd/datasets.js';
import { pack } from '../../llava-uhd/layout.js';
import { tokenizerFor } from '../../llava-uhd/load.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { viewPixels } from '../../llava-uhd/preprocess.js';
import { applyTrainable, batchIndices, encodeSample, type Recipe, type StageSpec } from '../../llava-uhd/train.js';
import { AdamW, clipGradNorm, crossEntropy, LLAVA_UHD_ADAMW, paramGroups } from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';

export interface HostCost {
  label: string;
  /** Wall time of the timed part (ms). */
  wallMs: number;
  submitMs: number;
  waitMs: number;
  /** wall - submit - wait (ms): our JavaScript and Dawn's encoding on the main thread. */
  hostMs: number;
  dispatches: number;
  copies: number;
  submits: number;
  bindGroupsCreated: number;
  buffersCreated: number;
  /** Pipelines compiled (WGSL the runtime met for the first time): none in a warm step. */
  pipelinesCreated: number;
  hostUsPerDispatch: number;
  /** Dispatches and copies per kernel label, most first. */
  byLabel: [string, number][];
  /** Untimed data preparation before the step (ms), where there is one. */
  dataMs?: number;
  loss?: number;
}

/** Runs `body` with the runtime's counters reset around it; returns the counts and times. */
export async function measure(label: string, body: () => Promise<number | undefined>): Promise<HostCost> {
  const c = gpuContext();
  await c.sync();
  const s = c.stats;
  const before = { ...s };
  const pipelines0 = c.pipelineCount;
  const counts = new Map<string, number>();
  s.byLabel = counts;
  const t0 = performance.now();
  let loss: number | undefined;
  try {
    loss = await body();
    await c.sync();
  } finally {
    s.byLabel = null;
  }
  const byLabel = [...counts.entries()].sort((a, b) => b[1] - a[1]);
  const wallMs = performance.now() - t0;
  const submitMs = s.submitMs - before.submitMs;
  const waitMs = s.waitMs - before.waitMs;
  const dispatches = s.dispatches - before.dispatches;
  const hostMs = wallMs - submitMs - waitMs;
  return {
    label, wallMs, submitMs, waitMs, hostMs, dispatches,
    copies: s.copies - before.copies,
    submits: s.submits - before.submits,
    bindGroupsCreated: s.bindGroupsCreated - before.bindGroupsCreated,
    buffersCreated: s.buffersCreated - before.buffersCreated,
    pipelinesCreated: c.pipelineCount - pipelines0,
    hostUsPerDispatch: dispatches ? (1e3 * hostMs) / dispatches : 0,
    byLabel,
    ...(loss === undefined ? {} : { loss }),
  };
}

/**
 * The main job's model and stage 2 ("instruction": everything trains, 9 slices), ready to step
 * on `device` (WebGPU; ops.ts also steps it on its null backend, to time the layers above it).
 */
export async function trainStepFixture(config: LlavaUHDConfig = CONFIGS.tiny, device: Device = 'webgpu'): Promise<{
  step: (i: number) => Promise<HostCost>;
  /** step(i) in two halves: the batch of step i on the device, then the measured step on it. */
  prepare: (i: number) => PreparedBatch;
  run: (batch: PreparedBatch) => Promise<HostCost>;
  dispose: () => void;
}> {
  // beside this file, or from the repo root when bundled elsewhere (bench/gpu)
  const beside = fileURLToPath(new URL('../../recipes/tiny-demo.json', import.meta.url));
  const recipe = JSON.parse(readFileSync(existsSync(beside) ? beside : join('recipes', 'tiny-demo.json'), 'utf8')) as Recipe;
  const stage: StageSpec = recipe.stages[1];
  const data = await loadDatasets(recipe.data!, '.');
  uhd.manualSeed(0);
  const model = new LlavaUHD(structuredClone(config), { device });
  const tok = await tokenizerFor(config);
  const named = applyTrainable(model, stage);
  const opt = new AdamW(paramGroups(named, { weightDecay: LLAVA_UHD_ADAMW.weightDecay }), {
    lr: stage.lr, betas: [...LLAVA_UHD_ADAMW.betas] as [number, number], weightDecay: LLAVA_UHD_ADAMW.weightDecay,
  });
  const vocab = config.text_config.vocab_size;
  const prepare = (i: number): PreparedBatch => {
    const d0 = performance.now();
    const samples = batchIndices(data.train.size, stage.batch_size, i, 1000003).map((k) => data.train.get(k));
    const encoded = samples.map((s) => encodeSample(model, tok, s, stage.max_slices));
    const packed = pack(encoded.map((e) => e.layout), stage.pack_length!);
    // the batch on the device (uploads are data loading, not per-dispatch work)
    const inputs = packed.map((g) => ({
      ids: uhd.tensor([Array.from(g.ids)], { dtype: 'int32', device }),
      labels: uhd.tensor(g.labels, { dtype: 'int32', device }),
      seg: uhd.tensor([Array.from(g.segmentIds)], { dtype: 'int32', device }),
      pixels: g.samples.flatMap((m) => viewPixels(encoded[m.index].pixels, device)),
      unk: g.unkPositions,
    }));
    return { inputs, dataMs: performance.now() - d0 };
  };
  const run = async ({ inputs, dataMs }: PreparedBatch): Promise<HostCost> => {
    const r = await measure('train step (tiny, stage 2)', async () => {
      const mean = uhd.tidy(() => {
        const ls = inputs.map((g) => {
          return crossEntropy(ag.reshape(model.forward(g.ids, g.pixels, g.unk, { segmentIds: g.seg }), [-1, vocab]), g.labels);
        });
        const m = ag.div(ls.reduce((acc: Tensor | null, l) => (acc ? ag.add(acc, l) : l), null)!, ls.length);
        m.backward();
        return m;
      });
      const loss = await mean.item();
      mean.dispose();
      uhd.tidy(() => {
        clipGradNorm(named.map(([, p]) => p), LLAVA_UHD_ADAMW.maxGradNorm).dispose();
        opt.step();
        opt.zeroGrad();
        return undefined;
      });
      return loss;
    });
    for (const g of inputs) for (const t of [g.ids, g.labels, g.seg, ...g.pixels]) t.dispose();
    return { ...r, dataMs };
  };
  return {
    step: (i) => run(prepare(i)),
    prepare,
    run,
    dispose: () => {
      opt.dispose();
      for (const p of model.parameters()) p.dispose();
    },
  };
}

/** One training batch on the device (ids, labels, segment ids, pixels per packed sequence). */
export interface PreparedBatch {
  inputs: { ids: Tensor; labels: Tensor; seg: Tensor; pixels: Tensor[]; unk: number[] }[];
  dataMs: number;
}

/** One view encoded by the ViT (+ D where the config has it), without gradients. */
export async function vitEncodeFixture(config: LlavaUHDConfig, side: number): Promise<{
  encode: () => Promise<HostCost>;
  dispose: () => void;
}> {
  uhd.manualSeed(0);
  const model = new LlavaUHD(structuredClone(config), { device: 'webgpu' });
  const px = uhd.randn([3, side, side], { device: 'webgpu' });
  const label = `vit encode d=${config.vision_config.hidden_size} L=${config.vision_config.num_hidden_layers} ${config.insert_layer_id === null ? 'baseline' : `D k=${config.insert_layer_id}`} ${side}x${side}`;
  return {
    encode: () => measure(label, async () => {
      uhd.tidy(() => {
        ag.noGrad(() => model.encodeViews([px]).features);
      });
      await gpuContext().sync();
      return undefined;
    }),
    dispose: () => {
      px.dispose();
      for (const p of model.parameters()) p.dispose();
    },
  };
}

/** The ViT of the benchmarks' mid setting: width 384, 12 layers, D after layer 3. */
export const MID_VIT: LlavaUHDConfig = {
  ...CONFIGS.tiny,
  vision_config: { hidden_size: 384, intermediate_size: 1536, num_hidden_layers: 12, num_attention_heads: 6, patch_size: 14, num_channels: 3, layer_norm_eps: 1e-6, position_embedding_side: 32 },
  insert_layer_id: 3,
};
