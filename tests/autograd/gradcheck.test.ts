import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import { PROP, values } from '../support.js';
import { CASES } from './ops.js';

describe('every differentiable op passes gradcheck (float64, central differences)', () => {
  for (const c of CASES) {
    it(`${c.name}: analytic gradients equal finite differences on random shapes`, () => {
      fc.assert(
        fc.property(c.arb, fc.integer({ min: 1, max: 2 ** 30 }), ({ shapes, p }, seed) => {
          const [lo, hi] = c.range ?? [-1, 1];
          const xs = shapes.map((s, i) => {
            const n = s.reduce((a, b) => a * b, 1);
            const t = uhd.tensor(values(n, seed + i, lo, hi), { shape: s, dtype: 'float64' });
            t.requiresGrad = true;
            return t;
          });
          const before = uhd.memory().cpu;
          ag.gradcheck((...ins) => c.fn(ins, p), xs, { atol: 1e-6, rtol: 1e-4 });
          // the check frees everything it made, graph included
          expect(uhd.memory().cpu.storages).toBeLessThanOrEqual(before.storages);
          for (const x of xs) x.dispose();
        }),
        { ...PROP, numRuns: 15 },
      );
    });
  }
});
