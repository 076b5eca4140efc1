/**
 * Every differentiable op as a case for gradient tests: how to draw its input shapes and how
 * to call it. Shared by the gradcheck property test (float64, CPU) and the CPU-vs-WebGPU
 * gradient test.
 */
import fc from 'fast-check';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';

export interface OpCase {
  name: string;
  /** Shapes of the differentiable inputs, plus a free integer for op parameters. */
  arb: fc.Arbitrary<{ shapes: number[][]; p: number }>;
  /** Input value range (some ops need positive inputs). */
  range?: [number, number];
  fn: (xs: Tensor[], p: number) => Tensor;
}

const dim = (max = 5) => fc.integer({ min: 1, max });
const shape = (minRank = 1, maxRank = 3, max = 5) => fc.array(dim(max), { minLength: minRank, maxLength: maxRank });
const p = fc.integer({ min: 0, max: 1000 });
const one = (s: fc.Arbitrary<number[]> = shape()) => fc.record({ shapes: s.map((x) => [x]), p });

/** The int32 tensors ops take (indices, segment ids) on the device of `like`. */
function ints(values: number[], shape: number[], like: Tensor): Tensor {
  return uhd.tensor(values, { shape, dtype: 'int32', device: like.device });
}

const UNARY: [string, [number, number]?][] = [
  ['neg'], ['abs', [0.1, 2]], ['exp'], ['log', [0.2, 3]], ['sqrt', [0.2, 3]], ['rsqrt', [0.2, 3]], ['tanh'],
  ['sigmoid'], ['relu', [0.05, 2]], ['gelu'], ['geluErf'], ['silu'],
];

