/**
 * The GPU benchmark: one run on a real GPU (bench/gpu/run.sh on the device machine) records
 * into bench/results/gpu-<device>.{md,json}:
 *
 *   adapter and limits opened; PyTorch's matmul on the same card (from run.sh, if present);
 *   our matmul, f32 and bf16 weights, 1024-8192, every GPU tile config (timestamp queries
 *   where offered, 64 entries spot-checked in float64); host µs per dispatch (a queue of tiny
 *   dispatches, and a training step of the main job's model); attention forward and backward
 *   at the ViT's shapes; a ViT encode of one 448x448 slice and one 1008x1008 view (the 980 px
 *   view rounded up to the 56-pixel unit) at the paper's width, D (k = 6) against the baseline,
 *   the FLOPs model's ratio beside the measured one; prefill and decode tokens/s of a
 *   Qwen3-8B-shaped LLM with random bf16 weights; the subgroup reduction checked against the
 *   shared-memory one where `subgroups` is offered.
 *
 * DRY=1: tiny sizes on whatever adapter opens (llvmpipe here); part of the tests
 * (tests/bench/gpu-dry.test.ts); BENCH_HEAVY=1 adds the training step to it. Env: BENCH_BUDGET_S (default 330; sections past it are
 * skipped), BENCH_ONLY (a section name substring), BENCH_OUT (folder for the results; default
 * bench/results), TORCH_JSON (PyTorch's numbers from run.sh).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import * as ag from '../../autograd/index.js';
import { gpuContext, initWebGPU, shutdown } from '../../kernels/index.js';
import { chooseVariant, GPU_TILES, matmulWith, type MatmulVariant } from '../../kernels/matmul.js';
import { fillUniform } from '../../kernels/random-fill.js';
import { CONFIGS, type LlavaUHDConfig } from '../../llava-uhd/config.js';
import { viewFlops } from '../../llava-uhd/flops.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { CausalLM, KVCache, type Module } from '../../nn/index.js';
import { roundToHalf } from '../../tensor/dtype.js';
import * as uhd from '../../tensor/index.js';
import { LabTimer, median } from '../lab/timing.js';
import { trainStepFixture } from '../host-cost/measure.js';

const DRY = process.env.DRY === '1';
const BUDGET_MS = Number(process.env.BENCH_BUDGET_S ?? (DRY ? 120 : 330)) * 1e3;
const ONLY = process.env.BENCH_ONLY ?? '';
const T0 = performance.now();
const left = () => BUDGET_MS - (performance.now() - T0);

type Row = Record<string, unknown>;
const report: { meta: Row; sections: Record<string, Row[] | Row> } = { meta: {}, sections: {} };
const log = (s: string) => console.log(s);

async function section(name: string, minMs: number, fn: (rows: Row[]) => Promise<void>): Promise<void> {
  if (ONLY && !name.includes(ONLY)) return;
  const rows: Row[] = [];
  report.sections[name] = rows;
  if (left() < (DRY ? minMs / 20 : minMs)) {
    rows.push({ skipped: `time budget (${(left() / 1e3).toFixed(0)} s left)` });
    log(`-- ${name}: skipped (budget)`);
    return;
  }
  const t = performance.now();
  try {
    await fn(rows);
  } catch (e) {
    rows.push({ error: String((e as Error).stack ?? e).split('\n').slice(0, 5).join(' | ') });
    log(`-- ${name}: ERROR ${(e as Error).message}`);
  }
  log(`-- ${name}: ${((performance.now() - t) / 1e3).toFixed(1)} s`);
}

const info = await initWebGPU();
const c = gpuContext();
const timer = new LabTimer();
const L = c.device.limits as unknown as Record<string, number>;

/** ms per call: wall clock over queued calls + sync, and GPU time by timestamp queries where offered. */
async function timeIt(run: () => void, targetMs = DRY ? 20 : 200): Promise<{ wallMs: number; gpuMs: number | null; iters: number }> {
  run();
  await c.sync();
  let t = performance.now();
  run();
  await c.sync();
  const once = performance.now() - t;
  const iters = Math.max(1, Math.min(DRY ? 3 : 100, Math.round(targetMs / Math.max(once, 0.05))));
  const walls: number[] = [];
  for (let s = 0; s < 3; s++) {
    t = performance.now();
    for (let i = 0; i < iters; i++) run();
    await c.sync();
    walls.push((performance.now() - t) / iters);
  }
  let gpuMs: number | null = null;
  if (timer.method === 'timestamp-query') {
    const g: number[] = [];
    for (let s = 0; s < 3; s++) g.push(await timer.sample(run, Math.min(iters, 200)));
    gpuMs = median(g);
  }
  return { wallMs: median(walls), gpuMs, iters };
}

