/**
 * Every differentiable Tensor method records a gradient once autograd is loaded. The methods
 * are enumerated from Tensor.prototype, not listed by hand: a new method fails here until it
 * is given a case below (and then must pass gradcheck through the method form) or is named
 * among the methods with no gradient, with the reason.
 */
import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import { Tensor } from '../../tensor/index.js';
import { values } from '../support.js';

/** Methods that are not differentiable ops, with why. */
const NO_GRADIENT: Record<string, string> = {
  constructor: 'the class',
  dispose: 'memory', assertAlive: 'a check', toString: 'formatting',
  data: 'read-back', toArray: 'read-back', item: 'read-back',
  asStrided: 'the raw view every view is built from (no shape check to invert)',
  backward: 'runs the graph', detach: 'cuts the history by definition', requiresGrad_: 'sets a flag',
  to: 'a device move: its backward would read back from an asynchronous device; move leaves instead',
  eq: 'comparison (piecewise constant)', ne: 'comparison', lt: 'comparison', le: 'comparison', gt: 'comparison', ge: 'comparison',
  argmax: 'an index',
};

/** x: float64 [2, 3, 4] in (0.5, 1.5) (log, sqrt, rsqrt need positive inputs). */
const c = () => uhd.tensor(values(24, 7, 0.5, 1.5), { shape: [2, 3, 4], dtype: 'float64' });
const w = () => uhd.tensor(values(20, 8), { shape: [4, 5], dtype: 'float64' });

/** One call per differentiable method on x [2, 3, 4]. */
const CASES: Record<string, (x: Tensor) => Tensor> = {
  reshape: (x) => x.reshape(4, 6), view: (x) => x.view([6, 4]), flatten: (x) => x.flatten(),
  permute: (x) => x.permute(2, 0, 1), transpose: (x) => x.transpose(0, 2),
  slice: (x) => x.slice(null, [0, 3, 2]), narrow: (x) => x.narrow(2, 1, 2),
  expand: (x) => x.expand(3, 2, 3, 4), squeeze: (x) => x.unsqueeze(0).squeeze(0).mul(x), unsqueeze: (x) => x.unsqueeze(1),
  contiguous: (x) => x.permute(1, 0, 2).contiguous(), clone: (x) => x.clone(), cast: (x) => x.cast('float64'),
  neg: (x) => x.neg(), abs: (x) => x.abs(), exp: (x) => x.exp(), log: (x) => x.log(), sqrt: (x) => x.sqrt(),
  rsqrt: (x) => x.rsqrt(), tanh: (x) => x.tanh(), sigmoid: (x) => x.sigmoid(), relu: (x) => x.relu(),
  gelu: (x) => x.gelu(), silu: (x) => x.silu(),
  add: (x) => x.add(c()), sub: (x) => x.sub(2), mul: (x) => x.mul(c()), div: (x) => x.div(c()), pow: (x) => x.pow(c()),
  maximum: (x) => x.maximum(1), minimum: (x) => x.minimum(1),
  sum: (x) => x.sum(1), mean: (x) => x.mean([0, 2], true), max: (x) => x.max(2),
  softmax: (x) => x.softmax(1), logSoftmax: (x) => x.logSoftmax(), matmul: (x) => x.matmul(w()),
};

function methodsOfTensor(): string[] {
  const proto = Tensor.prototype as unknown as Record<string, unknown>;
  return Object.getOwnPropertyNames(Tensor.prototype).filter((name) => {
    const d = Object.getOwnPropertyDescriptor(Tensor.prototype, name)!;
    return d.get === undefined && typeof proto[name] === 'function';
  });
}

describe('Tensor methods record gradients (enumerated from the prototype)', () => {
  const methods = methodsOfTensor();

  it('every method is either a differentiable case here or named as having no gradient', () => {
    const unclassified = methods.filter((m) => !(m in CASES) && !(m in NO_GRADIENT));
    expect(unclassified, 'add a case (or a reason in NO_GRADIENT)').toEqual([]);
    const stale = Object.keys(CASES).filter((m) => !methods.includes(m));
    expect(stale, 'cases for methods Tensor no longer has').toEqual([]);
    expect(methods.length).toBeGreaterThan(45);
  });

  for (const name of Object.keys(CASES)) {
    it(`${name}: records a node and passes gradcheck through the method`, () => {
      const x = c();
      x.requiresGrad = true;
      const y = CASES[name](x);
      expect(y.requiresGrad, name).toBe(true);
      expect(y.gradFn, name).not.toBeNull();
      y.dispose();
      ag.gradcheck((t) => CASES[name](t), [x], { atol: 1e-6, rtol: 1e-4 });
      x.dispose();
    });
  }
});

describe('matmul of 1-d operands through autograd (issue 12)', () => {
  it('vector . vector is a scalar with the other vector as each gradient, as the tensor layer computes', async () => {
    const a = uhd.tensor([1, 2, 3], { dtype: 'float64' }).requiresGrad_();
    const b = uhd.tensor([4, -5, 6], { dtype: 'float64' }).requiresGrad_();
    const y = ag.matmul(a, b);
    expect(y.shape).toEqual([]);
    expect(await y.item()).toBe(await uhd.matmul(a, b).item());
    y.backward();
    expect(Array.from(await a.grad!.data())).toEqual([4, -5, 6]);
    expect(Array.from(await b.grad!.data())).toEqual([1, 2, 3]);
    // and through the method, batched matrix @ vector
    const m = uhd.tensor(values(12, 3), { shape: [2, 2, 3], dtype: 'float64' }).requiresGrad_();
    const z = m.matmul(a);
    expect(z.shape).toEqual([2, 2]);
    z.sum().backward();
    expect(m.grad!.shape).toEqual([2, 2, 3]);
  });
});
