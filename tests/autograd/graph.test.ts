import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';

const param = (values: number[], shape?: number[]) => uhd.tensor(values, { shape, dtype: 'float64' }).requiresGrad_();

describe('the tape', () => {
  it('backward accumulates d(loss)/d(leaf) in reverse topological order', async () => {
    const x = param([1, 2, 3]);
    const y = x.mul(x).add(x.mul(2)); // y = x^2 + 2x, used twice below
    const loss = y.sum().add(y.mean());
    loss.backward();
    // d/dx = (1 + 1/3) (2x + 2)
    expect(Array.from(await x.grad!.data())).toEqual([4, 6, 8].map((v) => (v * 4) / 3));
  });

  it('gradients accumulate across backward calls until zeroGrad', async () => {
    const x = param([1, 2]);
    x.mul(3).sum().backward();
    x.mul(3).sum().backward();
    expect(Array.from(await x.grad!.data())).toEqual([6, 6]);
    ag.zeroGrad([x]);
    expect(x.grad).toBeNull();
  });

  it('a non-scalar root needs an explicit gradient of its shape', async () => {
    const x = param([1, 2, 3]);
    const y = x.mul(2);
    expect(() => y.backward()).toThrow('backward: tensor [3] is not a scalar; pass a gradient of that shape');
    expect(() => y.backward(uhd.ones([2], { dtype: 'float64' }))).toThrow('backward: gradient [2] does not match tensor [3]');
    y.backward(uhd.tensor([1, 0, -1], { dtype: 'float64' }));
    expect(Array.from(await x.grad!.data())).toEqual([2, 0, -2]);
  });

  it('backward twice is an error unless the graph was retained', async () => {
    const x = param([1, 2]);
    const l1 = x.exp().sum();
    l1.backward();
    expect(() => l1.backward()).toThrow(/backward: the graph through '.*' was already freed/);
    const l2 = x.exp().sum();
    l2.backward(undefined, { retainGraph: true });
    l2.backward();
    const e = Array.from(await x.exp().data());
    expect(Array.from(await x.grad!.data())).toEqual(e.map((v) => 3 * v));
  });

  it('each leaf grad owns its memory, even when a rule hands one gradient to two inputs', async () => {
    const a = param([1, 2]);
    const b = param([3, 4]);
    a.add(b).sum().backward();
    expect(a.grad!.storage).not.toBe(b.grad!.storage);
    uhd.assign(a.grad!, uhd.zeros([2], { dtype: 'float64' }));
    expect(Array.from(await b.grad!.data())).toEqual([1, 1]);
  });

  it('a rule may hand back its incoming gradient, or one tensor for several inputs: each input gets its own handle', async () => {
    const a = param([1, 2]);
    const b = param([3, 4]);
    const c = param([5, 6]);
    const before = uhd.memory().cpu.tensors;
    const loss = uhd.tidy(() => {
      // identity-like ops whose rules return g itself (twice), and one tensor for two inputs
      const passG = ag.record('passG', [a, b], ag.noGrad(() => uhd.add(a, b)), [], (g) => [g, g]);
      const shared = ag.record('shared', [passG, c], ag.noGrad(() => uhd.add(passG, c)), [], (g) => {
        const twice = uhd.mul(g, 2);
        return [twice, twice];
      });
      return shared.sum();
    });
    loss.backward();
    loss.dispose();
    expect(Array.from(await a.grad!.data())).toEqual([2, 2]);
    expect(Array.from(await b.grad!.data())).toEqual([2, 2]);
    expect(Array.from(await c.grad!.data())).toEqual([2, 2]);
    expect(new Set([a, b, c].map((p) => p.grad!.storage)).size).toBe(3);
    // the three grads are what is left: every handle made during backward was disposed
    expect(uhd.memory().cpu.tensors - before).toBe(3);
  });

  it('a forward without backward frees its graph (saved tensors) once its output is disposed', () => {
    const w = uhd.randn([16, 16], { dtype: 'float64' }).requiresGrad_();
    const x = uhd.randn([4, 16], { dtype: 'float64' });
    const before = uhd.memory().cpu;
    const y = uhd.tidy(() => ag.layerNorm(x.matmul(w).gelu(), null, null).softmax(-1).sum());
    expect(uhd.memory().cpu.storages).toBeGreaterThan(before.storages + 1); // saved activations
    y.dispose();
    expect(uhd.memory().cpu).toEqual(before);
  });

  it('backward on a tensor that needs no grad says so', () => {
    expect(() => uhd.ones([1]).backward()).toThrow('backward: tensor [1] does not require grad');
  });

  it('noGrad records nothing; detach cuts the history', () => {
    const x = param([1, 2]);
    const y = ag.noGrad(() => x.mul(2));
    expect(y.requiresGrad).toBe(false);
    expect(y.gradFn).toBeNull();
    const z = x.mul(2).detach();
    expect(z.requiresGrad).toBe(false);
    expect(x.mul(2).gradFn?.op).toBe('mul');
  });

  it('views route gradients: permute, strided slice, expand', async () => {
    const x = param([1, 2, 3, 4, 5, 6], [2, 3]);
    x.transpose().slice([0, 3, 2]).mul(uhd.tensor([[1, 10], [100, 1000]], { dtype: 'float64' })).sum().backward();
    // transpose -> [3,2]; rows 0 and 2 -> x[:,0] and x[:,2]
    expect(await x.grad!.toArray()).toEqual([[1, 0, 100], [10, 0, 1000]]);
    const b = param([1, 2]);
    b.reshape(2, 1).expand(2, 5).sum().backward();
    expect(Array.from(await b.grad!.data())).toEqual([5, 5]);
  });

  it('saved tensors survive tidy and dispose of the originals', async () => {
    const x = param([0.5, 1.5]);
    const loss = uhd.tidy(() => x.mul(3).exp().sum()); // intermediates disposed by tidy
    loss.backward();
    const expected = [0.5, 1.5].map((v) => 3 * Math.exp(3 * v));
    Array.from(await x.grad!.data()).forEach((g, i) => expect(g).toBeCloseTo(expected[i], 10));
  });

  it('a training-style loop of 50 steps holds memory flat (graph freed after backward)', () => {
    const w = uhd.randn([8, 8], { dtype: 'float64' }).requiresGrad_();
    const x = uhd.randn([4, 8], { dtype: 'float64' });
    const step = () => {
      uhd.tidy(() => {
        const loss = ag.layerNorm(x.matmul(w).gelu(), null, null).softmax(-1).pow(2).mean();
        loss.backward();
        ag.noGrad(() => {
          const nw = w.sub(w.grad!.mul(0.1));
          uhd.assign(w, nw);
        });
        ag.zeroGrad([w]);
        return undefined;
      });
    };
    step();
    const before = uhd.memory().cpu;
    for (let i = 0; i < 50; i++) step();
    expect(uhd.memory().cpu).toEqual(before);
  });
});

