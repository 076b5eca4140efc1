import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import {
  AdamW,
  clipGradNorm,
  clipGradNormAsync,
  constant,
  flattenStateDict,
  isNoDecay,
  LLAVA_UHD_ADAMW,
  LRScheduler,
  paramGroups,
  SGD,
  unflattenStateDict,
  warmupCosine,
  type AdamWState,
} from '../../nn/optim.js';
import * as uhd from '../../tensor/index.js';
import type { Device, DType, Tensor } from '../../tensor/index.js';
import { expectClose, F32, useWebGPU, values } from '../support.js';

const F64 = { atol: 1e-14, rtol: 1e-12 };

const param = (data: ArrayLike<number>, shape: number[], device: Device = 'cpu', dtype: DType = device === 'cpu' ? 'float64' : 'float32') =>
  uhd.tensor(Float64Array.from(data), { shape, dtype, device }).requiresGrad_();

/** Sets p.grad to the given values (as backward would leave it). */
function setGrad(p: Tensor, data: ArrayLike<number>): void {
  p.grad?.dispose();
  p.grad = uhd.tensor(Float64Array.from(data), { shape: [...p.shape], dtype: p.dtype, device: p.device });
}

const read = async (t: Tensor) => Array.from(await t.data());

/** torch.optim.AdamW's update for one parameter, in float64, written out as PyTorch does it. */
class AdamWReference {
  m: number[];
  v: number[];
  t = 0;
  constructor(public p: number[], readonly h: { lr: number; beta1: number; beta2: number; eps: number; wd: number }) {
    this.m = p.map(() => 0);
    this.v = p.map(() => 0);
  }
  step(g: number[], lr = this.h.lr): void {
    const { beta1, beta2, eps, wd } = this.h;
    this.t++;
    const bc1 = 1 - beta1 ** this.t;
    const bc2 = 1 - beta2 ** this.t;
    const stepSize = lr / bc1;
    for (let i = 0; i < this.p.length; i++) {
      this.p[i] *= 1 - lr * wd;
      this.m[i] = beta1 * this.m[i] + (1 - beta1) * g[i];
      this.v[i] = beta2 * this.v[i] + (1 - beta2) * g[i] * g[i];
      const denom = Math.sqrt(this.v[i]) / Math.sqrt(bc2) + eps;
      this.p[i] -= (stepSize * this.m[i]) / denom;
    }
  }
}

/** torch.optim.SGD's update for one parameter, in float64. */
class SGDReference {
  buf: number[] | null = null;
  constructor(public p: number[], readonly h: { lr: number; momentum: number; dampening: number; wd: number; nesterov: boolean }) {}
  step(grad: number[]): void {
    const { lr, momentum, dampening, wd, nesterov } = this.h;
    let g = grad.map((gi, i) => gi + wd * this.p[i]);
    if (momentum !== 0) {
      const prev = this.buf;
      this.buf = prev ? prev.map((b, i) => momentum * b + (1 - dampening) * g[i]) : [...g];
      const buf = this.buf;
      g = nesterov ? g.map((gi, i) => gi + momentum * buf[i]) : buf;
    }
    this.p = this.p.map((pi, i) => pi - lr * g[i]);
  }
}

/** min ||A x - b||^2 with b = A x*, so the optimum is x* with loss 0. A: [8, 4], x: [4, 1]. */
async function trainQuadratic(device: Device, steps: number): Promise<{ x: number[]; xStar: number[]; first: number; last: number }> {
  const dtype: DType = device === 'cpu' ? 'float64' : 'float32';
  const a = Array.from(values(32, 11));
  const xStar = Array.from(values(4, 12));
  const b = Array.from({ length: 8 }, (_, r) => xStar.reduce((s, xi, c) => s + a[r * 4 + c] * xi, 0));
  const A = uhd.tensor(Float64Array.from(a), { shape: [8, 4], dtype, device });
  const B = uhd.tensor(Float64Array.from(b), { shape: [8, 1], dtype, device });
  const x = uhd.zeros([4, 1], { dtype, device }).requiresGrad_();
  const opt = new AdamW([x], { lr: 0.1, weightDecay: 0 });
  const sched = new LRScheduler(opt, warmupCosine({ peak: 0.1, min: 1e-3, warmupSteps: 10, totalSteps: steps }));
  const lossOf = () => {
    const r = A.matmul(x).sub(B);
    return r.mul(r).sum();
  };
  let first = 0;
  for (let i = 0; i < steps; i++) {
    const loss = lossOf();
    if (i === 0) first = await loss.item();
    loss.backward();
    loss.dispose();
    opt.step();
    opt.zeroGrad();
    sched.step();
  }
  const final = ag.noGrad(lossOf);
  const out = { x: await read(x), xStar, first, last: await final.item() };
  for (const t of [A, B, x, final]) t.dispose();
  opt.dispose();
  return out;
}

