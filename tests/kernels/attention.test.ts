import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flashTiles, setTileProfile, type TileProfile } from '../../kernels/attention.js';
import { gpuContext } from '../../kernels/index.js';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { DEVICE, expectClose, PROP, useDevice, type Tolerance } from '../support.js';

useDevice();

const DEVICES: readonly Device[] = [...new Set<Device>(['cpu', DEVICE])];

/** f32 online softmax (WebGPU) against the f64-accumulated reference, inputs in [-1, 1]. */
const TOL: Tolerance = { atol: 2e-5, rtol: 2e-4 };

/**
 * How q, k and v sit in memory. Each gives the same logical [B, H, S, D] tensor:
 * dense; `bshd` a permuted [B, S, H, D] (what a projection produces); `reversed` a base with
 * all dims reversed (head-dim stride > 1); `sliced` every other element of a padded base;
 * `packed` q, k and v as slices of one [B, S, Hq + 2 Hkv, D] tensor (a fused qkv projection).
 */
type Layout = 'dense' | 'bshd' | 'reversed' | 'sliced' | 'packed';
const LAYOUTS: readonly Layout[] = ['dense', 'bshd', 'reversed', 'sliced', 'packed'];

/** One attention problem, as plain arrays, buildable on either device. */
interface Problem {
  B: number;
  Hq: number;
  Hkv: number;
  Sq: number;
  Sk: number;
  D: number;
  /** Dense [B, Hq, Sq, D] and [B, Hkv, Sk, D]. */
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  /** [B, Sq] and [B, Sk], or null for no segment mask. */
  segQ: Int32Array | null;
  segK: Int32Array | null;
  /** Pass one tensor for both (needs Sq == Sk and segQ equal to segK). */
  sharedSeg: boolean;
  causal: boolean;
  window: { h: number; w: number } | null;
  scale?: number;
  layout: Layout;
  /** Segment ids as a strided (transposed, sliced) view. */
  segStrided: boolean;
}

/** A deterministic generator of floats in [0, 1) (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function uniform(n: number, r: () => number): Float32Array {
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
}

/**
 * Segment ids of B sequences of length S in contiguous runs (as the views of an image are).
 * `sorted`: each run a new, larger id; `reused`: ids drawn from a few values, so one id may
 * own several separate runs.
 */
function segmentRuns(B: number, S: number, r: () => number, mode: 'sorted' | 'reused'): Int32Array {
  const ids = new Int32Array(B * S);
  for (let b = 0; b < B; b++) {
    let id = Math.floor(r() * 5);
    for (let t = 0; t < S; ) {
      const len = 1 + Math.floor(r() * Math.max(1, S / 2));
      for (let i = 0; i < len && t < S; i++, t++) ids[b * S + t] = id;
      id = mode === 'sorted' ? id + 1 + Math.floor(r() * 3) : Math.floor(r() * 4);
    }
  }
  return ids;
}

/**
 * A tensor of logical `shape` holding `data` (row-major), stored in a base whose dims are
 * the logical dims in `order`, optionally every other element (from 1) of a base with each
 * dim 2n+1 whose other elements are junk (so a wrong stride reads garbage, not zeros).
 */
function laidOut(device: Device, data: Float32Array | Int32Array, shape: number[], order: number[], sliced: boolean): Tensor {
  const rank = shape.length;
  const baseShape = order.map((d) => (sliced ? 2 * shape[d] + 1 : shape[d]));
  const n = baseShape.reduce((a, b) => a * b, 1);
  const int = data instanceof Int32Array;
  const base = int ? new Int32Array(n).fill(-77) : new Float32Array(n).fill(1e3);
  const strides = baseShape.map((_, a) => baseShape.slice(a + 1).reduce((x, y) => x * y, 1));
  const idx = new Array<number>(rank).fill(0);
  for (let i = 0; i < data.length; i++) {
    let off = 0;
    for (let a = 0; a < rank; a++) off += (sliced ? 1 + 2 * idx[order[a]] : idx[order[a]]) * strides[a];
    base[off] = data[i];
    for (let d = rank - 1; d >= 0 && ++idx[d] === shape[d]; d--) idx[d] = 0;
  }
  const t = uhd.tensor(base, { shape: baseShape, dtype: int ? 'int32' : 'float32', device });
  const inverse = order.map((_, d) => order.indexOf(d));
  const permuted = t.permute(inverse);
  t.dispose();
  if (!sliced) return permuted;
  const view = permuted.slice(...shape.map((s) => [1, 1 + 2 * s, 2] as const));
  permuted.dispose();
  return view;
}