export const CASES: OpCase[] = [
  ...UNARY.map(([op, range]): OpCase => ({ name: op, range, arb: one(), fn: ([x]) => ag.unary(op as uhd.UnaryOp, x) })),
  ...(['add', 'sub', 'mul', 'div', 'maximum', 'minimum'] as const).map((op): OpCase => ({
    name: `${op} (broadcast)`,
    range: op === 'div' ? [0.5, 2] : undefined,
    arb: fc.record({ shapes: shape(1, 3).chain((s) => fc.integer({ min: 0, max: 7 }).map((m) => [s, s.map((d, i) => ((m >> i) & 1 ? 1 : d))])), p }),
    fn: ([a, b]) => ag.binary(op, a, b),
  })),
  { name: 'pow', range: [0.5, 2], arb: fc.record({ shapes: shape().map((s) => [s, s]), p }), fn: ([a, b]) => ag.pow(a, b) },
  { name: 'mul by a number', arb: one(), fn: ([x], k) => ag.mul(ag.add(x, k / 100), 3) },
  { name: 'where', arb: fc.record({ shapes: shape().map((s) => [s, s]), p }), fn: ([a, b]) => ag.where(ag.gt(a, 0), a, b) },
  { name: 'sum over dims', arb: one(shape(1, 4)), fn: ([x], k) => ag.sum(x, [...x.shape.keys()].filter((d) => (k >> d) & 1), (k & 16) > 0) },
  { name: 'mean over dims', arb: one(shape(1, 4)), fn: ([x], k) => ag.mean(x, [...x.shape.keys()].filter((d) => (k >> d) & 1), (k & 16) > 0) },
  { name: 'max over a dim', arb: one(), fn: ([x], k) => ag.max(x, k % x.rank) },
  { name: 'softmax', arb: one(), fn: ([x], k) => ag.softmax(x, k % x.rank) },
  { name: 'logSoftmax', arb: one(), fn: ([x], k) => ag.logSoftmax(x, k % x.rank) },
  {
    name: 'matmul (batched, broadcast, transposed)',
    arb: fc.record({ shapes: fc.tuple(dim(), dim(), dim(), dim(3)).map(([m, k, n, b]) => [[b, m, k], [n, k]]), p }),
    fn: ([a, b]) => ag.matmul(a, ag.transpose(b)),
  },
  {
    name: 'linear (bias, activation, residual: fused on WebGPU)',
    arb: fc.record({ shapes: fc.tuple(dim(), dim(), dim(), dim(3)).map(([m, k, n, b]) => [[b, m, k], [n, k], [n], [b, m, n]]), p }),
    fn: ([x, w, b, r], k) => ag.linear(x, w, k % 2 ? b : null, {
      activation: (['none', 'gelu', 'geluErf'] as const)[k % 3],
      residual: (k >> 2) % 2 ? r : null,
    }),
  },
  { name: 'matmul (vector)', arb: fc.record({ shapes: fc.tuple(dim(), dim()).map(([k, n]) => [[k], [k, n]]), p }), fn: ([a, b]) => ag.matmul(a, b) },
  // issue 12: the tensor layer returned the scalar while autograd threw (squeeze of a 1-d result)
  { name: 'matmul (vector . vector, matrix @ vector)', arb: fc.record({ shapes: fc.tuple(dim(), dim()).map(([k, m]) => [[k], [k], [m, k]]), p }), fn: ([a, b, m]) => ag.add(ag.matmul(a, b), ag.matmul(m, a)) },
  {
    name: 'attention (GQA, causal or segments)',
    arb: fc.record({
      shapes: fc.tuple(dim(2), dim(2), dim(6), dim(4)).map(([hkv, g, s, d]) => [[1, hkv * g, s, d], [1, hkv, s, d], [1, hkv, s, d]]),
      p,
    }),
    fn: ([q, k, v], n) => {
      const S = q.shape[2];
      if (n % 2) return ag.attention(q, k, v, { causal: true });
      const ids = ints(Array.from({ length: S }, (_, i) => Math.floor((i * 3) / S)), [1, S], q);
      return ag.attention(q, k, v, { segmentIds: ids });
    },
  },
  {
    name: 'attention (2x2 windows)',
    arb: fc.record({ shapes: fc.tuple(dim(2), dim(2), dim(3)).map(([h, w, d]) => [[1, 2, 4 * h * w, d], [1, 2, 4 * h * w, d], [1, 2, 4 * h * w, d]]), p }),
    fn: ([q, k, v]) => {
      const S = q.shape[2];
      const h = [2, 4, 6, 8].find((hh) => S % hh === 0 && (S / hh) % 2 === 0) ?? 2;
      return ag.attention(q, k, v, { window: { h, w: S / h } });
    },
  },
  { name: 'layerNorm (affine)', arb: fc.record({ shapes: shape(2, 3).map((s) => [s, [s[s.length - 1]], [s[s.length - 1]]]), p }), fn: ([x, w, b]) => ag.layerNorm(x, w, b, 1e-5) },
  { name: 'layerNorm (plain)', arb: one(shape(1, 3)), fn: ([x]) => ag.layerNorm(x, null, null, 1e-5) },
  { name: 'rmsNorm (weight)', arb: fc.record({ shapes: shape(2, 3).map((s) => [s, [s[s.length - 1]]]), p }), fn: ([x, w]) => ag.rmsNorm(x, w, 1e-6) },
  {
    name: 'gather',
    arb: one(shape(2, 3)),
    fn: ([x], k) => {
      const d = k % x.rank;
      const idxShape = x.shape.map((s, i) => (i === d ? s + 1 : s));
      const n = idxShape.reduce((a, b) => a * b, 1);
      return ag.gather(x, d, ints(Array.from({ length: n }, (_, i) => (i * 7 + k) % x.shape[d]), idxShape, x));
    },
  },
  {
    name: 'indexSelect (embedding lookup)',
    arb: one(shape(2, 2)),
    fn: ([x], k) => ag.indexSelect(x, 0, ints([k % x.shape[0], 0, (k + 1) % x.shape[0], k % x.shape[0]], [4], x)),
  },
  {
    name: 'scatterAdd',
    arb: fc.record({ shapes: shape(2, 2).map((s) => [s, s]), p }),
    fn: ([x, src], k) => {
      const n = src.size;
      return ag.scatterAdd(x, 0, ints(Array.from({ length: n }, (_, i) => (i + k) % x.shape[0]), [...src.shape], x), src);
    },
  },
  { name: 'concat', arb: fc.record({ shapes: fc.tuple(dim(), dim(), dim()).map(([a, b, c]) => [[a, b], [a, c]]), p }), fn: ([a, b]) => ag.concat([a, b], 1) },
  { name: 'stack', arb: fc.record({ shapes: shape().map((s) => [s, s]), p }), fn: ([a, b], k) => ag.stack([a, b], k % (a.rank + 1)) },
  {
    name: 'pixelUnshuffle',
    arb: fc.record({ shapes: fc.tuple(dim(2), dim(2), dim(3), dim(2)).map(([h, w, d, b]) => [[b, 4 * h * w, d]]), p }),
    fn: ([x]) => {
      const S = x.shape[1];
      const h = 2 * Math.max(1, Math.floor(Math.sqrt(S / 4)));
      const hh = S % h === 0 && (S / h) % 2 === 0 ? h : 2;
      return ag.pixelUnshuffle(x, hh, S / hh, 2);
    },
  },
  {
    name: 'avgPool2x2',
    arb: fc.record({ shapes: fc.tuple(dim(2), dim(2), dim(3)).map(([h, w, d]) => [[4 * h * w, d]]), p }),
    fn: ([x]) => ag.avgPool2x2(x, 2, x.shape[0] / 2),
  },
  { name: 'contiguous of a permute', arb: one(shape(2, 3)), fn: ([x]) => ag.contiguous(ag.permute(x, [...x.shape.keys()].reverse())) },
  { name: 'reshape', arb: one(shape(2, 3)), fn: ([x]) => ag.mul(ag.reshape(ag.transpose(x, 0, -1), [-1]), 2) },
  { name: 'slice with steps', arb: one(shape(1, 3, 7)), fn: ([x], k) => ag.slice(x, ...x.shape.map((s, i) => (i === 0 ? ([k % s, s, 1 + (k % 3)] as const) : null))) },
  { name: 'narrow', arb: one(shape(1, 3)), fn: ([x], k) => ag.narrow(x, 0, k % x.shape[0], 1) },
  { name: 'expand', arb: one(shape(1, 3)), fn: ([x]) => ag.mul(ag.expand(ag.unsqueeze(x, 0), [3, ...x.shape]), 1.5) },
  { name: 'squeeze/unsqueeze', arb: one(shape(1, 3)), fn: ([x]) => ag.squeeze(ag.unsqueeze(ag.exp(x), 1), 1) },
  { name: 'clone', arb: one(), fn: ([x]) => ag.clone(ag.mul(x, x)) },
];
