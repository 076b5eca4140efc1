/**
 * `npm run bench:main`: the two numbers the wasm backend was built for, measured interleaved
 * (device order rotated each round) with the load average: a training step of the main job
 * (`uhd start`'s tiny model, its recipe's instruction stage: 8 samples, up to 9 slices, packed)
 * and one encode of a 448x448 view by the mid-width tower (d = 384, 12 layers, D after layer 3,
 * as bench/suites/vit-encode.ts). Writes bench/results/main-job.{md,json}.
 * `-- --devices wasm,webgpu --rounds 3 --steps 3`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import * as ag from '../autograd/index.js';
import { closeDevice, openDevice, parseDevice } from '../backends/index.js';
import { CONFIGS, type LlavaUHDConfig } from '../llava-uhd/config.js';
import { loadDatasets } from '../llava-uhd/datasets.js';
import { tokenizerFor } from '../llava-uhd/load.js';
import { LlavaUHD } from '../llava-uhd/model.js';
import { train, type Recipe } from '../llava-uhd/train.js';
import * as uhd from '../tensor/index.js';
import type { Device } from '../tensor/index.js';
import { median } from './peers/timing.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const devices = arg('devices', 'wasm,webgpu,cpu').split(',').map((d) => parseDevice('--devices', d));
const rounds = Number(arg('rounds', '3'));
const steps = Number(arg('steps', '3'));
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const MID: LlavaUHDConfig = {
  ...CONFIGS.tiny,
  vision_config: { hidden_size: 384, intermediate_size: 1536, num_hidden_layers: 12, num_attention_heads: 6, patch_size: 14, num_channels: 3, layer_norm_eps: 1e-6, position_embedding_side: 32 },
  insert_layer_id: 3,
};

const recipe = JSON.parse(readFileSync(join(ROOT, 'recipes/tiny-demo.json'), 'utf8')) as Recipe & { checkpoint_every?: number };
const stage = recipe.stages[1];
recipe.stages = [{ ...stage, steps, warmup_steps: 1 }];
recipe.checkpoint_every = 0;
const data = await loadDatasets(recipe.data!, ROOT);
const tok = await tokenizerFor(CONFIGS.tiny);

interface State { model: LlavaUHD; vit: LlavaUHD; px: uhd.Tensor; stepMs: number[]; encodeMs: number[] }
const state = new Map<Device, State>();
for (const d of devices) {
  await openDevice(d);
  uhd.manualSeed(0);
  const model = new LlavaUHD(structuredClone(CONFIGS.tiny), { device: d });
  uhd.manualSeed(0);
  const vit = new LlavaUHD(structuredClone(MID), { device: d });
  state.set(d, { model, vit, px: uhd.randn([3, 448, 448], { device: d }), stepMs: [], encodeMs: [] });
}

async function trainSteps(d: Device, s: State, keep: boolean): Promise<void> {
  let t = performance.now();
  const times: number[] = [];
  await train(s.model, tok, recipe, {
    device: d, outDir: join(os.tmpdir(), `uhd-bench-main-${d}`), train: data.train, fresh: true,
    events: { step: () => { const n = performance.now(); times.push(n - t); t = n; } },
  });
  if (keep) s.stepMs.push(...times);
}

async function encode(s: State): Promise<number> {
  const t0 = performance.now();
  const f = ag.noGrad(() => s.vit.encodeViews([s.px]).features);
  const one = f.slice(...f.shape.map(() => [0, 1] as const));
  await one.data();
  one.dispose();
  f.dispose();
  return performance.now() - t0;
}

const load0 = os.loadavg()[0];
// warm-up: compile every kernel and pipeline once
for (const d of devices) {
  const s = state.get(d)!;
  await trainSteps(d, s, false);
  if (d !== 'cpu') await encode(s);
  console.log(`warmed up ${d}`);
}
const loads: number[] = [load0];
for (let r = 0; r < rounds; r++) {
  const order = devices.map((_, i) => devices[(i + r) % devices.length]);
  for (const d of order) {
    const s = state.get(d)!;
    if (d === 'cpu' && r > 0) continue; // one round: a step takes seconds, an encode a minute
    await trainSteps(d, s, true);
    if (d !== 'cpu') s.encodeMs.push(await encode(s));
    console.log(`round ${r + 1} ${d}: step ${median(s.stepMs).toFixed(0)} ms, encode ${s.encodeMs.length ? median(s.encodeMs).toFixed(0) : '-'} ms`);
  }
  loads.push(os.loadavg()[0]);
}

const rows = devices.map((d) => {
  const s = state.get(d)!;
  return { device: d, stepMs: median(s.stepMs), steps: s.stepMs.length, encodeMs: s.encodeMs.length ? median(s.encodeMs) : null, encodes: s.encodeMs.length };
});
const best = (key: 'stepMs' | 'encodeMs') => Math.min(...rows.filter((r) => r.device !== 'wasm' && r[key] !== null).map((r) => r[key] as number));
const wasm = rows.find((r) => r.device === 'wasm');
const lines = [
  '# main-job',
  '',
  `${new Date().toISOString()} · ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, node ${process.version} · load average ${loads.map((l) => l.toFixed(1)).join(' → ')} (2 cores shared: read ratios)`,
  '',
  '| device | training step (median ms) | steps | mid-width ViT encode 448x448 (median ms) | encodes |',
  '|---|---:|---:|---:|---:|',
  ...rows.map((r) => `| ${r.device} | ${r.stepMs.toFixed(0)} | ${r.steps} | ${r.encodeMs === null ? 'not run (a minute per call)' : r.encodeMs.toFixed(0)} | ${r.encodes} |`),
  '',
  wasm && rows.length > 1
    ? `wasm vs the fastest other backend: training step ${(best('stepMs') / wasm.stepMs).toFixed(2)}x, encode ${(best('encodeMs') / (wasm.encodeMs ?? NaN)).toFixed(2)}x faster.`
    : '',
];
const md = lines.join('\n') + '\n';
writeFileSync(join(ROOT, 'bench/results/main-job.md'), md);
writeFileSync(join(ROOT, 'bench/results/main-job.json'), JSON.stringify({ date: new Date().toISOString(), loads, rows }, null, 2) + '\n');
console.log(`\n${md}`);
closeDevice();