function hostValues(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = (s >>> 0) / 4294967296 - 0.5;
  }
  return a;
}

/** Random weights made on the device: matrices uniform(±1/sqrt(fan-in)), norms 1, biases 0. */
function fillModel(m: Module, seed: number): void {
  let i = 0;
  for (const [name, p] of m.namedParameters()) {
    if (p.rank >= 2) fillUniform(p, seed + i++, 1 / Math.sqrt(p.shape[p.rank - 1]));
    else uhd.tidy(() => uhd.assign(p, uhd.full([], /norm|layernorm/i.test(name) ? 1 : 0, { device: 'webgpu' })));
  }
}

// ---- adapter ----------------------------------------------------------------------------------

report.meta = {
  date: new Date().toISOString(),
  dry: DRY,
  host: `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`,
  loadavg: os.loadavg(),
  adapter: { backend: info.backend, featureLevel: info.featureLevel, vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description, tried: info.tried, toggles: info.toggles, experimental: info.experimental },
  features: info.features,
  adapterFeatures: info.adapterFeatures,
  limits: Object.fromEntries(['maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupsPerDimension', 'maxStorageBuffersPerShaderStage', 'minUniformBufferOffsetAlignment', 'minStorageBufferOffsetAlignment'].map((k) => [k, L[k]])),
  timing: timer.describe(),
};
log(`adapter: ${info.backend}/${info.featureLevel} ${info.description} | ${info.features.join(',')} | timing: ${timer.method}`);
if (process.env.TORCH_JSON && existsSync(process.env.TORCH_JSON)) {
  report.sections['pytorch (same card)'] = JSON.parse(readFileSync(process.env.TORCH_JSON, 'utf8')) as Row;
} else {
  // torch_ref.py could not run (no torch on this machine): the report says so rather than omit it
  report.sections['pytorch (same card)'] = { skipped: 'PyTorch reference did not run (no torch here: see torch.log)' };
}

// ---- matmul ------------------------------------------------------------------------------------

await section('matmul', 30e3, async (rows) => {
  const sizes = DRY ? [96, 160] : [1024, 2048, 4096, 8192];
  for (const n of sizes) {
    for (const wd of ['float32', 'bfloat16'] as const) {
      if (left() < 40e3 && !DRY) return;
      const ha = hostValues(n * n, 1);
      const hw = hostValues(n * n, 2); // W [N, K]: out = a @ Wᵀ, the Linear layout
      const a = uhd.tensor(ha, { shape: [n, n], device: 'webgpu' });
      const w = uhd.tensor(hw, { shape: [n, n], dtype: wd, device: 'webgpu' });
      const ref = wd === 'float32' ? hw : roundToHalf(hw, wd);
      const b = w.transpose();
      const out = uhd.zeros([n, n], { device: 'webgpu' });
      const shipped = chooseVariant(a, b, out);
      const variants: [string, MatmulVariant][] = [['shipped', shipped]];
      for (const t of GPU_TILES) if (JSON.stringify(t.config) !== JSON.stringify(shipped.config)) variants.push([`${t.config.bm}x${t.config.bn} t${t.config.tm}x${t.config.tn}`, { ...shipped, config: t.config }]);
      for (const [label, v] of variants) {
        matmulWith(v, a, b, out);
        const got = (await out.data()) as Float32Array;
        let maxRel = 0;
        for (let s = 0; s < 64; s++) {
          const i = (s * 7919) % n;
          const j = (s * 104729 + 13) % n;
          let r = 0;
          let scale = 0;
          for (let k = 0; k < n; k++) {
            r += ha[i * n + k] * ref[j * n + k];
            scale += Math.abs(ha[i * n + k] * ref[j * n + k]);
          }
          maxRel = Math.max(maxRel, Math.abs(got[i * n + j] - r) / scale);
        }
        const t = await timeIt(() => matmulWith(v, a, b, out));
        const flop = 2 * n ** 3;
        const row = { n, weights: wd, variant: label, config: v.config, wallMs: t.wallMs, gpuMs: t.gpuMs, gflopsWall: flop / t.wallMs / 1e6, gflopsGpu: t.gpuMs ? flop / t.gpuMs / 1e6 : null, maxRelErr: maxRel, iters: t.iters };
        rows.push(row);
        log(`matmul ${n} ${wd} ${label}: ${row.gflopsWall.toFixed(0)} GFLOP/s wall${row.gflopsGpu ? `, ${row.gflopsGpu.toFixed(0)} GPU` : ''}, rel err ${maxRel.toExponential(1)}`);
      }
      for (const x of [a, w, b, out]) x.dispose();
    }
  }
});