const ORDERS: Record<Exclude<Layout, 'packed'>, [number[], boolean]> = {
  dense: [[0, 1, 2, 3], false],
  bshd: [[0, 2, 1, 3], false],
  reversed: [[3, 2, 1, 0], false],
  sliced: [[0, 1, 2, 3], true],
};

/** q, k, v of `p` on `device`, as views in the problem's layout. */
function buildQkv(p: Problem, device: Device): [Tensor, Tensor, Tensor] {
  const { B, Hq, Hkv, Sq, Sk, D } = p;
  if (p.layout === 'packed' && Sq === Sk) {
    // One [B, S, Hq + 2 Hkv, D] tensor; q, k, v are head ranges of it, permuted to [B, H, S, D].
    const H = Hq + 2 * Hkv;
    const all = new Float32Array(B * Sq * H * D);
    const put = (src: Float32Array, heads: number, h0: number) => {
      for (let b = 0; b < B; b++)
        for (let h = 0; h < heads; h++)
          for (let s = 0; s < Sq; s++)
            for (let d = 0; d < D; d++) all[((b * Sq + s) * H + h0 + h) * D + d] = src[((b * heads + h) * Sq + s) * D + d];
    };
    put(p.q, Hq, 0);
    put(p.k, Hkv, Hq);
    put(p.v, Hkv, Hq + Hkv);
    const base = uhd.tensor(all, { shape: [B, Sq, H, D], dtype: 'float32', device });
    const part = (h0: number, n: number) => base.slice(null, null, [h0, h0 + n]).permute(0, 2, 1, 3);
    const out: [Tensor, Tensor, Tensor] = [part(0, Hq), part(Hq, Hkv), part(Hq + Hkv, Hkv)];
    base.dispose();
    return out;
  }
  const [order, sliced] = ORDERS[p.layout === 'packed' ? 'bshd' : p.layout];
  return [
    laidOut(device, p.q, [B, Hq, Sq, D], order, sliced),
    laidOut(device, p.k, [B, Hkv, Sk, D], order, sliced),
    laidOut(device, p.v, [B, Hkv, Sk, D], order, sliced),
  ];
}

/** Runs `p` on `device` and returns the output [B, Hq, Sq, D] as a dense array. */
async function run(p: Problem, device: Device): Promise<Float32Array> {
  const [q, k, v] = buildQkv(p, device);
  const segView = (ids: Int32Array, S: number) => laidOut(device, ids, [p.B, S], p.segStrided ? [1, 0] : [0, 1], p.segStrided);
  const made: Tensor[] = [q, k, v];
  let segmentIds: uhd.AttentionOptions['segmentIds'];
  if (p.segQ && p.segK) {
    if (p.sharedSeg) {
      segmentIds = segView(p.segQ, p.Sq);
      made.push(segmentIds);
    } else {
      segmentIds = { q: segView(p.segQ, p.Sq), k: segView(p.segK, p.Sk) };
      made.push(segmentIds.q, segmentIds.k);
    }
  }
  const out = uhd.attention(q, k, v, { causal: p.causal, segmentIds, window: p.window ?? undefined, scale: p.scale });
  expect(out.shape).toEqual([p.B, p.Hq, p.Sq, p.D]);
  const data = (await out.data()) as Float32Array;
  for (const t of [...made, out]) t.dispose();
  return data;
}

