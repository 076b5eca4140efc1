/**
 * `npx tsx bench/host-cost/ops.ts [--reps N] [--only null|cpu|webgpu] [--filter REGEX] [--json FILE]`: host µs
 * per call of the front-end operations a training step is made of, done the way a step does
 * them (with the autograd layer loaded, so Tensor's methods go through the recording op table):
 * views, tensor creation and dispose, tidy scopes, recorded binary ops and matmul, and a
 * backward over a small graph. Each row is the median over N samples of a batch of calls, on:
 *   null    a backend that does no work (./null-backend.ts): the tensor/ and autograd/ layers alone;
 *   cpu     the reference backend (its kernels' time included);
 *   webgpu  less the time inside `queue.submit` (gpuContext().stats.submitMs), where Dawn's GL
 *           backend runs the kernels: our JavaScript, all layers, and Dawn's encoding calls.
 *
 * For before/after comparisons run it alternately from two trees (the machine is noisy), and
 * note the load average that it prints.
 */
import os from 'node:os';
import { writeFileSync } from 'node:fs';
import * as ag from '../../autograd/index.js';
import { gpuContext, initWebGPU, shutdown } from '../../kernels/index.js';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { trainStepFixture } from './measure.js';
import { NULL_DEVICE, openNullDevice } from './null-backend.js';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const REPS = Number(opt('--reps') ?? 15);
const ONLY = opt('--only') as Device | undefined;
const JSON_OUT = opt('--json');
/** Only the cases whose name matches this regular expression (to profile one). */
const FILTER = opt('--filter') ?? '';

/** One operation: `setup` makes its inputs (untimed), `run(i)` is one call, `after` cleans up (untimed). */
interface Case {
  name: string;
  /** Calls per sample. */
  batch: number;
  /** What one call is; the table's µs are per this. */
  per?: string;
  setup: (device: Device) => { run: (i: number) => void; after: () => void };
}

const f32 = (device: Device, shape: number[], grad = false): Tensor => {
  const t = uhd.randn(shape, { device });
  return grad ? t.requiresGrad_() : t;
};

/** Calls `make` batch times into `out`, returns nothing; the results are disposed untimed. */
function viewCase(name: string, grad: boolean, shape: number[], make: (x: Tensor) => Tensor): Case {
  return {
    name: `${name}${grad ? ' (records)' : ''}`,
    batch: 400,
    setup: (device) => {
      const x = f32(device, shape, grad);
      const out: Tensor[] = [];
      return {
        run: () => void out.push(make(x)),
        after: () => {
          for (const t of out) t.dispose();
          out.length = 0;
          x.dispose();
        },
      };
    },
  };
}

