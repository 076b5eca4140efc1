import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as nn from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';

class Block extends nn.Module {
  self_attn: nn.MultiHeadAttention;
  layer_norm1: nn.LayerNorm;
  mlp: nn.MLP;
  constructor() {
    super();
    this.self_attn = this.module('self_attn', new nn.MultiHeadAttention({ dim: 8, heads: 2 }));
    this.layer_norm1 = this.module('layer_norm1', new nn.LayerNorm(8, 1e-6));
    this.mlp = this.module('mlp', new nn.MLP(8, 16));
  }
}

class Tower extends nn.Module {
  layers: Block[];
  constructor(n: number) {
    super();
    this.layers = Array.from({ length: n }, (_, i) => this.module(`layers.${i}`, new Block()));
  }
}

describe('Module', () => {
  it('names parameters with dotted paths, as checkpoints do', () => {
    const m = new Tower(2);
    const names = [...m.namedParameters()].map(([n]) => n);
    expect(names).toContain('layers.0.self_attn.q_proj.weight');
    expect(names).toContain('layers.1.self_attn.out_proj.bias');
    expect(names).toContain('layers.1.layer_norm1.weight');
    expect(names).toContain('layers.0.mlp.fc2.weight');
    expect(names).toHaveLength(2 * (8 + 2 + 4));
    expect(m.parameters().every((p) => p.requiresGrad)).toBe(true);
    m.dispose();
  });

  it('loadStateDict copies values in place and reports missing, unexpected and mismatched keys', async () => {
    const a = new Tower(1);
    const b = new Tower(1);
    const w = b.layers[0].mlp.fc1.weight;
    b.loadStateDict(a.stateDict());
    expect(b.layers[0].mlp.fc1.weight).toBe(w); // same tensor object: optimizers keep working
    expect(Array.from(await w.data())).toEqual(Array.from(await a.layers[0].mlp.fc1.weight.data()));

    const sd = new Map(a.stateDict());
    sd.delete('layers.0.mlp.fc1.bias');
    sd.set('layers.0.extra', uhd.zeros([1]));
    sd.set('layers.0.mlp.fc2.weight', uhd.zeros([3, 3]));
    expect(() => b.loadStateDict(sd)).toThrow(
      /loadStateDict: 3 problem\(s\):\n {2}missing layers\.0\.mlp\.fc1\.bias\n {2}unexpected layers\.0\.extra\n {2}shape mismatch layers\.0\.mlp\.fc2\.weight: expected \[8,16\], got \[3,3\]/,
    );
    const report = b.loadStateDict(sd, { strict: false });
    expect(report.missing).toEqual(['layers.0.mlp.fc1.bias']);
    expect(report.unexpected).toEqual(['layers.0.extra']);
    expect(report.mismatched).toEqual(['layers.0.mlp.fc2.weight: expected [8,16], got [3,3]']);
    a.dispose();
    b.dispose();
  });

  it('freezing a subtree stops its gradients; train/eval reach every child', () => {
    const m = new Tower(2);
    m.layers[0].requiresGrad(false);
    const x = uhd.randn([1, 4, 8]);
    const y = m.layers[1].mlp.forward(m.layers[0].mlp.forward(x));
    ag.sum(y).backward();
    expect(m.layers[0].mlp.fc1.weight.grad).toBeNull();
    expect(m.layers[1].mlp.fc1.weight.grad).not.toBeNull();
    m.eval();
    expect([...m.namedModules()].every(([, c]) => !c.training)).toBe(true);
    m.dispose();
  });

  it('dispose frees every parameter', () => {
    const before = uhd.memory().cpu.storages;
    const m = new Tower(1);
    expect(uhd.memory().cpu.storages).toBeGreaterThan(before);
    m.dispose();
    expect(uhd.memory().cpu.storages).toBe(before);
  });
});

