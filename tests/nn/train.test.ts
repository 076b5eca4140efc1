/** Training works end to end: an MLP classifies, a tiny transformer memorises, resume is exact. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as nn from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { useDevice } from '../support.js';

// training on wasm (fast on any CPU) against the CPU reference; WebGPU's loss curve is checked
// against the CPU's for a few steps
useDevice('wasm');
useDevice('webgpu');
const dir = mkdtempSync(join(tmpdir(), 'uhd-train-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// ---- an MLP on three Gaussian blobs ----------------------------------------------------------

async function blobs(n: number, seed: number): Promise<{ x: Float32Array; y: Int32Array }> {
  uhd.manualSeed(seed);
  const centres = [[2, 0], [-1, 1.7], [-1, -1.7]];
  const noise = uhd.randn([n, 2]);
  const pick = uhd.rand([n]);
  const x = new Float32Array(n * 2);
  const y = new Int32Array(n);
  const [e, u] = [await noise.data(), await pick.data()];
  for (let i = 0; i < n; i++) {
    const c = Math.floor(u[i] * 3);
    y[i] = c;
    x[2 * i] = centres[c][0] + 0.6 * e[2 * i];
    x[2 * i + 1] = centres[c][1] + 0.6 * e[2 * i + 1];
  }
  noise.dispose();
  pick.dispose();
  return { x, y };
}

class Classifier extends nn.Module {
  l1: nn.Linear;
  l2: nn.Linear;
  constructor(device: Device) {
    super();
    this.l1 = this.module('l1', new nn.Linear(2, 32, { device }));
    this.l2 = this.module('l2', new nn.Linear(32, 3, { device }));
  }
  forward(x: Tensor): Tensor {
    return this.l2.forward(ag.relu(this.l1.forward(x)));
  }
}

async function trainClassifier(device: Device): Promise<number> {
  const train = await blobs(512, 1);
  const test = await blobs(256, 2);
  uhd.manualSeed(3);
  const model = new Classifier(device);
  const opt = new nn.AdamW(model.parameters(), { lr: 0.02 });
  const x = uhd.tensor(train.x, { shape: [512, 2], device });
  const y = uhd.tensor(train.y, { device });
  for (let step = 0; step < 60; step++) {
    uhd.tidy(() => {
      nn.crossEntropy(model.forward(x), y).backward();
      opt.step();
      opt.zeroGrad();
      return undefined;
    });
  }
  const pred = ag.noGrad(() => model.forward(uhd.tensor(test.x, { shape: [256, 2], device })).argmax(-1));
  const p = Array.from(await pred.data());
  const acc = p.reduce((n, v, i) => n + (v === test.y[i] ? 1 : 0), 0) / 256;
  for (const t of [pred, x, y]) t.dispose();
  opt.dispose();
  model.dispose();
  return acc;
}

describe('a two-layer MLP learns three blobs', () => {
  for (const device of ['cpu', 'wasm'] as const) {
    it(`to >= 95% test accuracy on ${device}`, async () => {
      expect(await trainClassifier(device)).toBeGreaterThanOrEqual(0.95);
    });
  }
});

// ---- a two-layer transformer memorises a corpus --------------------------------------------

const CORPUS = 'the quick brown fox jumps over the lazy dog; the dog sleeps.';
const VOCAB = [...new Set(CORPUS)].sort();
const IDS = [...CORPUS].map((ch) => VOCAB.indexOf(ch));
const CONFIG: nn.DecoderConfig = {
  vocab_size: VOCAB.length,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  rope_theta: 1e4,
  tie_word_embeddings: true,
  initializer_range: 0.3,
};

interface Run {
  model: nn.CausalLM;
  opt: nn.AdamW;
  sched: nn.LRScheduler;
  input: Tensor;
  target: Tensor;
}

function setup(device: Device, seed = 7): Run {
  uhd.manualSeed(seed);
  const model = new nn.CausalLM(CONFIG, { device });
  const opt = new nn.AdamW(nn.paramGroups(model.namedParameters(), { weightDecay: 0.01 }), { lr: 0.01, betas: [0.9, 0.98] });
  const sched = new nn.LRScheduler(opt, nn.warmupCosine({ peak: 0.01, min: 0.002, warmupSteps: 5, totalSteps: 150 }));
  const input = uhd.tensor([IDS.slice(0, -1)], { dtype: 'int32', device });
  const target = uhd.tensor(IDS.slice(1), { dtype: 'int32', device });
  return { model, opt, sched, input, target };
}

/** One optimizer step; returns the loss before the update. */
async function step(r: Run): Promise<number> {
  const loss = uhd.tidy(() => {
    const logits = r.model.forward(r.input);
    const l = nn.crossEntropy(ag.reshape(logits, [-1, VOCAB.length]), r.target);
    l.backward();
    nn.clipGradNorm(r.model.parameters(), 1.0).dispose();
    r.opt.step();
    r.opt.zeroGrad();
    r.sched.step();
    return l;
  });
  const v = await loss.item();
  loss.dispose();
  return v;
}

function teardown(r: Run): void {
  r.opt.dispose();
  r.model.dispose();
  r.input.dispose();
  r.target.dispose();
}

describe('a two-layer transformer language model memorises a short corpus', () => {
  for (const device of ['cpu', 'wasm'] as const) {
    it(`loss falls below 0.1 nats on ${device}`, async () => {
      const r = setup(device);
      const losses: number[] = [];
      for (let i = 0; i < 150; i++) losses.push(await step(r));
      teardown(r);
      expect(losses[0]).toBeGreaterThan(2);
      expect(losses[losses.length - 1]).toBeLessThan(0.1);
    });
  }

  for (const device of ['wasm', 'webgpu'] as const) {
    it(`${device} and CPU loss curves agree for the first steps`, async () => {
      const cpu = setup('cpu');
      const dev = setup(device);
      for (let i = 0; i < 8; i++) {
        const [a, b] = [await step(cpu), await step(dev)];
        expect(Math.abs(a - b)).toBeLessThan(2e-3 * Math.max(1, a));
      }
      teardown(cpu);
      teardown(dev);
    });
  }
});

describe('resume from a checkpoint reproduces the uninterrupted run', () => {
  for (const [device, tol] of [['cpu', 0], ['wasm', 0]] as const) {
    it(`on ${device} (${tol === 0 ? 'exactly' : `within ${tol}`})`, async () => {
      const full = setup(device);
      const losses: number[] = [];
      for (let i = 0; i < 10; i++) losses.push(await step(full));
      teardown(full);

      const first = setup(device);
      for (let i = 0; i < 5; i++) await step(first);
      const path = join(dir, `ckpt-${device}.safetensors`);
      await nn.saveCheckpoint(path, { model: first.model, optimizer: first.opt, scheduler: first.sched, step: 5 });
      teardown(first);

      const resumed = setup(device, 999); // different init: everything must come from the file
      const { step: at } = await nn.loadCheckpoint(path, { model: resumed.model, optimizer: resumed.opt, scheduler: resumed.sched });
      expect(at).toBe(5);
      for (let i = 5; i < 10; i++) {
        const l = await step(resumed);
        if (tol === 0) expect(l).toBe(losses[i]);
        else expect(Math.abs(l - losses[i])).toBeLessThan(tol * Math.max(1, losses[i]));
      }
      teardown(resumed);
    });
  }
});