const ALL_CASES: Case[] = [
  viewCase('reshape [8,16,32] -> [128,32]', false, [8, 16, 32], (x) => x.reshape(128, 32)),
  viewCase('reshape [8,16,32] -> [128,32]', true, [8, 16, 32], (x) => x.reshape(128, 32)),
  viewCase('reshape [8,16,32] -> [-1,4,8]', true, [8, 16, 32], (x) => x.reshape(-1, 4, 8)),
  viewCase('permute [8,16,32] (0,2,1)', false, [8, 16, 32], (x) => x.permute(0, 2, 1)),
  viewCase('permute [8,16,32] (0,2,1)', true, [8, 16, 32], (x) => x.permute(0, 2, 1)),
  viewCase('transpose [64,32]', true, [64, 32], (x) => x.transpose()),
  viewCase('slice [64,32] (null, [4,20])', true, [64, 32], (x) => x.slice(null, [4, 20])),
  viewCase('narrow [64,32] (1, 4, 16)', true, [64, 32], (x) => x.narrow(1, 4, 16)),
  viewCase('expand [1,32] -> [64,32]', true, [1, 32], (x) => x.expand(64, 32)),
  viewCase('unsqueeze [64,32] (0)', false, [64, 32], (x) => x.unsqueeze(0)),
  viewCase('unsqueeze [64,32] (0)', true, [64, 32], (x) => x.unsqueeze(0)),
  {
    name: 'Tensor.empty [64,32] + dispose',
    batch: 400,
    setup: (device) => ({ run: () => uhd.Tensor.empty([64, 32], 'float32', device).dispose(), after: () => {} }),
  },
  {
    name: 'asStrided view + dispose',
    batch: 400,
    setup: (device) => {
      const x = f32(device, [64, 32]);
      return { run: () => x.asStrided(x.shape, x.strides, x.offset).dispose(), after: () => x.dispose() };
    },
  },
  {
    name: 'dispose of a view',
    batch: 400,
    per: 'dispose',
    setup: (device) => {
      // the views are made in setup: only their disposal is timed
      const x = f32(device, [64, 32]);
      const views = Array.from({ length: 400 }, () => x.asStrided(x.shape, x.strides, x.offset));
      return {
        run: (i) => views[i].dispose(),
        after: () => x.dispose(),
      };
    },
  },
  {
    name: 'tidy of 32 views (per tensor)',
    batch: 20,
    per: 'tensor',
    setup: (device) => {
      const x = f32(device, [64, 32]);
      return {
        run: () =>
          uhd.tidy(() => {
            for (let k = 0; k < 32; k++) x.asStrided(x.shape, x.strides, x.offset);
          }),
        after: () => x.dispose(),
      };
    },
  },
  ...(['add', 'mul'] as const).map((op): Case => ({
    name: `ag.${op} [64,32] + [32] (records)`,
    batch: 200,
    setup: (device) => {
      const a = f32(device, [64, 32], true);
      const b = f32(device, [32], true);
      const out: Tensor[] = [];
      return {
        run: () => void out.push(ag[op](a, b)),
        after: () => {
          for (const t of out) t.dispose();
          out.length = 0;
          a.dispose();
          b.dispose();
        },
      };
    },
  })),
  {
    name: 'uhd.add [64,32] + [32] (plain)',
    batch: 200,
    setup: (device) => {
      const a = f32(device, [64, 32]);
      const b = f32(device, [32]);
      const out: Tensor[] = [];
      return {
        run: () => void out.push(uhd.add(a, b)),
        after: () => {
          for (const t of out) t.dispose();
          out.length = 0;
          a.dispose();
          b.dispose();
        },
      };
    },
  },
  ...([
    ['uhd.sum [64,32] over dim 1', [64, 32], [1]],
    // a bias gradient: leading dims of a [B*T, d] activation (sumTo), split into two stages
    ['uhd.sum [4096,64] over dim 0', [4096, 64], [0]],
  ] as const).map(([name, shape, dims]) => ({
    name,
    batch: 200,
    setup: (device: Device) => {
      const a = f32(device, [...shape]);
      const out: Tensor[] = [];
      return {
        run: () => void out.push(uhd.sum(a, [...dims])),
        after: () => {
          for (const t of out) t.dispose();
          out.length = 0;
          a.dispose();
        },
      };
    },
  })),
  {
    name: 'ag.matmul [64,32] @ [32,32] (records)',
    batch: 200,
    setup: (device) => {
      const a = f32(device, [64, 32], true);
      const w = f32(device, [32, 32], true);
      const out: Tensor[] = [];
      return {
        run: () => void out.push(ag.matmul(a, w)),
        after: () => {
          for (const t of out) t.dispose();
          out.length = 0;
          a.dispose();
          w.dispose();
        },
      };
    },
  },
  {
    name: 'forward of a 20-op graph',
    batch: 10,
    per: 'graph',
    setup: (device) => graphCase(device, 'forward'),
  },
  {
    name: 'backward() of a 20-op graph',
    batch: 10,
    per: 'backward',
    setup: (device) => graphCase(device, 'backward'),
  },
];

const CASES = ALL_CASES.filter((c) => new RegExp(FILTER).test(c.name));

/**
 * A small MLP-block-like graph of 20 recorded ops (matmuls, views, elementwise, a norm and a
 * reduction). 'forward' times building it; 'backward' builds it untimed and times backward().
 */