describe('layers', () => {
  it('Linear computes x Wᵀ + b and checks its input', async () => {
    const lin = new nn.Linear(3, 2);
    lin.loadStateDict({ weight: uhd.tensor([[1, 2, 3], [4, 5, 6]]), bias: uhd.tensor([0.5, -1]) });
    expect(await lin.forward(uhd.tensor([[1, 0, -1]])).toArray()).toEqual([[-1.5, -3]]);
    expect(() => lin.forward(uhd.zeros([2, 4]))).toThrow('Linear: input [2,4] has last dim 4, expected 3');
  });

  it('Embedding looks up rows for int32 ids of any shape', async () => {
    const e = new nn.Embedding(4, 2);
    e.loadStateDict({ weight: uhd.tensor([[0, 1], [2, 3], [4, 5], [6, 7]]) });
    const out = e.forward(uhd.tensor([[3, 0], [1, 1]], { dtype: 'int32' }));
    expect(await out.toArray()).toEqual([[[6, 7], [0, 1]], [[2, 3], [2, 3]]]);
    expect(() => e.forward(uhd.zeros([2]))).toThrow('Embedding: ids must be int32, got float32');
  });

  it('PatchEmbed equals a stride-p convolution computed by loops', async () => {
    uhd.manualSeed(5);
    const pe = new nn.PatchEmbed(2, 3, 4, { dtype: 'float64' });
    const px = uhd.randn([1, 3, 4, 6], { dtype: 'float64' });
    const out = await pe.forward(px).data();
    const w = await pe.weight.data();
    const x = await px.data();
    const expected: number[] = [];
    for (let gi = 0; gi < 2; gi++)
      for (let gj = 0; gj < 3; gj++)
        for (let o = 0; o < 4; o++) {
          let s = 0;
          for (let c = 0; c < 3; c++)
            for (let a = 0; a < 2; a++)
              for (let b = 0; b < 2; b++) s += w[((o * 3 + c) * 2 + a) * 2 + b] * x[(c * 4 + gi * 2 + a) * 6 + gj * 2 + b];
          expected.push(s);
        }
    Array.from(out).forEach((v, i) => expect(v).toBeCloseTo(expected[i], 12));
    expect(() => pe.forward(uhd.zeros([1, 3, 5, 6], { dtype: 'float64' }))).toThrow(/PatchEmbed: pixels must be \[B, 3, H, W\] with H, W multiples of 2, got \[1,3,5,6\]/);
  });

  it('Dropout zeroes about p of the elements in training and is the identity in eval', async () => {
    const d = new nn.Dropout(0.25);
    const x = uhd.ones([10000]);
    const y = Array.from(await d.forward(x).data());
    const zeros = y.filter((v) => v === 0).length / y.length;
    expect(Math.abs(zeros - 0.25)).toBeLessThan(0.03);
    expect(y.filter((v) => v !== 0).every((v) => Math.abs(v - 4 / 3) < 1e-6)).toBe(true);
    d.eval();
    expect(Array.from(await d.forward(x).data()).every((v) => v === 1)).toBe(true);
  });

  it('crossEntropy equals the mean NLL over non-ignored targets, with gradient', async () => {
    const logits = uhd.tensor([[1, 2, 3], [0, 0, 0], [5, -1, 2]], { dtype: 'float64' }).requiresGrad_();
    const targets = uhd.tensor([2, -100, 0], { dtype: 'int32' });
    const loss = nn.crossEntropy(logits, targets);
    const lse = (r: number[]) => Math.log(r.reduce((s, v) => s + Math.exp(v), 0));
    const expected = ((lse([1, 2, 3]) - 3) + (lse([5, -1, 2]) - 5)) / 2;
    expect(await loss.item()).toBeCloseTo(expected, 12);
    const r = ag.gradcheck((l) => nn.crossEntropy(l, targets), [logits]);
    expect(r.checked).toBe(9);
    loss.backward();
    const g = (await logits.grad!.toArray()) as number[][];
    expect(g[1]).toEqual([0, 0, 0]); // the ignored row gets no gradient
    expect(() => nn.crossEntropy(logits, uhd.zeros([3]))).toThrow('crossEntropy: targets must be int32, got float32');
    expect(() => nn.crossEntropy(logits, uhd.zeros([2], { dtype: 'int32' }))).toThrow('crossEntropy: logits must be [N, V] and targets [N], got [3,3] and [2]');
  });
});

describe('MultiHeadAttention', () => {
  const qwenLike = () =>
    new nn.MultiHeadAttention({ dim: 16, heads: 4, kvHeads: 2, headDim: 8, bias: false, qkNorm: true, ropeTheta: 1e6, outName: 'o_proj', dtype: 'float64' });

  it('has the checkpoint names of SigLIP and Qwen3', () => {
    const names = [...qwenLike().namedParameters()].map(([n]) => n);
    expect(names).toEqual(['q_proj.weight', 'k_proj.weight', 'v_proj.weight', 'o_proj.weight', 'q_norm.weight', 'k_norm.weight']);
  });

  it('RoPE makes q·k depend only on the relative position', async () => {
    const q = uhd.randn([1, 1, 1, 8], { dtype: 'float64' });
    const k = uhd.randn([1, 1, 1, 8], { dtype: 'float64' });
    const dot = async (pq: number, pk: number) => {
      const [cq, sq] = nn.ropeTables(pq, 1, 8, 1e4, 'cpu', 'float64');
      const [ck, sk] = nn.ropeTables(pk, 1, 8, 1e4, 'cpu', 'float64');
      const a = nn.applyRope(q, cq, sq);
      const b = nn.applyRope(k, ck, sk);
      return a.mul(b).sum().item();
    };
    expect(await dot(5, 2)).toBeCloseTo(await dot(13, 10), 5);
    expect(await dot(0, 0)).toBeCloseTo(await q.mul(k).sum().item(), 12);
  });

  it('incremental decoding with a KV cache gives the logits of the full causal pass', async () => {
    uhd.manualSeed(11);
    const attn = qwenLike();
    const x = uhd.randn([1, 7, 16], { dtype: 'float64' });
    const full = await attn.forward(x, { causal: true }).data();
    const cache = new nn.KVCache();
    const prefix = attn.forward(x.narrow(1, 0, 4), { causal: true, cache });
    const parts = [await prefix.data()];
    for (let t = 4; t < 7; t++) parts.push(await attn.forward(x.narrow(1, t, 1), { causal: true, cache }).data());
    const inc = parts.flatMap((p) => Array.from(p));
    expect(cache.length).toBe(7);
    inc.forEach((v, i) => expect(v).toBeCloseTo(full[i], 10));
    cache.dispose();
  });

  it('passes gradcheck through projections, QK-norm, RoPE and GQA', () => {
    uhd.manualSeed(12);
    const attn = qwenLike();
    const x = uhd.randn([1, 3, 16], { dtype: 'float64' }).requiresGrad_();
    ag.gradcheck((t) => attn.forward(t, { causal: true }), [x]);
    const w = attn.k_proj.weight;
    const r = ag.gradcheck((wk: Tensor) => {
      const saved = attn.k_proj.weight;
      attn.k_proj.weight = wk;
      const y = attn.forward(x, { causal: true });
      attn.k_proj.weight = saved;
      return y;
    }, [w]);
    expect(r.checked).toBe(w.size);
  });
});