/** 50 training steps (tidy forward/backward, clip, step, zeroGrad, schedule): memory after step 1 equals after step 50. */
function expectFlatMemory(device: Device): void {
  const dtype: DType = device === 'cpu' ? 'float64' : 'float32';
  const x = uhd.tensor(values(12, 5), { shape: [2, 6], dtype, device });
  const w = param(values(30, 6), [6, 5], device, dtype);
  const bias = param(values(5, 7), [5], device, dtype);
  const opt = new AdamW(paramGroups([['proj.weight', w], ['proj.bias', bias]], { weightDecay: 0.01 }), { lr: 1e-2, ...LLAVA_UHD_ADAMW });
  const sched = new LRScheduler(opt, warmupCosine({ peak: 1e-2, min: 1e-3, warmupSteps: 5, totalSteps: 50 }));
  const trainStep = () => {
    uhd.tidy(() => {
      x.matmul(w).add(bias).tanh().pow(2).sum().backward();
      clipGradNorm(opt.params(), LLAVA_UHD_ADAMW.maxGradNorm); // the norm is disposed by tidy
      opt.step();
      opt.zeroGrad();
      sched.step();
    });
  };
  trainStep();
  const after1 = uhd.memory();
  for (let i = 1; i < 50; i++) trainStep();
  expect(uhd.memory()).toEqual(after1);
  expect(opt.state.size).toBe(2);
  for (const s of opt.state.values()) {
    expect(s.m.disposed || s.v.disposed).toBe(false);
    expect(s.step).toBe(50);
  }
  opt.dispose();
  for (const t of [x, w, bias]) t.dispose();
}