// ---- host cost ---------------------------------------------------------------------------------

await section('host cost per dispatch', 20e3, async (rows) => {
  const x = uhd.randn([256], { device: 'webgpu' });
  await c.sync();
  for (const n of [200, 2000]) {
    const s0 = c.stats.submitMs;
    const t = performance.now();
    for (let i = 0; i < n; i++) x.add(x).dispose();
    const queued = performance.now() - t - (c.stats.submitMs - s0);
    await c.sync();
    rows.push({ what: `${n} tiny adds queued`, hostUsPerDispatch: (1e3 * queued) / n });
  }
  x.dispose();
  if (DRY && process.env.BENCH_HEAVY !== '1') {
    rows.push({ what: 'train step', skipped: 'dry run (BENCH_HEAVY=1 includes it; ~2 min on llvmpipe)' });
    return;
  }
  const train = await trainStepFixture();
  const steps = [];
  for (let i = 0; i < (DRY ? 2 : 4); i++) steps.push(await train.step(i));
  train.dispose();
  const later = steps.slice(1);
  rows.push({
    what: 'train step, tiny-demo stage 2 (median after a warm-up step)',
    dispatches: median(later.map((r) => r.dispatches)),
    wallMs: median(later.map((r) => r.wallMs)),
    hostMs: median(later.map((r) => r.hostMs)),
    hostUsPerDispatch: median(later.map((r) => r.hostUsPerDispatch)),
    bindGroupsCreated: median(later.map((r) => r.bindGroupsCreated)),
  });
  for (const r of rows) log(`host: ${JSON.stringify(r)}`);
});

// ---- attention ------------------------------------------------------------------------------------

await section('attention at the ViT shapes', 30e3, async (rows) => {
  const vit = CONFIGS['llava-uhd-v4'].vision_config;
  const H = DRY ? 2 : vit.num_attention_heads;
  const hd = DRY ? 16 : vit.hidden_size / vit.num_attention_heads;
  const perView = DRY ? 64 : 1024; // a 448x448 view: 32 x 32 patches
  for (const views of [1, 4]) {
    const S = views * perView;
    const q = uhd.randn([1, H, S, hd], { device: 'webgpu' });
    const k = uhd.randn([1, H, S, hd], { device: 'webgpu' });
    const v = uhd.randn([1, H, S, hd], { device: 'webgpu' });
    const g = uhd.randn([1, H, S, hd], { device: 'webgpu' });
    const seg = uhd.tensor([Array.from({ length: S }, (_, i) => Math.floor(i / perView))], { dtype: 'int32', device: 'webgpu' });
    const opts = views > 1 ? { segmentIds: seg } : {};
    const flopFwd = 4 * views * perView * perView * hd * H;
    const fwd = await timeIt(() => uhd.attention(q, k, v, opts).dispose());
    const bwd = await timeIt(() => {
      const r = uhd.attentionGrad(q, k, v, g, opts);
      for (const t of [r.gq, r.gk, r.gv]) t.dispose();
    });
    const ms = (t: { wallMs: number; gpuMs: number | null }) => t.gpuMs ?? t.wallMs;
    rows.push({ shape: [1, H, S, hd], views, fwdMs: ms(fwd), fwdWallMs: fwd.wallMs, fwdTflops: flopFwd / ms(fwd) / 1e9, bwdMs: ms(bwd), bwdWallMs: bwd.wallMs, bwdTflops: (2.5 * flopFwd) / ms(bwd) / 1e9 });
    log(`attention ${views} view(s) S=${S}: fwd ${ms(fwd).toFixed(2)} ms, bwd ${ms(bwd).toFixed(2)} ms`);
    for (const t of [q, k, v, g, seg]) t.dispose();
  }
});