function graphCase(device: Device, part: 'forward' | 'backward'): { run: (i: number) => void; after: () => void } {
  const x = f32(device, [2, 16, 32], true);
  const w1 = f32(device, [32, 64], true);
  const w2 = f32(device, [64, 32], true);
  const g = f32(device, [32], true);
  const params = [x, w1, w2, g];
  const forward = (): Tensor => {
    const h = x.reshape(32, 32); // 1
    const n = ag.rmsNorm(h, g); // 2
    const a = n.matmul(w1); // 3
    const s = a.silu(); // 4
    const m = s.mul(a); // 5
    const b = m.matmul(w2); // 6
    const r = b.add(h); // 7
    const v = r.reshape(2, 16, 32); // 8
    const t = v.transpose(1, 2); // 9
    const c = t.contiguous(); // 10
    const u = c.unsqueeze(0); // 11
    const e = u.squeeze(0); // 12
    const p = e.permute(0, 2, 1); // 13
    const q = p.mul(0.5); // 14
    const k = q.sub(v); // 15
    const sl = k.slice(null, [0, 8]); // 16
    const l = sl.exp(); // 17
    const z = l.mean(-1); // 18
    const y = z.mul(z); // 19
    return y.sum(); // 20
  };
  // for 'backward' the graphs are built here, untimed
  let built: Tensor[] = part === 'backward' ? Array.from({ length: 10 }, () => uhd.tidy(forward)) : [];
  return {
    run: (i) => {
      if (part === 'forward') built.push(uhd.tidy(forward));
      else built[i].backward();
    },
    after: () => {
      for (const t of built) t.dispose();
      built = [];
      ag.zeroGrad(params);
      for (const p of params) p.dispose();
    },
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function measureCase(c: Case, device: Device, reps = REPS): Promise<{ us: number; dispatches: number }> {
  const gpu = device === 'webgpu' ? gpuContext() : null;
  const samples: number[] = [];
  let dispatches = 0;
  for (let rep = -2; rep < reps; rep++) {
    const { run, after } = c.setup(device);
    await gpu?.sync();
    const submit0 = gpu?.stats.submitMs ?? 0;
    const disp0 = gpu?.stats.dispatches ?? 0;
    const t0 = performance.now();
    for (let i = 0; i < c.batch; i++) run(i);
    const t1 = performance.now();
    const submitMs = (gpu?.stats.submitMs ?? 0) - submit0;
    const d = (gpu?.stats.dispatches ?? 0) - disp0;
    after();
    await gpu?.sync();
    if (rep < 0) continue; // warm-up: pipelines compile, the JIT settles
    const per = c.per === 'tensor' ? c.batch * 32 : c.batch;
    samples.push((1e3 * (t1 - t0 - submitMs)) / per);
    dispatches = d / c.batch;
  }
  return { us: median(samples), dispatches };
}

const STEP_NAME = 'training step, tiny-demo stage 2 (nn/, llava-uhd/ too)';
const devices: Device[] = ONLY ? [ONLY] : [NULL_DEVICE, 'cpu', 'webgpu'];
/** The main job's training step, on the null device only (elsewhere its kernels dominate: bench:host). */
const stepOnNull = devices.includes(NULL_DEVICE) && new RegExp(FILTER).test(STEP_NAME);
openNullDevice();
// the step's fixture measures through the WebGPU runtime's counters (zero on the null device)
if (devices.includes('webgpu') || stepOnNull) await initWebGPU();

/** ms per training step of the main job's model on the null device: median of `reps` after 2 warm-ups. */
async function measureStep(reps: number): Promise<number> {
  const fixture = await trainStepFixture(CONFIGS.tiny, NULL_DEVICE);
  const samples: number[] = [];
  try {
    for (let i = -2; i < reps; i++) {
      const batch = fixture.prepare(i + 2); // data loading, untimed
      const r = await fixture.run(batch);
      if (i >= 0) samples.push(r.wallMs);
    }
  } finally {
    fixture.dispose();
  }
  return median(samples);
}
const load0 = os.loadavg();
const rows: { name: string; per: string; us: Partial<Record<Device, number>>; dispatches?: number }[] = [];
try {
  // one untimed pass over everything first, so that no case pays for the JIT warming the code it shares with later ones
  for (const c of CASES) for (const d of devices) await measureCase(c, d, 1);
  for (const c of CASES) {
    const row: (typeof rows)[number] = { name: c.name, per: c.per ?? 'call', us: {} };
    for (const d of devices) {
      const r = await measureCase(c, d);
      row.us[d] = r.us;
      if (d === 'webgpu') row.dispatches = r.dispatches;
    }
    rows.push(row);
  }
  if (stepOnNull) rows.push({ name: STEP_NAME, per: 'step', us: { [NULL_DEVICE]: 1e3 * (await measureStep(REPS)) } });
} finally {
  if (devices.includes('webgpu') || stepOnNull) shutdown();
}
const load1 = os.loadavg();

const pad = (s: string, n: number) => s.padEnd(n);
const num = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(2)).padStart(9);
console.log(`host µs per call (median of ${REPS}; webgpu excludes queue.submit); load ${load0.map((l) => l.toFixed(2)).join(' ')} -> ${load1.map((l) => l.toFixed(2)).join(' ')}`);
console.log(`${pad('operation', 44)} ${pad('per', 9)} ${devices.map((d) => d.padStart(9)).join(' ')}  dispatches`);
for (const r of rows) {
  console.log(`${pad(r.name, 44)} ${pad(r.per, 9)} ${devices.map((d) => num(r.us[d])).join(' ')}  ${r.dispatches === undefined ? '' : r.dispatches.toFixed(1)}`);
}
if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify({ load: [load0, load1], reps: REPS, rows }, null, 2));