describe('AdamW', () => {
  it('one and several steps equal a float64 reference of torch.optim.AdamW, per group lr and weight decay', async () => {
    const h = { beta1: 0.9, beta2: 0.98, eps: 1e-8 };
    const w = param(values(6, 1), [2, 3]);
    const b = param(values(3, 2), [3]);
    const opt = new AdamW(
      [
        { params: [w], weightDecay: 0.1 },
        { params: [b], lr: 5e-3, weightDecay: 0 },
      ],
      { lr: 1e-2, betas: [h.beta1, h.beta2], eps: h.eps },
    );
    const refW = new AdamWReference(Array.from(values(6, 1)), { ...h, lr: 1e-2, wd: 0.1 });
    const refB = new AdamWReference(Array.from(values(3, 2)), { ...h, lr: 5e-3, wd: 0 });
    for (let step = 1; step <= 6; step++) {
      const gw = Array.from(values(6, 100 + step, -2, 2));
      const gb = Array.from(values(3, 200 + step, -2, 2));
      setGrad(w, gw);
      setGrad(b, gb);
      opt.step();
      refW.step(gw);
      refB.step(gb);
      expectClose(await read(w), refW.p, F64, `w after step ${step}`);
      expectClose(await read(b), refB.p, F64, `b after step ${step}`);
      const sw = opt.state.get(w)!;
      expect(sw.step).toBe(step);
      expectClose(await read(sw.m), refW.m, F64, 'm');
      expectClose(await read(sw.v), refW.v, F64, 'v');
    }
    expect(opt.stepCount).toBe(6);
  });

  it('applies weight decay only to decay groups (a zero gradient leaves p(1 - lr wd) or p)', async () => {
    const w = param([1, -2, 3, 4], [2, 2]);
    const n = param([1, -2], [2]);
    const opt = new AdamW(paramGroups([['layer.weight', w], ['layer.norm.weight', n]], { weightDecay: 0.1 }), { lr: 0.5 });
    expect(opt.groups.map((g) => [g.name, g.weightDecay])).toEqual([['decay', 0.1], ['no_decay', 0]]);
    setGrad(w, [0, 0, 0, 0]);
    setGrad(n, [0, 0]);
    opt.step();
    expect(await read(w)).toEqual([1, -2, 3, 4].map((x) => x * (1 - 0.5 * 0.1)));
    expect(await read(n)).toEqual([1, -2]);
  });

  it('scales each group lr by its lrScale (first Adam step moves each element by lr * scale)', async () => {
    const llm = param([0, 0, 0], [3]);
    const vit = param([0, 0, 0], [3]);
    const groups = paramGroups([['model.layers.0.mlp.up_proj.bias', llm], ['vision_model.head.bias', vit]], {
      weightDecay: 0,
      lrScale: (name) => (name.startsWith('model.') ? 1 : LLAVA_UHD_ADAMW.nonLlmLrScale),
    });
    const opt = new AdamW(groups, { lr: 1e-2, eps: 0 });
    expect(opt.groups.map((g) => [g.name, g.lr, g.lrScale])).toEqual([['no_decay', 1e-2, 1], ['no_decay x0.2', 1e-2 * 0.2, 0.2]]);
    const sched = new LRScheduler(opt, constant(3e-2));
    expect(opt.groups.map((g) => g.lr)).toEqual([3e-2, 3e-2 * 0.2]);
    setGrad(llm, [1, -2, 0.5]);
    setGrad(vit, [1, -2, 0.5]);
    opt.step();
    // with eps 0 the first update is lr * sign(g)
    expectClose(await read(llm), [-3e-2, 3e-2, -3e-2], F64);
    expectClose(await read(vit), [-6e-3, 6e-3, -6e-3], F64);
    expect(sched.lastStep).toBe(0);
  });

  it('frozen parameters (requiresGrad false, or no grad) are skipped and get no state', async () => {
    const live = param([1, 2], [2]);
    const frozen = param([3, 4], [2]);
    const noGrad = param([5, 6], [2]);
    frozen.requiresGrad = false;
    setGrad(live, [1, 1]);
    setGrad(frozen, [1, 1]); // a stale grad on a parameter frozen since
    const opt = new AdamW([live, frozen, noGrad], { lr: 0.1 });
    opt.step();
    expect(opt.state.has(live)).toBe(true);
    expect(opt.state.has(frozen)).toBe(false);
    expect(opt.state.has(noGrad)).toBe(false);
    expect(await read(frozen)).toEqual([3, 4]);
    expect(await read(noGrad)).toEqual([5, 6]);
    expect(Object.keys(opt.stateDict().state)).toEqual(['0']);
    // paramGroups leaves frozen parameters out altogether
    expect(paramGroups([['a.weight', live], ['b.weight', frozen]], { weightDecay: 0.01 }).flatMap((g) => g.params)).toEqual([live]);
  });

  it('keeps its state out of an enclosing tidy', async () => {
    const p = param([1, 2, 3], [3]);
    const opt = new AdamW([p], { lr: 0.1 });
    uhd.tidy(() => {
      p.mul(p).sum().backward();
      opt.step();
      opt.zeroGrad();
    });
    const s = opt.state.get(p)!;
    expect(s.m.disposed || s.v.disposed).toBe(false);
    expect((await read(s.m)).every((x) => x !== 0)).toBe(true);
  });

  it('stateDict / loadStateDict round trip gives identical subsequent updates (also through flat tensors)', async () => {
    const make = () => [param(values(6, 31), [2, 3]), param(values(2, 32), [2])];
    const build = (ps: Tensor[]) => new AdamW(paramGroups([['l.weight', ps[0]], ['l.bias', ps[1]]], { weightDecay: 0.05 }), { lr: 1e-2, ...LLAVA_UHD_ADAMW });
    const grads = (step: number) => [Array.from(values(6, 300 + step)), Array.from(values(2, 400 + step))];
    const a = make();
    const optA = build(a);
    for (let s = 0; s < 3; s++) {
      grads(s).forEach((g, i) => setGrad(a[i], g));
      optA.step();
    }
    const sd = optA.stateDict();
    expect(sd.step).toBe(3);
    expect(sd.groups.map((g) => [g.name, g.weightDecay, g.params])).toEqual([['decay', 0.05, [0]], ['no_decay', 0, [1]]]);
    expect(Object.keys(sd.state)).toEqual(['0', '1']);
    const { tensors, meta } = flattenStateDict(sd);
    expect(Object.keys(tensors).sort()).toEqual(['state.0.m', 'state.0.v', 'state.1.m', 'state.1.v']);
    const sd2 = unflattenStateDict<AdamWState>(tensors, meta);

    const b = make();
    for (let i = 0; i < 2; i++) uhd.assign(b[i], a[i]);
    const optB = build(b);
    optB.loadStateDict(sd2);
    expect(optB.stepCount).toBe(3);
    expect(optB.state.get(b[0])!.step).toBe(3);
    expect(optB.state.get(b[0])!.m).not.toBe(optA.state.get(a[0])!.m); // copied, not shared
    for (let s = 3; s < 6; s++) {
      grads(s).forEach((g, i) => {
        setGrad(a[i], g);
        setGrad(b[i], g);
      });
      optA.step();
      optB.step();
    }
    for (let i = 0; i < 2; i++) expect(await read(b[i])).toEqual(await read(a[i]));
  });

  it('loadStateDict rejects mismatched state with clear errors and leaves the optimizer as it was', () => {
    const p = param(values(6, 1), [2, 3]);
    const opt = new AdamW([{ params: [p], paramNames: ['l.weight'] }], { lr: 1 });
    setGrad(p, values(6, 2));
    opt.step();
    const good = opt.stateDict();
    const m = opt.state.get(p)!.m;
    const wrong = uhd.zeros([3], { dtype: 'float64' });
    expect(() => opt.loadStateDict({ ...good, state: { 0: { step: 1, m: wrong, v: m } } })).toThrow(
      "AdamW.loadStateDict: state of parameter 0 ('l.weight') [2,3]: m has shape [3], the parameter [2,3]",
    );
    expect(() => opt.loadStateDict({ ...good, state: { 5: { step: 1, m, v: m } } })).toThrow(
      'AdamW.loadStateDict: state for parameter 5, but there are 1 parameters',
    );
    expect(() => opt.loadStateDict({ ...good, groups: [] })).toThrow('AdamW.loadStateDict: the state has 0 groups, this optimizer 1');
    expect(() => opt.loadStateDict({ ...good, state: { 0: { step: 1, m } as unknown as AdamWState } })).toThrow(
      "AdamW.loadStateDict: state of parameter 0 ('l.weight') [2,3] lacks v",
    );
    expect(opt.state.get(p)!.m).toBe(m);
    expect(m.disposed).toBe(false);
    wrong.dispose();
  });

  it('validates its inputs where they enter', () => {
    const p = param(values(6, 1), [2, 3]);
    expect(() => new AdamW([p.transpose()], { lr: 1 })).toThrow("AdamW: group 'group0' parameter 0 [3,2] is a strided view; parameters must be contiguous");
    expect(() => new AdamW([{ params: [p] }, { params: [p] }], { lr: 1 })).toThrow('appears in more than one place');
    expect(() => new AdamW([p], { lr: 1, betas: [0.9, 1] })).toThrow('AdamW: beta2 is 1, expected a number in [0, 1)');
    expect(() => new AdamW([p], { lr: -1 })).toThrow('AdamW: lr is -1, expected a finite number >= 0');
    expect(() => new AdamW([uhd.zeros([2], { dtype: 'int32' })], { lr: 1 })).toThrow('only float parameters can be optimized');
  });

  it('minimises ||Ax - b||^2 on the CPU', async () => {
    const r = await trainQuadratic('cpu', 200);
    expect(r.last).toBeLessThan(1e-4 * r.first);
    expectClose(r.x, r.xStar, { atol: 1e-2, rtol: 0 });
  });

  it('holds memory flat over 50 training steps on the CPU', () => {
    expectFlatMemory('cpu');
  });
});