describe('gradient checkpointing', () => {
  it('gives the same gradients as the plain graph, parameters inside included', async () => {
    uhd.manualSeed(3);
    const w = uhd.randn([6, 6], { dtype: 'float64' }).requiresGrad_();
    const x = uhd.randn([3, 6], { dtype: 'float64' }).requiresGrad_();
    const block = (h: uhd.Tensor) => ag.layerNorm(h.matmul(w).gelu(), null, null).add(h);
    block(block(x)).sum().backward();
    const [gw, gx] = [Array.from(await w.grad!.data()), Array.from(await x.grad!.data())];
    ag.zeroGrad([w, x]);
    const y = ag.checkpoint(block, ag.checkpoint(block, x));
    expect(y.gradFn?.op).toBe('checkpoint');
    y.sum().backward();
    Array.from(await w.grad!.data()).forEach((v, i) => expect(v).toBeCloseTo(gw[i], 12));
    Array.from(await x.grad!.data()).forEach((v, i) => expect(v).toBeCloseTo(gx[i], 12));
  });

  it('keeps only the block inputs alive, not its activations', () => {
    const w = uhd.randn([16, 16], { dtype: 'float64' }).requiresGrad_();
    const x = uhd.randn([4, 16], { dtype: 'float64' }).requiresGrad_();
    const block = (h: uhd.Tensor) => h.matmul(w).tanh().matmul(w).tanh().matmul(w).tanh();
    const m0 = uhd.memory().cpu.storages;
    const plain = block(x);
    const plainStorages = uhd.memory().cpu.storages - m0;
    const m1 = uhd.memory().cpu.storages;
    const ck = ag.checkpoint(block, x);
    const ckStorages = uhd.memory().cpu.storages - m1;
    expect(ckStorages).toBeLessThan(plainStorages);
    plain.dispose();
    ck.dispose();
  });
});