// ---- ViT encode -------------------------------------------------------------------------------------

await section('ViT encode, D vs baseline', 60e3, async (rows) => {
  const paper: LlavaUHDConfig = { ...CONFIGS['llava-uhd-v4'], text_config: CONFIGS.tiny.text_config };
  const base = DRY ? CONFIGS.tiny : paper;
  const sides = DRY ? [224, 448] : [448, 1008];
  for (const side of sides) {
    const times: Record<string, number> = {};
    const flops: Record<string, number> = {};
    for (const variant of ['D', 'baseline'] as const) {
      if (left() < 30e3 && !DRY) break;
      const cfg: LlavaUHDConfig = { ...structuredClone(base), insert_layer_id: variant === 'D' ? base.insert_layer_id : null };
      const model = new LlavaUHD(cfg, { device: 'webgpu', empty: true });
      fillModel(model, 11);
      const px = uhd.randn([3, side, side], { device: 'webgpu' });
      const t = await timeIt(() => uhd.tidy(() => void ag.noGrad(() => model.encodeViews([px]).features)), DRY ? 20 : 500);
      times[variant] = t.gpuMs ?? t.wallMs;
      flops[variant] = 2 * viewFlops(cfg, { width: side, height: side }).visualEncoding;
      rows.push({ view: `${side}x${side}`, variant, width: cfg.vision_config.hidden_size, layers: cfg.vision_config.num_hidden_layers, k: cfg.insert_layer_id, ms: times[variant], wallMs: t.wallMs, gflop: flops[variant] / 1e9, tflops: flops[variant] / times[variant] / 1e9 });
      log(`vit ${side} ${variant}: ${times[variant].toFixed(1)} ms (${(flops[variant] / 1e9).toFixed(0)} GFLOP)`);
      px.dispose();
      for (const p of model.parameters()) p.dispose();
      c.trimPool();
    }
    if (times.D && times.baseline) rows.push({ view: `${side}x${side}`, flopsRatio: flops.baseline / flops.D, measuredRatio: times.baseline / times.D });
  }
});

// ---- LLM prefill and decode -------------------------------------------------------------------------

await section('Qwen3-8B-shaped LLM, bf16 weights', 90e3, async (rows) => {
  const cfg = DRY ? CONFIGS.tiny.text_config : CONFIGS['llava-uhd-v4'].text_config;
  const t0 = performance.now();
  const lm = new CausalLM(cfg, { device: 'webgpu', empty: true, weightDtype: 'bfloat16' });
  fillModel(lm, 21);
  await c.sync();
  const buildMs = performance.now() - t0;
  const params = lm.parameters().reduce((n, p) => n + p.size, 0);
  const prefill = DRY ? 32 : 512;
  const decode = DRY ? 4 : 32;
  for (let rep = 0; rep < (DRY ? 1 : 2); rep++) {
    const caches = cfg.num_hidden_layers ? Array.from({ length: cfg.num_hidden_layers }, () => new KVCache()) : [];
    const ids = uhd.tensor([Array.from({ length: prefill }, (_, i) => (i * 7919) % cfg.vocab_size)], { dtype: 'int32', device: 'webgpu' });
    let t = performance.now();
    let next = ag.noGrad(() => uhd.tidy(() => {
      const h = lm.model.forward(lm.model.embed_tokens.forward(ids), { caches });
      return uhd.argmax(lm.logits(h.narrow(1, prefill - 1, 1)), -1); // the LM head on the last token, as generation does
    }));
    await next.data();
    const prefillMs = performance.now() - t;
    t = performance.now();
    for (let s = 0; s < decode; s++) {
      const prev = next;
      next = ag.noGrad(() => uhd.tidy(() => uhd.argmax(lm.forward(prev.reshape([1, 1]), { caches }), -1)));
      await next.data(); // each token waits for the previous one, as sampling does
      prev.dispose();
    }
    const decodeMs = performance.now() - t;
    rows.push({ config: DRY ? 'tiny' : 'Qwen3-8B', params, buildMs, prefillTokens: prefill, prefillMs, prefillTokensPerS: (1e3 * prefill) / prefillMs, decodeTokens: decode, decodeMs, decodeTokensPerS: (1e3 * decode) / decodeMs, rep });
    log(`llm: prefill ${prefill} tokens ${prefillMs.toFixed(0)} ms (${((1e3 * prefill) / prefillMs).toFixed(0)} tok/s), decode ${((1e3 * decode) / decodeMs).toFixed(1)} tok/s`);
    next.dispose();
    ids.dispose();
    for (const kv of caches) kv.dispose();
  }
  for (const p of lm.parameters()) p.dispose();
  c.trimPool();
});