describe('paramGroups', () => {
  it('puts biases, norms and 1-d tensors in no_decay by default, with an overridable rule', () => {
    const p2 = () => uhd.zeros([2, 2]).requiresGrad_();
    const p1 = () => uhd.zeros([2]).requiresGrad_();
    const named: [string, Tensor][] = [
      ['model.layers.0.self_attn.q_proj.weight', p2()],
      ['model.layers.0.self_attn.q_proj.bias', p1()],
      ['model.layers.0.input_layernorm.weight', p1()],
      ['model.layers.0.self_attn.q_norm.weight', p2()],
      ['vision_model.encoder.layers.0.layer_norm1.weight', p2()],
      ['transformer.ln_f.weight', p2()],
      ['h.0.ln_1.weight', p2()],
      ['kiln.weight', p2()], // 'ln' inside a word is not a norm
      ['model.embed_tokens.weight', p2()],
      ['scale', uhd.zeros([]).requiresGrad_()],
    ];
    const groups = paramGroups(named, { weightDecay: 0.01 });
    expect(groups.map((g) => [g.name, g.weightDecay, g.paramNames])).toEqual([
      ['decay', 0.01, ['model.layers.0.self_attn.q_proj.weight', 'kiln.weight', 'model.embed_tokens.weight']],
      ['no_decay', 0, named.map(([n]) => n).filter((n) => !['model.layers.0.self_attn.q_proj.weight', 'kiln.weight', 'model.embed_tokens.weight'].includes(n))],
    ]);
    const custom = paramGroups(named, { weightDecay: 0.01, noDecay: (name, p) => isNoDecay(name, p) || name.includes('embed') });
    expect(custom[0].paramNames).toEqual(['model.layers.0.self_attn.q_proj.weight', 'kiln.weight']);
  });
});

