/**
 * Shared test harness: the device under test (UHD_DEVICE, as tinygrad's DEVICE), opening it
 * per file, building the same (possibly strided) view on it and on the CPU reference from one
 * seed, and comparing results with a stated tolerance.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, expect } from 'vitest';
import { closeDevice, openDevice, parseDevice } from '../backends/index.js';
import { gpuContext } from '../kernels/index.js';
import * as uhd from '../tensor/index.js';
import type { Device, DType, Tensor, TypedArray } from '../tensor/index.js';

/**
 * The backend the device-parametrized tests check against the CPU reference:
 * `UHD_DEVICE=cpu|webgpu|wasm` (default webgpu). tests/kernels/* and
 * tests/autograd/device-grads.test.ts run on it; .ci/run runs them once per backend.
 */
export const DEVICE: Device = parseDevice('UHD_DEVICE', process.env.UHD_DEVICE ?? 'webgpu');

/**
 * Opens `device` (default: the device under test) before the file's tests and closes it after
 * (so the process can exit). On WebGPU, index checks are on, so an out-of-range gather fails
 * there as it does on the CPU.
 */
export function useDevice(device: Device = DEVICE): void {
  beforeAll(async () => {
    await openDevice(device);
    if (device === 'webgpu') gpuContext().tuning.checkIndices = true;
  });
  afterAll(() => {
    closeDevice(device);
  });
}

/** For the files that test WebGPU itself (its runtime, its kernel variants). */
export function useWebGPU(): void {
  useDevice('webgpu');
}

export interface Tolerance {
  atol: number;
  rtol: number;
}

/** f32 GPU vs f64-accumulated CPU reference, for elementwise-scale errors. */
export const F32: Tolerance = { atol: 1e-5, rtol: 1e-4 };

/** |a - e| <= atol + rtol * |e| elementwise; the message names the first bad index. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance = F32, label = ''): void {
  expect(actual.length, `${label} length`).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (a === e) continue;
    // an infinite expectation is met only by the same infinity (rtol * Infinity would accept anything)
    const ok = Number.isFinite(e) && Math.abs(a - e) <= tol.atol + tol.rtol * Math.abs(e);
    if (!ok) {
      expect.fail(`${label} element ${i}: got ${a}, expected ${e} (atol ${tol.atol}, rtol ${tol.rtol})`);
    }
  }
}

/** Deterministic values in [lo, hi) from a seed (independent of the library's RNG). */
export function values(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  let s = seed >>> 0 || 1;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = lo + ((s >>> 0) / 4294967296) * (hi - lo);
  }
  return out;
}

/** A recipe for a view: a base tensor and a transform, reproducible on any device. */
export interface ViewRecipe {
  /** The shape the op sees. */
  shape: number[];
  kind: 'dense' | 'permuted' | 'sliced' | 'broadcast';
  seed: number;
}

/** Builds the view described by `r` on `device`, with values from `r.seed`. */
export function makeView(r: ViewRecipe, device: Device, dtype: DType = 'float32', lo = -1, hi = 1): Tensor {
  const { shape, kind } = r;
  const n = shape.reduce((a, b) => a * b, 1);
  const make = (s: number[], count: number) => {
    const v = values(count, r.seed, lo, hi);
    const data = dtype === 'int32' ? Int32Array.from(v, (x) => Math.floor(x)) : v;
    return uhd.tensor(data as TypedArray, { shape: s, dtype, device });
  };
  if (kind === 'dense' || shape.length === 0) return make(shape, n);
  if (kind === 'permuted') {
    // base holds the dims reversed; permuting back gives `shape` with non-unit strides
    const rev = [...shape].reverse();
    const base = make(rev, n);
    const out = base.permute([...shape.keys()].reverse());
    base.dispose();
    return out;
  }
  if (kind === 'sliced') {
    // base is larger: each dim doubled plus one; take every 2nd element from offset 1
    const big = shape.map((s) => 2 * s + 1);
    const base = make(big, big.reduce((a, b) => a * b, 1));
    const out = base.slice(...shape.map((s) => [1, 1 + 2 * s, 2] as const));
    base.dispose();
    return out;
  }
  // broadcast: the first dim of size > 1 is expanded from 1
  const d = shape.findIndex((s) => s > 1);
  if (d < 0) return make(shape, n);
  const small = shape.map((s, i) => (i === d ? 1 : s));
  const base = make(small, n / shape[d]);
  const out = base.expand(shape);
  base.dispose();
  return out;
}

/** Shapes with sizes that stress kernels: 1, primes, off-workgroup sizes. */
export function arbShape(minRank = 1, maxRank = 4, maxDim = 37, maxNumel = 40_000): fc.Arbitrary<number[]> {
  return fc
    .array(fc.oneof(fc.constant(1), fc.integer({ min: 1, max: maxDim }), fc.constantFrom(2, 3, 5, 7, 13, 31, 32, 33)), {
      minLength: minRank,
      maxLength: maxRank,
    })
    .filter((s) => s.reduce((a, b) => a * b, 1) <= maxNumel);
}

export function arbView(shape: fc.Arbitrary<number[]> = arbShape()): fc.Arbitrary<ViewRecipe> {
  return fc.record({
    shape,
    kind: fc.constantFrom('dense', 'permuted', 'sliced', 'broadcast'),
    seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
  }) as fc.Arbitrary<ViewRecipe>;
}

/** Property-test settings: few runs (llvmpipe is slow), deterministic seed unless overridden. */
export const PROP = { numRuns: Number(process.env.UHD_PROP_RUNS ?? 25), seed: Number(process.env.UHD_PROP_SEED ?? 42) };

/** Runs `op` on the CPU and on the device under test over the same views and compares the results. */
export async function agree(
  op: (...xs: Tensor[]) => Tensor,
  recipes: ViewRecipe[],
  tol: Tolerance = F32,
  opts: { dtype?: DType; lo?: number; hi?: number; label?: string; device?: Device } = {},
): Promise<void> {
  const dtype = opts.dtype ?? 'float32';
  const cpuIn = recipes.map((r) => makeView(r, 'cpu', dtype, opts.lo, opts.hi));
  const gpuIn = recipes.map((r) => makeView(r, opts.device ?? DEVICE, dtype, opts.lo, opts.hi));
  const want = op(...cpuIn);
  const got = op(...gpuIn);
  expect(got.shape).toEqual(want.shape);
  expect(got.dtype).toBe(want.dtype);
  expectClose(await got.data(), await want.data(), tol, opts.label ?? JSON.stringify(recipes.map((r) => r.shape)));
  for (const t of [...cpuIn, ...gpuIn, want, got]) t.dispose();
}
