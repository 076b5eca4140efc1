import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';
import { PROP } from '../support.js';

/** The element of `t` at a multi-index, read straight from its storage through strides. */
function at(t: uhd.Tensor, data: ArrayLike<number>, idx: number[]): number {
  return data[t.offset + idx.reduce((o, i, d) => o + i * t.strides[d], 0)];
}

describe('views share storage and address it through strides', () => {
  it('reshape of a contiguous tensor is a view (no new storage)', async () => {
    const x = uhd.arange(24, undefined, 1, { dtype: 'float32' });
    const before = uhd.memory().cpu.storages;
    const y = x.reshape(2, 3, 4);
    expect(uhd.memory().cpu.storages).toBe(before);
    expect(y.storage).toBe(x.storage);
    expect(y.strides).toEqual([12, 4, 1]);
    expect(await y.toArray()).toEqual([[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], [[12, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 23]]]);
  });

  it('reshape splits and merges permuted dims as views when strides allow, copies otherwise', async () => {
    const x = uhd.arange(24, undefined, 1, { dtype: 'float32' }).reshape(2, 3, 4);
    const p = x.permute(1, 0, 2); // [3,2,4], strides [4,12,1]
    const split = p.reshape(3, 2, 2, 2); // the last dim splits: still a view
    expect(split.storage).toBe(x.storage);
    const merged = p.reshape(6, 4); // dims 0,1 are not mergeable: a copy
    expect(merged.storage).not.toBe(x.storage);
    expect(Array.from(await merged.data())).toEqual(Array.from(await p.contiguous().data()));
    expect(() => p.view(6, 4)).toThrow(/view: cannot view \[3,2,4\]/);
  });

  it('reshape (view or copy) preserves row-major element order for any view and target', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 0, max: 1000 }),
        fc.integer({ min: 1, max: 3 }),
        async (shape, seed, parts) => {
          const n = shape.reduce((a, b) => a * b, 1);
          const base = uhd.arange(n, undefined, 1, { dtype: 'float32' }).reshape(shape);
          // a permuted view, reshaped into `parts` dims whose product is n
          const order = [...shape.keys()].sort((a, b) => ((a * 7919 + seed) % 13) - ((b * 7919 + seed) % 13));
          const v = base.permute(order);
          const target: number[] = [];
          let rest = n;
          for (let i = 0; i < parts - 1; i++) {
            const d = [...Array(rest).keys()].map((k) => k + 1).filter((k) => rest % k === 0);
            const pick = d[(seed + i) % d.length];
            target.push(pick);
            rest /= pick;
          }
          target.push(rest);
          const r = v.reshape(target);
          expect(r.shape).toEqual(target);
          expect(Array.from(await r.data())).toEqual(Array.from(await v.contiguous().data()));
        },
      ),
      { ...PROP, numRuns: 200 },
    );
  });

  it('permute/transpose swap strides; slice steps multiply them; expand sets them to 0', async () => {
    const x = uhd.arange(60, undefined, 1, { dtype: 'float32' }).reshape(3, 4, 5);
    const t = x.transpose(0, 2);
    expect(t.shape).toEqual([5, 4, 3]);
    expect(t.strides).toEqual([1, 5, 20]);
    const s = x.slice(null, [1, 4, 2], [-3]);
    expect(s.shape).toEqual([3, 2, 3]);
    expect(s.strides).toEqual([20, 10, 1]);
    expect(s.offset).toBe(5 + 2);
    const data = await x.data();
    expect(at(s, data, [2, 1, 2])).toBe(2 * 20 + 3 * 5 + 4);
    const e = uhd.tensor([1, 2, 3]).reshape(3, 1).expand(2, 3, 4);
    expect(e.strides).toEqual([0, 1, 0]);
    expect(await e.toArray()).toEqual([[[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]], [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]]]);
  });

  it('slice follows Python semantics: negative bounds, clamping, empty ranges', async () => {
    const x = uhd.arange(10, undefined, 1, { dtype: 'float32' });
    expect(Array.from(await x.slice([-3]).data())).toEqual([7, 8, 9]);
    expect(Array.from(await x.slice([2, 100, 3]).data())).toEqual([2, 5, 8]);
    expect(x.slice([5, 2]).shape).toEqual([0]);
    expect(Array.from(await x.slice(4).data())).toEqual([4]);
    expect(Array.from(await x.slice(-1).data())).toEqual([9]);
    expect(Array.from(await x.slice(-10).data())).toEqual([0]);
    expect(x.slice(10).shape).toEqual([0]);
    expect(x.slice(-11).shape).toEqual([0]);
    expect(Array.from(await x.narrow(0, 3, 2).data())).toEqual([3, 4]);
  });

  it('squeeze/unsqueeze add and remove size-1 dims', () => {
    const x = uhd.zeros([2, 1, 3, 1]);
    expect(x.squeeze().shape).toEqual([2, 3]);
    expect(x.squeeze(1).shape).toEqual([2, 3, 1]);
    expect(x.squeeze(0).shape).toEqual([2, 1, 3, 1]);
    expect(x.unsqueeze(0).shape).toEqual([1, 2, 1, 3, 1]);
    expect(x.unsqueeze(-1).shape).toEqual([2, 1, 3, 1, 1]);
  });

  it("a tensor's shape and strides are never the caller's own arrays", () => {
    const dims = [6, 4];
    const strides = [4, 1];
    const x = uhd.zeros([24]).reshape(dims);
    const made = new uhd.Tensor(x.storage.retain(), dims, strides);
    for (const t of [x, made, x.view(dims), x.expand(dims), x.detach()]) {
      expect(t.shape).not.toBe(dims);
      expect(t.strides).not.toBe(strides);
    }
    dims[0] = 99; // the caller may reuse its arrays: the tensors keep their own
    strides[0] = 7;
    expect(x.shape).toEqual([6, 4]);
    expect(made.shape).toEqual([6, 4]);
    expect(made.strides).toEqual([4, 1]);
    expect(made.size).toBe(24);
    expect(x.view(-1).shape).toEqual([24]);
  });

  it('contiguous() copies only when needed', () => {
    const x = uhd.zeros([4, 5]);
    const c = x.contiguous();
    expect(c.storage).toBe(x.storage);
    const t = x.transpose().contiguous();
    expect(t.storage).not.toBe(x.storage);
    expect(t.isContiguous).toBe(true);
  });
});