describe('SGD', () => {
  for (const variant of [
    { momentum: 0.9, dampening: 0.1, wd: 0.01, nesterov: false },
    { momentum: 0.8, dampening: 0, wd: 0, nesterov: true },
    { momentum: 0, dampening: 0, wd: 0.1, nesterov: false },
  ]) {
    it(`equals a float64 reference of torch.optim.SGD (${JSON.stringify(variant)})`, async () => {
      const p = param(values(5, 41), [5]);
      const opt = new SGD([p], { lr: 0.05, momentum: variant.momentum, dampening: variant.dampening, weightDecay: variant.wd, nesterov: variant.nesterov });
      const ref = new SGDReference(Array.from(values(5, 41)), { lr: 0.05, ...variant });
      for (let s = 0; s < 4; s++) {
        const g = Array.from(values(5, 500 + s));
        setGrad(p, g);
        opt.step();
        ref.step(g);
        expectClose(await read(p), ref.p, F64, `step ${s}`);
      }
      expect(opt.state.get(p)!.momentumBuffer === undefined).toBe(variant.momentum === 0);
    });
  }

  it('round-trips its state and holds memory flat', async () => {
    const a = param(values(4, 1), [4]);
    const b = param(values(4, 1), [4]);
    const optA = new SGD([a], { lr: 0.1, momentum: 0.9 });
    const optB = new SGD([b], { lr: 0.1, momentum: 0.9 });
    setGrad(a, values(4, 2));
    optA.step();
    uhd.assign(b, a);
    optB.loadStateDict(optA.stateDict());
    const step = () => {
      for (const [p, o] of [[a, optA], [b, optB]] as const) {
        setGrad(p, values(4, 3));
        o.step();
        o.zeroGrad();
      }
    };
    step();
    const before = uhd.memory();
    for (let i = 0; i < 20; i++) step();
    expect(uhd.memory()).toEqual(before);
    expect(await read(b)).toEqual(await read(a));
  });
});