/** The device under test agrees with the CPU reference within TOL. */
async function expectAgree(p: Problem): Promise<void> {
  const label = JSON.stringify({ ...p, q: undefined, k: undefined, v: undefined, segQ: undefined, segK: undefined });
  expectClose(await run(p, DEVICE), await run(p, 'cpu'), TOL, label);
}

/** Rows (b, h, i) of two [B, H, S, D] outputs are bitwise equal wherever `keep(b, i)` holds. */
function expectRowsEqual(a: Float32Array, b: Float32Array, p: Problem, keep: (b: number, i: number) => boolean, label: string): void {

  for (let bi = 0; bi < p.B; bi++)
    for (let h = 0; h < p.Hq; h++)
      for (let i = 0; i < p.Sq; i++) {
        if (!keep(bi, i)) continue;
        const at = ((bi * p.Hq + h) * p.Sq + i) * p.D;
        for (let d = 0; d < p.D; d++) {
          if (a[at + d] !== b[at + d]) expect.fail(`${label}: row (b ${bi}, h ${h}, i ${i}) d ${d}: ${a[at + d]} vs ${b[at + d]}`);
        }

      }
}

/**
 * Two computations of the same rows by different shapes of the problem (GQA vs repeated
 * heads, decoding vs full): bitwise equal on the CPU; on WebGPU they may run different tile
 * variants, which a GPU compiler may contract into FMAs differently, so allow a few ulps.
 */
function expectSame(a: Float32Array, b: Float32Array, device: Device, label: string): void {
  expectClose(a, b, device === 'cpu' ? { atol: 0, rtol: 0 } : { atol: 1e-6, rtol: 1e-5 }, label);
}

/** Replaces q, k, v of token t of batch b (every head) by fresh values (Sq = Sk). */
function perturbToken(p: Problem, b: number, t: number, r: () => number): void {
  const S = p.Sq;
  for (const [x, H] of [[p.q, p.Hq], [p.k, p.Hkv], [p.v, p.Hkv]] as const) {
    for (let h = 0; h < H; h++) for (let d = 0; d < p.D; d++) x[((b * H + h) * S + t) * p.D + d] = 2 * r() - 1;
  }
}

const clone = (p: Problem): Problem => ({ ...p, q: p.q.slice(), k: p.k.slice(), v: p.v.slice() });

// ---- random problems --------------------------------------------------------------------

/** Sequence lengths: 1, primes, around the block sizes, and longer than one key block. */
const seqLen = fc.oneof(
  fc.constantFrom(1, 2, 3, 7, 13, 16, 17, 31, 64, 65),
  fc.integer({ min: 1, max: 40 }),
  fc.integer({ min: 70, max: 150 }),
);
/** Head dims: 1, odd 5 and 13, 8, and SigLIP's 72. Each distinct D is a pipeline to compile. */
const headDim = fc.constantFrom(1, 5, 8, 13, 72);
const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

interface Shape {
  B: number;
  Hkv: number;
  group: number;
  Sq: number;
  Sk: number;
  D: number;
  causal: boolean;
  segs: 'none' | 'sorted' | 'reused';
  layout: Layout;
  segStrided: boolean;
  customScale: boolean;
  seed: number;
}

const arbShape: fc.Arbitrary<Shape> = fc
  .record({
    B: fc.integer({ min: 1, max: 2 }),
    Hkv: fc.integer({ min: 1, max: 2 }),
    group: fc.constantFrom(1, 2, 3),
    Sq: seqLen,
    Sk: seqLen,
    D: headDim,
    causal: fc.boolean(),
    segs: fc.constantFrom('none', 'sorted', 'reused'),
    layout: fc.constantFrom(...LAYOUTS),
    segStrided: fc.boolean(),
    customScale: fc.boolean(),
    seed,
  })
  // keep the CPU reference cheap: at most ~2M score-dims
  .filter((s) => s.B * s.Hkv * s.group * s.Sq * s.Sk * s.D <= 2_000_000);