describe('creation', () => {
  it('tensor() from nested arrays, typed arrays and scalars', async () => {
    expect(uhd.tensor([[1, 2], [3, 4]]).shape).toEqual([2, 2]);
    expect(uhd.tensor(new Int32Array([1, 2, 3])).dtype).toBe('int32');
    expect(uhd.tensor(5).shape).toEqual([]);
    expect(await uhd.tensor(5).item()).toBe(5);
    expect(await uhd.tensor([1.5, -2.5], { dtype: 'int32' }).toArray()).toEqual([1, -2]);
    expect(Array.from(await uhd.tensor(new Float32Array(6), { shape: [2, 3] }).data())).toHaveLength(6);
  });
  it('zeros, ones, full, arange', async () => {
    expect(Array.from(await uhd.ones([3]).data())).toEqual([1, 1, 1]);
    expect(Array.from(await uhd.full([2], 7, { dtype: 'int32' }).data())).toEqual([7, 7]);
    expect(Array.from(await uhd.arange(1, 7, 2).data())).toEqual([1, 3, 5]);
    expect(uhd.arange(5).dtype).toBe('int32');
    expect(Array.from(await uhd.arange(0, 1, 0.25, { dtype: 'float64' }).data())).toEqual([0, 0.25, 0.5, 0.75]);
  });
  it('rand/randn are reproducible after manualSeed and have the right moments', async () => {
    uhd.manualSeed(123);
    const a = Array.from(await uhd.randn([20000], { dtype: 'float64' }).data());
    uhd.manualSeed(123);
    const b = await uhd.randn([20000], { dtype: 'float64' }).data();
    expect(a).toEqual(Array.from(b));
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
    const u = Array.from(await uhd.rand([20000]).data());
    expect(u.every((v) => v >= 0 && v < 1)).toBe(true);
    expect(Math.abs(u.reduce((s, v) => s + v, 0) / u.length - 0.5)).toBeLessThan(0.02);
  });
  it('getRngState/setRngState resume the stream exactly', async () => {
    uhd.manualSeed(7);
    uhd.rand([5]);
    const s = uhd.getRngState();
    const next = await uhd.rand([5]).data();
    uhd.setRngState(s);
    expect(Array.from(await uhd.rand([5]).data())).toEqual(Array.from(next));
  });
});