describe('clipGradNorm', () => {
  it('scales grads to maxNorm, returns the pre-clip norm, and leaves small grads alone', async () => {
    const x = param([0, 0], [2]);
    const y = param([0, 0], [2]);
    setGrad(x, [3, 0]);
    setGrad(y, [0, 4]);
    const norm = clipGradNorm([x, y], 1);
    expect(await norm.item()).toBe(5);
    norm.dispose();
    const s = 1 / (5 + 1e-6);
    expectClose(await read(x.grad!), [3 * s, 0], F64);
    expectClose(await read(y.grad!), [0, 4 * s], F64);
    setGrad(x, [3, 0]);
    setGrad(y, [0, 4]);
    expect(await clipGradNormAsync([x, y], 10)).toBe(5);
    expect(await read(x.grad!)).toEqual([3, 0]);
    expect(await read(y.grad!)).toEqual([0, 4]);
    expect(await clipGradNormAsync([param([1], [1])], 1)).toBe(0); // no grads at all
    expect(() => clipGradNorm([x], 0)).toThrow('clipGradNorm: maxNorm is 0, expected a finite number > 0');
  });

  it('scales each grad once when add hands both inputs the same gradient', async () => {
    const x = param([1, 2], [2]);
    const y = param([3, 4], [2]);
    x.add(y).mul(uhd.tensor([3, 4], { dtype: 'float64' })).sum().backward(); // add's rule returns one gradient twice
    expect(x.grad!.storage).not.toBe(y.grad!.storage); // autograd gives each leaf its own
    expect(await clipGradNormAsync([x, y], 1)).toBeCloseTo(Math.sqrt(50), 12);
    const s = 1 / (Math.sqrt(50) + 1e-6);
    expectClose(await read(x.grad!), [3 * s, 4 * s], F64);
    expectClose(await read(y.grad!), [3 * s, 4 * s], F64);
  });
});

describe('learning-rate schedules', () => {
  it('warmupCosine: 0 at step 0, peak at warmup, halfway at the midpoint, min at total and after', () => {
    const f = warmupCosine({ peak: 1e-4, min: 5e-5, warmupSteps: 1000, totalSteps: 2000 }); // stage 1 of the recipe
    expect(f(0)).toBe(0);
    expect(f(500)).toBeCloseTo(5e-5, 15);
    expect(f(1000)).toBe(1e-4);
    expect(f(1500)).toBeCloseTo(7.5e-5, 15);
    expect(f(1250)).toBeCloseTo(5e-5 + 5e-5 * 0.5 * (1 + Math.cos(Math.PI / 4)), 15);
    expect(f(2000)).toBe(5e-5);
    expect(f(5000)).toBe(5e-5);
    expect(warmupCosine({ peak: 1, min: 0, warmupSteps: 0, totalSteps: 10 })(0)).toBe(1);
    expect(constant(3e-4)(12345)).toBe(3e-4);
    expect(() => warmupCosine({ peak: 1, min: 0, warmupSteps: 10, totalSteps: 5 })).toThrow(
      'warmupCosine: totalSteps is 5, expected an integer >= warmupSteps (10)',
    );
  });

  it('LRScheduler sets each group lr times its scale, and its state round-trips to continue exactly', () => {
    const sched = warmupCosine({ peak: 1e-3, min: 1e-5, warmupSteps: 4, totalSteps: 20 });
    const build = () =>
      new AdamW(
        [
          { params: [param([0], [1])], lrScale: 1 },
          { params: [param([0], [1])], lrScale: 0.2 },
        ],
        { lr: 1 },
      );
    const opt1 = build();
    const s1 = new LRScheduler(opt1, sched);
    expect(opt1.groups.map((g) => g.lr)).toEqual([0, 0]);
    for (let i = 0; i < 7; i++) s1.step();
    expect(s1.lastStep).toBe(7);
    expect(opt1.groups.map((g) => g.lr)).toEqual([sched(7), sched(7) * 0.2]);
    const saved = JSON.parse(JSON.stringify(s1.stateDict())) as { step: number };
    const opt2 = build();
    const s2 = new LRScheduler(opt2, sched);
    s2.loadStateDict(saved);
    expect(opt2.groups.map((g) => g.lr)).toEqual(opt1.groups.map((g) => g.lr));
    for (let i = 0; i < 20; i++) {
      s1.step();
      s2.step();
      expect(opt2.groups.map((g) => g.lr)).toEqual(opt1.groups.map((g) => g.lr));
    }
    expect(s2.lr).toBe(1e-5);
    expect(() => s2.loadStateDict({ step: -1 })).toThrow('LRScheduler.loadStateDict: step is -1, expected an integer >= 0');
  });
});