/** A problem from a shape: values in [-1, 1], segment ids in runs (q's are k's last Sq when Sq <= Sk). */
function problem(s: Shape, window: { h: number; w: number } | null = null): Problem {
  const r = rng(s.seed);
  const Hq = s.Hkv * s.group;
  let segQ: Int32Array | null = null;
  let segK: Int32Array | null = null;
  if (s.segs !== 'none') {
    segK = segmentRuns(s.B, s.Sk, r, s.segs);
    if (s.Sq <= s.Sk) {
      segQ = new Int32Array(s.B * s.Sq);
      for (let b = 0; b < s.B; b++) segQ.set(segK.subarray(b * s.Sk + s.Sk - s.Sq, (b + 1) * s.Sk), b * s.Sq);
    } else {
      segQ = segmentRuns(s.B, s.Sq, r, s.segs);
    }
  }
  return {
    B: s.B,
    Hq,
    Hkv: s.Hkv,
    Sq: s.Sq,
    Sk: s.Sk,
    D: s.D,
    q: uniform(s.B * Hq * s.Sq * s.D, r),
    k: uniform(s.B * s.Hkv * s.Sk * s.D, r),
    v: uniform(s.B * s.Hkv * s.Sk * s.D, r),
    segQ,
    segK,
    sharedSeg: s.Sq === s.Sk && s.seed % 2 === 0,
    causal: s.causal,
    window,
    scale: s.customScale ? 0.3 + r() : undefined,
    layout: s.layout,
    segStrided: s.segStrided,
  };
}

/** Even grid sides for 2x2 windows. */
const arbWindow = fc.record({ h: fc.integer({ min: 1, max: 8 }).map((x) => 2 * x), w: fc.integer({ min: 1, max: 10 }).map((x) => 2 * x) });

// ---- tests ------------------------------------------------------------------------------

describe('the CPU reference', () => {
  it('matches a hand-computed case: one query, two keys, causal and segment masks', async () => {
    // q·k = [1, 0] with scale 1 -> weights e/(e+1), 1/(e+1)
    const q = uhd.tensor([1, 0], { shape: [1, 1, 1, 2], dtype: 'float64' });
    const k = uhd.tensor([1, 0, 0, 1], { shape: [1, 1, 2, 2], dtype: 'float64' });
    const v = uhd.tensor([10, 0, 0, 10], { shape: [1, 1, 2, 2], dtype: 'float64' });
    const e = Math.E;
    const full = await uhd.attention(q, k, v, { scale: 1 }).data();
    expectClose(full, [(10 * e) / (e + 1), 10 / (e + 1)], { atol: 1e-12, rtol: 1e-12 });
    // causal with Sq = 1 < Sk = 2: the query is the last position and sees both keys
    expectClose(await uhd.attention(q, k, v, { scale: 1, causal: true }).data(), full, { atol: 1e-12, rtol: 0 });
    const ids = (a: number[]) => uhd.tensor(Int32Array.from(a), { shape: [1, a.length], dtype: 'int32' });
    const seg = await uhd.attention(q, k, v, { scale: 1, segmentIds: { q: ids([7]), k: ids([3, 7]) } }).data();
    expect([...seg]).toEqual([0, 10]);
    const none = await uhd.attention(q, k, v, { scale: 1, segmentIds: { q: ids([5]), k: ids([3, 7]) } }).data();
    expect([...none]).toEqual([0, 0]);
  });
});

/**
 * Both tile profiles run here: `cpu` (the default on llvmpipe: several queries per thread,
 * whole head dims) and `gpu` (the default on real GPUs: the head dim split across threads).
 */
