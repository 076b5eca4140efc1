import { describe, expect, it } from 'vitest';
import * as nn from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';

const qwenLike = () =>
  new nn.MultiHeadAttention({ dim: 16, heads: 4, kvHeads: 2, headDim: 8, bias: false, qkNorm: true, ropeTheta: 1e6, outName: 'o_proj', dtype: 'float64' });

const rows = async (t: Tensor, b: number) => Array.from(await t.narrow(0, b, 1).data());

describe('KVCache for batches', () => {
  it('a left-padded row through prefill and decoding gives what the row gives alone', async () => {
    uhd.manualSeed(4);
    const attn = qwenLike();
    const lengths = [5, 2, 4];
    const S = 5;
    const seqs = lengths.map((n) => uhd.randn([1, n + 2, 16], { dtype: 'float64' })); // prompt + 2 decoded tokens
    // each alone: prefill n tokens, then 2 steps
    const alone = await Promise.all(seqs.map(async (x, b) => {
      const cache = new nn.KVCache();
      const n = lengths[b];
      const out = [await attn.forward(x.narrow(1, 0, n), { causal: true, cache }).narrow(1, n - 1, 1).data()];
      for (let t = 0; t < 2; t++) out.push(await attn.forward(x.narrow(1, n + t, 1), { causal: true, cache }).data());
      cache.dispose();
      return out.map((o) => Array.from(o));
    }));
    // together: left-padded with garbage, padding declared in the cache
    const padded = uhd.concat(seqs.map((x, b) => {
      const pad = uhd.randn([1, S - lengths[b], 16], { dtype: 'float64' }).mul(100);
      return uhd.concat([pad, x.narrow(1, 0, lengths[b])], 1);
    }), 0);
    const cache = new nn.KVCache();
    cache.padding = lengths.map((n) => S - n);
    const first = attn.forward(padded, { causal: true, cache }).narrow(1, S - 1, 1);
    const together = await Promise.all(lengths.map(async (_, b) => [await rows(first, b)]));
    for (let t = 0; t < 2; t++) {
      const step = uhd.concat(seqs.map((x, b) => x.narrow(1, lengths[b] + t, 1)), 0);
      const y = attn.forward(step, { causal: true, cache });
      for (let b = 0; b < lengths.length; b++) together[b].push(await rows(y, b));
    }
    expect(cache.length).toBe(S + 2);
    together.forEach((tb, b) => tb.forEach((v, t) => v.forEach((x, i) => expect(x, `row ${b} step ${t}`).toBeCloseTo(alone[b][t][i], 12))));
    cache.dispose();
  });

  it('select reorders, repeats and drops rows, keys, values and padding alike', async () => {
    const cache = new nn.KVCache();
    const k = uhd.tensor(Float64Array.from({ length: 3 * 2 * 4 * 2 }, (_, i) => i), { shape: [3, 2, 4, 2], dtype: 'float64' });
    cache.padding = [0, 2, 1];
    cache.append(k, k.mul(-1));
    cache.select([2, 2, 0]);
    expect(cache.k!.shape).toEqual([3, 2, 4, 2]);
    expect(cache.padding).toEqual([1, 1, 0]);
    expect(Array.from(await cache.k!.narrow(0, 0, 1).data())).toEqual(Array.from(await k.narrow(0, 2, 1).data()));
    expect(Array.from(await cache.v!.narrow(0, 2, 1).data())).toEqual(Array.from(await k.narrow(0, 0, 1).mul(-1).data()));
    cache.select([1]);
    expect(cache.k!.shape[0]).toBe(1);
    expect(() => cache.select([1])).toThrow('KVCache.select: row 1 is not one of the 1 rows');
    const before = uhd.memory().cpu.tensors;
    cache.select([0]); // identity: nothing allocated
    expect(uhd.memory().cpu.tensors).toBe(before);
    cache.dispose();
  });

  it('refuses keys whose batch differs from the padding it was given', () => {
    const cache = new nn.KVCache();
    cache.padding = [0, 1];
    const k = uhd.zeros([3, 1, 2, 2]);
    expect(() => cache.append(k, k)).toThrow('padding is given for 2 rows but the keys have 3');
  });
});