describe('on WebGPU', () => {
  useWebGPU();

  it('AdamW equals AdamW on the CPU within f32 tolerance over 5 steps', async () => {
    const shapes = [[7, 5], [5], [33]];
    const onDevice = (device: Device) => shapes.map((s, i) => param(values(s.reduce((a, b) => a * b, 1), 60 + i), s, device, 'float32'));
    const cpu = onDevice('cpu');
    const gpu = onDevice('webgpu');
    const names = ['l.weight', 'l.bias', 'other.weight'];
    const make = (ps: Tensor[]) => new AdamW(paramGroups(names.map((n, i) => [n, ps[i]] as const), { weightDecay: 0.05 }), { lr: 1e-2, ...LLAVA_UHD_ADAMW });
    const [optC, optG] = [make(cpu), make(gpu)];
    for (let step = 0; step < 5; step++) {
      shapes.forEach((s, i) => {
        const g = values(s.reduce((a, b) => a * b, 1), 700 + 10 * step + i, -3, 3);
        setGrad(cpu[i], g);
        setGrad(gpu[i], g);
      });
      optC.step();
      optG.step();
    }
    for (let i = 0; i < shapes.length; i++) {
      expectClose(await read(gpu[i]), await read(cpu[i]), F32, `param ${i}`);
      expectClose(await read(optG.state.get(gpu[i])!.v), await read(optC.state.get(cpu[i])!.v), F32, `v ${i}`);
    }
  });

  it('clipGradNorm and SGD agree with the CPU', async () => {
    const onDevice = (device: Device) => [param(values(12, 81), [3, 4], device, 'float32'), param(values(4, 82), [4], device, 'float32')];
    const cpu = onDevice('cpu');
    const gpu = onDevice('webgpu');
    const [optC, optG] = [new SGD(cpu, { lr: 0.1, momentum: 0.9, nesterov: true }), new SGD(gpu, { lr: 0.1, momentum: 0.9, nesterov: true })];
    for (let step = 0; step < 3; step++) {
      for (const ps of [cpu, gpu]) ps.forEach((p, i) => setGrad(p, values(p.size, 900 + step * 2 + i, -5, 5)));
      const [nc, ng] = [await clipGradNormAsync(cpu, 1), await clipGradNormAsync(gpu, 1)];
      expect(ng).toBeCloseTo(nc, 4);
      optC.step();
      optG.step();
    }
    for (let i = 0; i < 2; i++) expectClose(await read(gpu[i]), await read(cpu[i]), F32, `param ${i}`);
  });

  it('loadStateDict moves CPU state (float64 too) onto WebGPU parameters', async () => {
    const cpuP = param(values(4, 1), [4]);
    const optC = new AdamW([cpuP], { lr: 0.1 });
    setGrad(cpuP, values(4, 2));
    optC.step();
    const gpuP = param(await read(cpuP), [4], 'webgpu');
    const optG = new AdamW([gpuP], { lr: 0.1 });
    optG.loadStateDict(optC.stateDict());
    const s = optG.state.get(gpuP)!;
    expect([s.m.device, s.m.dtype]).toEqual(['webgpu', 'float32']);
    expectClose(await read(s.v), await read(optC.state.get(cpuP)!.v), F32);
  });

  it('AdamW minimises ||Ax - b||^2 on WebGPU', async () => {
    const r = await trainQuadratic('webgpu', 200);
    expect(r.last).toBeLessThan(1e-4 * r.first);
    expectClose(r.x, r.xStar, { atol: 1e-2, rtol: 0 });
  });

  it('holds memory flat over 50 training steps on WebGPU', () => {
    expectFlatMemory('webgpu');
  });
});