const PROFILE_RUNS: Record<TileProfile, number> = { cpu: 30, gpu: 15 };
const PROFILES: (TileProfile | null)[] = DEVICE === 'webgpu' ? ['cpu', 'gpu'] : [null];
for (const profile of PROFILES) {
  describe(`${DEVICE} attention matches the CPU reference (${profile ?? 'default'} tiles)`, () => {
    beforeAll(() => setTileProfile(profile));
    afterAll(() => setTileProfile(null));

    it('on random shapes, heads (GQA), masks, scales and strided views', async () => {
      await fc.assert(
        fc.asyncProperty(arbShape, async (s) => {
          await expectAgree(problem(s));
        }),
        { ...PROP, numRuns: PROFILE_RUNS[profile ?? 'cpu'] },
      );
    });

    it('at the model sizes: SigLIP views (D 72, segment ids), Qwen3 prefill with a cache and decoding (D 128, GQA 4:1, causal)', async () => {
      const base = { B: 1, causal: false, layout: 'bshd' as const, segStrided: false, customScale: false, seed: 11 };
      await expectAgree(problem({ ...base, Hkv: 2, group: 1, Sq: 200, Sk: 200, D: 72, segs: 'sorted' }));
      await expectAgree(problem({ ...base, Hkv: 1, group: 4, Sq: 70, Sk: 90, D: 128, segs: 'none', causal: true }));
      await expectAgree(problem({ ...base, Hkv: 2, group: 4, Sq: 1, Sk: 137, D: 128, segs: 'none', causal: true }));
    });
  });
}

describe(`${DEVICE} attention, other cases`, () => {
  it('with 2x2 windows (and causal / segment masks on top) on random even grids', async () => {
    await fc.assert(
      fc.asyncProperty(arbWindow, arbShape, async (win, s) => {
        const S = win.h * win.w;
        await expectAgree(problem({ ...s, Sq: S, Sk: S }, win));
      }),
      { ...PROP, numRuns: 25 },
    );
  });

  it('gives zeros to fully masked queries: ids absent from the keys, causal with Sq > Sk, no keys', async () => {
    for (const device of DEVICES) {
      const p = problem({ B: 1, Hkv: 1, group: 2, Sq: 9, Sk: 6, D: 5, causal: true, segs: 'none', layout: 'dense', segStrided: false, customScale: false, seed: 3 });
      const out = await run(p, device);
      // Sq - Sk = 3: queries 0..2 see no key
      expect([...out.subarray(0, 3 * p.D)].every((x) => x === 0)).toBe(true);
      expect([...out.subarray(3 * p.D, 9 * p.D)].some((x) => x !== 0)).toBe(true);
      p.causal = false;
      p.segQ = Int32Array.from({ length: 9 }, (_, i) => (i < 4 ? 1 : 2));
      p.segK = new Int32Array(6).fill(2);
      const seg = await run(p, device);
      expect([...seg.subarray(0, 4 * p.D)].every((x) => x === 0)).toBe(true);
      expect([...seg].every(Number.isFinite)).toBe(true);
      // no keys at all
      const empty = await run({ ...p, Sk: 0, k: new Float32Array(0), v: new Float32Array(0), segQ: null, segK: null }, device);
      expect([...empty].every((x) => x === 0)).toBe(true);
    }
  });

  it.skipIf(DEVICE !== 'webgpu')('compiles one pipeline per tile configuration, not per size', async () => {
    const shape = (B: number, S: number): Shape => ({
      B, Hkv: 1, group: 2, Sq: S, Sk: S + 3, D: 8, causal: true, segs: 'sorted', layout: 'dense', segStrided: false, customScale: false, seed: 5,
    });
    expect(flashTiles(8, 40, true, 'cpu')).toEqual(flashTiles(8, 400, true, 'cpu'));
    await run(problem(shape(1, 40)), DEVICE);
    const before = gpuContext().pipelineCount;
    await run(problem(shape(2, 97)), DEVICE);
    await run(problem({ ...shape(1, 61), layout: 'reversed' }), DEVICE);
    expect(gpuContext().pipelineCount).toBe(before);
  });
});

