import { describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';

describe('memory: dispose, tidy, using', () => {
  it('dispose frees storage once the last view is gone', () => {
    const m0 = uhd.memory().cpu;
    const x = uhd.zeros([1000]);
    const v = x.reshape(10, 100);
    expect(uhd.memory().cpu.storages).toBe(m0.storages + 1);
    expect(uhd.memory().cpu.tensors).toBe(m0.tensors + 2);
    x.dispose();
    expect(uhd.memory().cpu.storages).toBe(m0.storages + 1); // v still holds it
    v.dispose();
    expect(uhd.memory().cpu).toEqual(m0);
    x.dispose(); // twice is harmless
    expect(uhd.memory().cpu).toEqual(m0);
  });

  it('a disposed tensor cannot be used', () => {
    const x = uhd.ones([3]);
    x.dispose();
    expect(() => x.add(1)).toThrow('add: tensor [3] was disposed');
    expect(() => x.reshape(3)).toThrow(/was disposed/);
  });

  it('tidy frees intermediates and keeps what is returned (tensors, arrays, objects)', () => {
    const m0 = uhd.memory().cpu;
    const a = uhd.ones([4]);
    const out = uhd.tidy(() => {
      const b = a.add(1).mul(3);
      const c = b.exp();
      return { kept: [c], also: b.sum() };
    });
    expect(uhd.memory().cpu.tensors).toBe(m0.tensors + 3); // a, c, sum
    out.kept[0].dispose();
    out.also.dispose();
    a.dispose();
    expect(uhd.memory().cpu).toEqual(m0);
  });

  it('nested tidy hands kept tensors to the outer scope', () => {
    const m0 = uhd.memory().cpu;
    uhd.tidy(() => {
      const inner = uhd.tidy(() => uhd.ones([2]).add(1));
      expect(inner.disposed).toBe(false);
      return undefined;
    });
    expect(uhd.memory().cpu).toEqual(m0);
  });

  it('keep() exempts a tensor from its tidy scope', () => {
    let saved: uhd.Tensor | null = null;
    uhd.tidy(() => {
      saved = uhd.keep(uhd.ones([2]));
      return undefined;
    });
    expect(saved!.disposed).toBe(false);
    saved!.dispose();
  });

  it('keep() in a nested tidy survives every enclosing one; a throw frees the rest of its scope', () => {
    const m0 = uhd.memory().cpu;
    let saved: uhd.Tensor | null = null;
    const returned = uhd.tidy(() => {
      const inner = uhd.tidy(() => {
        saved = uhd.keep(uhd.ones([2]).add(1));
        return [saved, uhd.ones([3])]; // saved is kept, and returned as well
      });
      uhd.ones([4]); // garbage of the outer scope
      return inner[0];
    });
    expect(returned).toBe(saved);
    expect(saved!.disposed).toBe(false);
    expect(uhd.memory().cpu.tensors).toBe(m0.tensors + 1);
    let thrownKept: uhd.Tensor | null = null;
    expect(() =>
      uhd.tidy(() => {
        uhd.ones([5]);
        thrownKept = uhd.keep(uhd.ones([6]));
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(thrownKept!.disposed).toBe(false);
    expect(uhd.memory().cpu.tensors).toBe(m0.tensors + 2);
    saved!.dispose();
    thrownKept!.dispose();
    expect(uhd.memory().cpu).toEqual(m0);
  });

  it('tidy refuses async functions', () => {
    expect(() => uhd.tidy(async () => 1)).toThrow(/must be synchronous/);
  });

  it('`using` disposes at the end of the block', () => {
    const m0 = uhd.memory().cpu;
    {
      using t = uhd.ones([8]);
      expect(t.size).toBe(8);
    }
    expect(uhd.memory().cpu).toEqual(m0);
  });

  it('an op-heavy CPU loop holds memory flat', () => {
    const w = uhd.randn([32, 32]);
    const m0 = uhd.memory().cpu;
    for (let i = 0; i < 100; i++) {
      const s = uhd.tidy(() => uhd.layerNorm(w.matmul(w).softmax(-1).add(w), null, null).sum());
      s.dispose();
    }
    expect(uhd.memory().cpu).toEqual(m0);
  });
});