// ---- subgroups -----------------------------------------------------------------------------------------

await section('subgroup reduction check', 5e3, async (rows) => {
  const offered = c.device.features.has('subgroups');
  if (!offered) {
    rows.push({ offered: false, note: 'no subgroups on this adapter: the subgroup path is not compiled' });
    return;
  }
  const x = uhd.tensor(hostValues(4 * 200_000, 5), { shape: [4, 200_000], device: 'webgpu' });
  const withSg = await uhd.sum(x, -1).data();
  c.tuning.subgroups = false;
  const without = await uhd.sum(x, -1).data();
  c.tuning.subgroups = true;
  const maxDiff = Math.max(...Array.from(withSg, (v, i) => Math.abs(v - without[i])));
  rows.push({ offered: true, maxAbsDiff: maxDiff, ok: maxDiff < 1e-2 });
  x.dispose();
});

// ---- report -------------------------------------------------------------------------------------------

report.meta.seconds = (performance.now() - T0) / 1e3;
report.meta.loadavgAfter = os.loadavg();
timer.dispose();
shutdown();

const slug = DRY ? 'dry' : `${info.vendor || 'gpu'}-${info.device || info.description}`.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40);
const outDir = process.env.BENCH_OUT ?? join('bench', 'results'); // run from the repo root
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, `gpu-${slug}.json`), JSON.stringify(report, null, 1) + '\n');
writeFileSync(join(outDir, `gpu-${slug}.md`), markdown(report));
log(`wrote ${join(outDir, `gpu-${slug}.{md,json}`)} in ${(report.meta.seconds as number).toFixed(0)} s`);

function markdown(r: typeof report): string {
  const m = r.meta as Record<string, unknown> & { adapter: Record<string, unknown> };
  const out = [`# GPU benchmark${DRY ? ' (dry run)' : ''}`, '', `${m.date} · ${m.host} · ${m.timing}`, '',
    `adapter: ${m.adapter.backend}/${m.adapter.featureLevel} ${m.adapter.description} (${m.adapter.vendor} ${m.adapter.architecture})`,
    `features: ${(m.features as string[]).join(', ') || '-'}; limits: ${JSON.stringify(m.limits)}`, ''];
  for (const [name, rows] of Object.entries(r.sections)) {
    out.push(`## ${name}`, '');
    const list = Array.isArray(rows) ? rows : [rows];
    if (list.length === 0) continue;
    const keys = [...new Set(list.flatMap((x) => Object.keys(x)))];
    out.push(`| ${keys.join(' | ')} |`, `|${keys.map(() => '---').join('|')}|`);
    for (const x of list) out.push(`| ${keys.map((k) => cell(x[k])).join(' | ')} |`);
    out.push('');
  }
  return out.join('\n');
}

function cell(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : Math.abs(v) < 1e-2 ? v.toExponential(2) : v.toFixed(2);
  return (typeof v === 'string' ? v : JSON.stringify(v)).replace(/\|/g, '\\|');
}