describe('masking properties, on both devices', () => {
  /** Small problems for the properties: each is run twice per device. */
  const small = arbShape.map((s) => ({ ...s, D: s.D === 72 ? 8 : s.D, Sk: s.Sq }));

  for (const device of DEVICES) {
    it(`${device}: segment ids isolate: changing one segment's tokens never changes another segment's outputs`, async () => {
      await fc.assert(
        fc.asyncProperty(small, fc.nat(), fc.constantFrom('sorted' as const, 'reused' as const), async (s, pick, mode) => {
          const p = problem({ ...s, segs: mode });
          p.sharedSeg = true;
          p.segK = p.segQ;
          const ids = p.segQ as Int32Array;
          const at = pick % (p.B * p.Sq);
          const [b0, id] = [Math.floor(at / p.Sq), ids[at]];
          const changed = clone(p);
          const r = rng(pick + 1);
          for (let t = 0; t < p.Sq; t++) if (ids[b0 * p.Sq + t] === id) perturbToken(changed, b0, t, r);
          const [x, y] = [await run(p, device), await run(changed, device)];
          expectRowsEqual(x, y, p, (b, i) => b !== b0 || ids[b * p.Sq + i] !== id, 'other segment');
        }),
        { ...PROP, numRuns: 8 },
      );
    });

    it(`${device}: 2x2 windows isolate: changing one window's tokens never changes another window's outputs`, async () => {
      await fc.assert(
        fc.asyncProperty(arbWindow, small, fc.nat(), async (win, s, pick) => {
          const S = win.h * win.w;
          const p = problem({ ...s, Sq: S, Sk: S, segs: 'none' }, win);
          const windowOf = (t: number) => (Math.floor(t / win.w) >> 1) * (win.w >> 1) + ((t % win.w) >> 1);
          const b0 = pick % p.B;
          const w0 = windowOf(pick % S);
          const changed = clone(p);
          const r = rng(pick + 1);
          for (let t = 0; t < S; t++) if (windowOf(t) === w0) perturbToken(changed, b0, t, r);
          const [x, y] = [await run(p, device), await run(changed, device)];
          expectRowsEqual(x, y, p, (b, i) => b !== b0 || windowOf(i) !== w0, 'other window');
        }),
        { ...PROP, numRuns: 8 },
      );
    });

    it(`${device}: 2x2 window attention equals dense attention over each window's 4 tokens`, async () => {
      await fc.assert(
        fc.asyncProperty(arbWindow, small, async (win, s) => {
          const S = win.h * win.w;
          const nW = S / 4;
          const p = problem({ ...s, Sq: S, Sk: S, segs: s.segs === 'none' ? 'none' : 'reused' }, win);
          // Window wi's tokens: top-left, top-right, bottom-left, bottom-right.
          const tokens = (wi: number) => {
            const top = Math.floor(wi / (win.w / 2)) * 2 * win.w + (wi % (win.w / 2)) * 2;
            return [top, top + 1, top + win.w, top + win.w + 1];
          };
          // [B, H, S, D] -> [B * nW, H, 4, D]: each window becomes its own sequence of 4.
          const gather = (x: Float32Array, H: number) => {
            const out = new Float32Array(x.length);
            for (let b = 0; b < p.B; b++)
              for (let wi = 0; wi < nW; wi++)
                for (let h = 0; h < H; h++)
                  tokens(wi).forEach((t, a) => {
                    out.set(x.subarray(((b * H + h) * S + t) * p.D, ((b * H + h) * S + t + 1) * p.D), (((b * nW + wi) * H + h) * 4 + a) * p.D);
                  });
            return out;
          };
          const gatherIds = (ids: Int32Array | null) =>
            ids && Int32Array.from({ length: p.B * S }, (_, i) => ids[Math.floor(i / S) * S + tokens(Math.floor((i % S) / 4))[i % 4]]);
          const dense: Problem = {
            ...p, B: p.B * nW, Sq: 4, Sk: 4, window: null,
            q: gather(p.q, p.Hq), k: gather(p.k, p.Hkv), v: gather(p.v, p.Hkv), segQ: gatherIds(p.segQ), segK: gatherIds(p.segK),
          };
          const [x, y] = [gather(await run(p, device), p.Hq), await run(dense, device)];
          expectClose(x, y, TOL, 'window vs dense per window');
        }),
        { ...PROP, numRuns: 8 },
      );
    });

    it(`${device}: GQA equals repeating each kv head Hq/Hkv times with Hkv = Hq`, async () => {
      await fc.assert(
        fc.asyncProperty(small, async (s) => {
          const p = problem({ ...s, Sk: s.Sk, group: s.group === 1 ? 2 : s.group });
          const g = p.Hq / p.Hkv;
          const repeat = (x: Float32Array) => {
            const out = new Float32Array(x.length * g);
            const row = p.Sk * p.D;
            for (let b = 0; b < p.B; b++)
              for (let h = 0; h < p.Hq; h++) out.set(x.subarray((b * p.Hkv + Math.floor(h / g)) * row, (b * p.Hkv + Math.floor(h / g) + 1) * row), (b * p.Hq + h) * row);
            return out;
          };
          const full: Problem = { ...p, Hkv: p.Hq, k: repeat(p.k), v: repeat(p.v) };
          const [x, y] = [await run(p, device), await run(full, device)];
          expectSame(x, y, device, 'GQA vs repeated heads');
        }),
        { ...PROP, numRuns: 8 },
      );
    });

    it(`${device}: causal: changing a later key/value never changes earlier queries' outputs`, async () => {
      await fc.assert(
        fc.asyncProperty(small, seqLen, fc.nat(), async (s, sk, pick) => {
          const Sk = Math.max(sk, s.Sq);
          const p = problem({ ...s, Sk, causal: true });
          const shift = Sk - p.Sq;
          const [b0, j] = [pick % p.B, pick % Sk];
          const changed = clone(p);
          const r = rng(pick + 1);
          for (const [x, H] of [[changed.k, p.Hkv], [changed.v, p.Hkv]] as const) {
            for (let h = 0; h < H; h++) for (let d = 0; d < p.D; d++) x[((b0 * H + h) * Sk + j) * p.D + d] = 2 * r() - 1;
          }
          const [x, y] = [await run(p, device), await run(changed, device)];
          expectRowsEqual(x, y, p, (b, i) => b !== b0 || i + shift < j, 'earlier query');
        }),
        { ...PROP, numRuns: 8 },
      );
    });

    it(`${device}: causal decoding with Sq < Sk equals the last Sq rows of the full computation`, async () => {
      await fc.assert(
        fc.asyncProperty(small, fc.nat(), async (s, pick) => {
          const full = problem({ ...s, causal: true, layout: s.layout === 'packed' ? 'bshd' : s.layout });
          const S = full.Sq;
          const n = 1 + (pick % S);
          const rowsOf = (x: Float32Array, H: number) => {
            const out = new Float32Array(full.B * H * n * full.D);
            for (let bh = 0; bh < full.B * H; bh++) out.set(x.subarray((bh * S + S - n) * full.D, (bh * S + S) * full.D), bh * n * full.D);
            return out;
          };
          const decode: Problem = { ...full, Sq: n, q: rowsOf(full.q, full.Hq) };
          if (full.segQ) {
            decode.sharedSeg = false;
            decode.segQ = new Int32Array(full.B * n);
            for (let b = 0; b < full.B; b++) decode.segQ.set(full.segQ.subarray(b * S + S - n, (b + 1) * S), b * n);
          }
          const [x, y] = [rowsOf(await run(full, device), full.Hq), await run(decode, device)];
          expectSame(x, y, device, 'decode vs full');
        }),
        { ...PROP, numRuns: 8 },
      );
    });
  }
});
