import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';
import { PROP } from '../support.js';

/** A program of scopes: make a tensor, keep one made so far, or run a nested tidy (that may throw). */
type Act = { kind: 'make' } | { kind: 'keep'; pick: number } | { kind: 'nest'; body: Act[]; ret: number[]; throws: boolean };

const acts: fc.Arbitrary<Act[]> = fc.letrec<{ acts: Act[]; act: Act }>((tie) => ({
  act: fc.oneof(
    { weight: 4, arbitrary: fc.constant({ kind: 'make' as const }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('keep' as const), pick: fc.nat(50) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('nest' as const), body: tie('acts'), ret: fc.array(fc.nat(50), { maxLength: 3 }), throws: fc.boolean() }) },
  ),
  acts: fc.array(tie('act'), { maxLength: 6 }),
})).acts;

/**
 * The rules tidy and keep follow, stated plainly: a stack of sets, a tensor in at most one; keep
 * takes it out of the innermost set holding it; a scope's end disposes its set, moving to the
 * outer set what the result reaches, and disposing everything when the body threw.
 */
function model(program: Act[]): boolean[] {
  const disposed: boolean[] = [];
  const stack: Set<number>[] = [];
  const run = (list: Act[]): number[] => {
    const made: number[] = [];
    for (const a of list) {
      if (a.kind === 'make') {
        const id = disposed.push(false) - 1;
        stack[stack.length - 1]?.add(id);
        made.push(id);
      } else if (a.kind === 'keep') {
        if (disposed.length === 0) continue;
        const id = a.pick % disposed.length;
        for (let i = stack.length - 1; i >= 0; i--) if (stack[i].delete(id)) break;
      } else {
        const scope = new Set<number>();
        stack.push(scope);
        const inner = run(a.body);
        stack.pop();
        const ret = a.throws || inner.length === 0 ? [] : a.ret.map((r) => inner[r % inner.length]);
        for (const id of scope) {
          if (ret.includes(id)) stack[stack.length - 1]?.add(id);
          else disposed[id] = true;
        }
        made.push(...inner);
      }
    }
    return made;
  };
  run(program);
  return disposed;
}

/** The same program on real tensors: which were disposed. */
function real(program: Act[]): boolean[] {
  const all: uhd.Tensor[] = [];
  const run = (list: Act[]): uhd.Tensor[] => {
    const made: uhd.Tensor[] = [];
    for (const a of list) {
      if (a.kind === 'make') {
        const t = uhd.zeros([1]);
        all.push(t);
        made.push(t);
      } else if (a.kind === 'keep') {
        if (all.length > 0) uhd.keep(all[a.pick % all.length]);
      } else {
        const inner: uhd.Tensor[] = [];
        try {
          uhd.tidy(() => {
            inner.push(...run(a.body));
            if (a.throws) throw new Error('thrown by the program');
            return inner.length === 0 ? [] : a.ret.map((r) => inner[r % inner.length]);
          });
        } catch (e) {
          if (!a.throws) throw e;
        }
        made.push(...inner);
      }
    }
    return made;
  };
  run(program);
  const disposed = all.map((t) => t.disposed);
  for (const t of all) t.dispose();
  return disposed;
}

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

  it('nested tidy, keep and throws on random programs dispose exactly what the plain rules say', () => {
    const m0 = uhd.memory().cpu;
    fc.assert(fc.property(fc.array(acts.map((body) => ({ kind: 'nest' as const, body, ret: [], throws: false })), { minLength: 1, maxLength: 3 }), fc.boolean(), (program, outside) => {
      // outside: the program's first level runs outside any tidy (nothing tracks its tensors)
      const p: Act[] = outside ? program.flatMap((n) => n.body) : program;
      expect(real(p)).toEqual(model(p));
    }), PROP);
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
