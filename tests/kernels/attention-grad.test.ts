import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gradTiles } from '../../kernels/attention-grad.js';
import { setTileProfile } from '../../kernels/attention.js';
import type { TileProfile } from '../../kernels/attention.js';
import { gpuContext } from '../../kernels/index.js';
import * as uhd from '../../tensor/index.js';
import type { AttentionOptions, Tensor } from '../../tensor/index.js';
import { attentionGrad } from '../../tensor/ops/grad.js';
import type { Device } from '../../tensor/index.js';
import { DEVICE, expectClose, makeView, PROP, useDevice, values, type Tolerance, type ViewRecipe } from '../support.js';

useDevice();

/**
 * f32 recomputation on WebGPU against the f64-accumulated CPU reference, inputs in [-1, 1].
 * dK and dV sum over up to Hq/Hkv · Sq queries, hence a little looser than the forward's.
 */
const TOL: Tolerance = { atol: 5e-5, rtol: 5e-4 };

/**
 * How q, k, v and dO sit in memory: `bshd` a [B, S, H, D] tensor permuted to [B, H, S, D] (what
 * a projection produces), or one of tests/support.ts's view kinds (`permuted`: all dims
 * reversed, head-dim stride > 1; `sliced`: every other element of a padded base; `broadcast`:
 * the batch (or first non-unit) dim expanded from 1, stride 0).
 */
type Layout = 'dense' | 'bshd' | 'permuted' | 'sliced' | 'broadcast';
const LAYOUTS: readonly Layout[] = ['dense', 'bshd', 'permuted', 'sliced', 'broadcast'];

/** One backward problem, buildable identically on either device from its seeds. */
interface Problem {
  B: number;
  Hq: number;
  Hkv: number;
  Sq: number;
  Sk: number;
  D: number;
  causal: boolean;
  /** Segment ids [B, Sq] and [B, Sk] (null: no segment mask). */
  segQ: Int32Array | null;
  segK: Int32Array | null;
  window: { h: number; w: number } | null;
  scale?: number;
  /** Layout of q, k, v; and of dO. */
  layout: Layout;
  gradLayout: Layout;
  seed: number;
}

/** A [B, H, S, D] tensor stored as [B, S, H, D], with values from `seed`. */
function bshd(shape: number[], seed: number, device: Device): Tensor {
  const [B, H, S, D] = shape;
  const base = uhd.tensor(values(B * S * H * D, seed), { shape: [B, S, H, D], dtype: 'float32', device });
  const view = base.permute(0, 2, 1, 3);
  base.dispose();
  return view;
}

function view(shape: number[], seed: number, layout: Layout, device: Device): Tensor {
  if (layout === 'bshd') return bshd(shape, seed, device);
  const recipe: ViewRecipe = { shape, kind: layout, seed };
  return makeView(recipe, device);
}

/** Segment ids of B sequences of length S in contiguous runs; `reused` lets one id own several runs. */
function segmentRuns(B: number, S: number, seed: number, reused: boolean): Int32Array {
  const r = values(B * S + 1, seed, 0, 1);
  let at = 0;
  const ids = new Int32Array(B * S);
  for (let b = 0; b < B; b++) {
    let id = Math.floor(r[at++] * 5);
    for (let t = 0; t < S; ) {
      const len = 1 + Math.floor(r[at++ % r.length] * Math.max(1, S / 2));
      for (let i = 0; i < len && t < S; i++, t++) ids[b * S + t] = id;
      id = reused ? Math.floor(r[at++ % r.length] * 4) : id + 1 + Math.floor(r[at++ % r.length] * 3);
    }
  }
  return ids;
}

/** Runs the backward of `p` on `device`; returns gq, gk, gv as dense arrays. */
async function run(p: Problem, device: Device): Promise<Float32Array[]> {
  const { B, Hq, Hkv, Sq, Sk, D } = p;
  const q = view([B, Hq, Sq, D], p.seed, p.layout, device);
  const k = view([B, Hkv, Sk, D], p.seed + 1, p.layout, device);
  const v = view([B, Hkv, Sk, D], p.seed + 2, p.layout, device);
  const gOut = view([B, Hq, Sq, D], p.seed + 3, p.gradLayout, device);
  const made = [q, k, v, gOut];
  const opts: AttentionOptions = { causal: p.causal, window: p.window ?? undefined, scale: p.scale };
  if (p.segQ && p.segK) {
    // Stored transposed ([S, B]) so the kernels read strided ids.
    const ids = (x: Int32Array, S: number) => {
      const t = uhd.tensor(x, { shape: [B, S], dtype: 'int32', device });
      const base = t.transpose(0, 1).contiguous();
      t.dispose();
      const out = base.transpose(0, 1);
      base.dispose();
      return out;
    };
    const sq = ids(p.segQ, Sq);
    const sk = ids(p.segK, Sk);
    made.push(sq, sk);
    opts.segmentIds = { q: sq, k: sk };
  }
  const { gq, gk, gv } = attentionGrad(q, k, v, gOut, opts);
  expect(gq.shape).toEqual([B, Hq, Sq, D]);
  expect(gk.shape).toEqual([B, Hkv, Sk, D]);
  const out = [Float32Array.from(await gq.data()), Float32Array.from(await gk.data()), Float32Array.from(await gv.data())];
  for (const t of [...made, gq, gk, gv]) t.dispose();
  return out;
}

/** WebGPU's gq, gk, gv agree with the CPU reference's within TOL. */
async function expectAgree(p: Problem): Promise<void> {
  const label = JSON.stringify({ ...p, segQ: p.segQ ? 'ids' : null, segK: undefined });
  const [got, want] = [await run(p, DEVICE), await run(p, 'cpu')];
  ['gq', 'gk', 'gv'].forEach((name, i) => expectClose(got[i], want[i], TOL, `${name} ${label}`));
}

// ---- random problems ----------------------------------------------------------------------

/** Sequence lengths: 1, primes, around the block sizes, and longer than one block. */
const seqLen = fc.oneof(
  fc.constantFrom(1, 2, 3, 7, 13, 16, 17, 31, 64, 65),
  fc.integer({ min: 1, max: 40 }),
  fc.integer({ min: 70, max: 140 }),
);
/** Head dims: 1, odd 5, 8 and SigLIP's 72 (each distinct D compiles new pipelines). */
const headDim = fc.constantFrom(1, 5, 8, 72);

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
  gradLayout: Layout;
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
    segs: fc.constantFrom('none' as const, 'sorted' as const, 'reused' as const),
    layout: fc.constantFrom(...LAYOUTS),
    gradLayout: fc.constantFrom<Layout>('dense', 'bshd', 'sliced'),
    customScale: fc.boolean(),
    seed: fc.integer({ min: 1, max: 2 ** 30 }),
  })
  // keep the CPU reference cheap
  .filter((s) => s.B * s.Hkv * s.group * s.Sq * s.Sk * s.D <= 1_000_000);

/** A problem from a shape; with segments, the queries' ids are the keys' last Sq when Sq <= Sk. */
function problem(s: Shape, window: { h: number; w: number } | null = null): Problem {
  let segQ: Int32Array | null = null;
  let segK: Int32Array | null = null;
  if (s.segs !== 'none') {
    segK = segmentRuns(s.B, s.Sk, s.seed + 7, s.segs === 'reused');
    if (s.Sq <= s.Sk) {
      segQ = new Int32Array(s.B * s.Sq);
      for (let b = 0; b < s.B; b++) segQ.set(segK.subarray(b * s.Sk + s.Sk - s.Sq, (b + 1) * s.Sk), b * s.Sq);
    } else {
      segQ = segmentRuns(s.B, s.Sq, s.seed + 8, s.segs === 'reused');
    }
  }
  return {
    B: s.B,
    Hq: s.Hkv * s.group,
    Hkv: s.Hkv,
    Sq: s.Sq,
    Sk: s.Sk,
    D: s.D,
    causal: s.causal,
    segQ,
    segK,
    window,
    scale: s.customScale ? 0.3 + (s.seed % 100) / 100 : undefined,
    layout: s.layout,
    gradLayout: s.gradLayout,
    seed: s.seed,
  };
}

/** Even grid sides for 2x2 windows. */
const arbWindow = fc.record({ h: fc.integer({ min: 1, max: 6 }).map((x) => 2 * x), w: fc.integer({ min: 1, max: 8 }).map((x) => 2 * x) });

const base: Omit<Shape, 'Sq' | 'Sk' | 'D' | 'Hkv' | 'group'> = {
  B: 1, causal: false, segs: 'none', layout: 'bshd', gradLayout: 'dense', customScale: false, seed: 11,
};

// ---- tests ------------------------------------------------------------------------------------

/** Streaming kernels in both tile profiles: `cpu` (llvmpipe's default) and `gpu` (head dim split across threads). */
const PROFILE_RUNS: Record<TileProfile, number> = { cpu: 30, gpu: 10 };
const PROFILES: (TileProfile | null)[] = DEVICE === 'webgpu' ? ['cpu', 'gpu'] : [null];
for (const profile of PROFILES) {
  describe(`${DEVICE} attentionGrad matches the CPU reference (${profile ?? 'default'} tiles)`, () => {
    beforeAll(() => setTileProfile(profile));
    afterAll(() => setTileProfile(null));

    it('on random shapes, GQA heads, causal (Sq <= and > Sk), segment ids, scales and strided views', async () => {
      await fc.assert(
        fc.asyncProperty(arbShape, async (s) => expectAgree(problem(s))),
        { ...PROP, numRuns: PROFILE_RUNS[profile ?? 'cpu'] },
      );
    });

    it('at the model sizes: SigLIP views (D 72, segment ids) and Qwen3 decoding (D 128, GQA, causal, Sq < Sk)', async () => {
      await expectAgree(problem({ ...base, Hkv: 2, group: 1, Sq: 200, Sk: 200, D: 72, segs: 'sorted' }));
      await expectAgree(problem({ ...base, Hkv: 1, group: 4, Sq: 70, Sk: 90, D: 128, causal: true }));
    });
  });
}

describe(`${DEVICE} attentionGrad, other cases`, () => {
  it('with 2x2 windows (and causal / segment masks on top) on random even grids', async () => {
    await fc.assert(
      fc.asyncProperty(arbWindow, arbShape, async (win, s) => {
        const S = win.h * win.w;
        await expectAgree(problem({ ...s, Sq: S, Sk: S }, win));
      }),
      { ...PROP, numRuns: 20 },
    );
  });

  it('gives zero gradients to fully masked queries and to keys no query sees', async () => {
    const shape: Shape = { ...base, Hkv: 1, group: 2, Sq: 9, Sk: 6, D: 5, causal: true, layout: 'dense' };
    for (const device of [...new Set<Device>(['cpu', DEVICE])]) {
      // Causal with Sq - Sk = 3: queries 0..2 see no key.
      const [gq] = await run(problem(shape), device);
      for (let h = 0; h < 2; h++) {
        const row = h * 9 * 5;
        expect(gq.subarray(row, row + 3 * 5).every((x) => x === 0)).toBe(true);
        expect(gq.subarray(row + 3 * 5, row + 9 * 5).some((x) => x !== 0)).toBe(true);
      }
      // Segment ids: queries 0..3 have an id no key has; keys 4, 5 an id no query has.
      const p = problem({ ...shape, causal: false });
      p.segQ = Int32Array.from({ length: 9 }, (_, i) => (i < 4 ? 1 : 2));
      p.segK = Int32Array.from({ length: 6 }, (_, j) => (j < 4 ? 2 : 3));
      const [gq2, gk, gv] = await run(p, device);
      for (let h = 0; h < 2; h++) expect(gq2.subarray(h * 45, h * 45 + 4 * 5).every((x) => x === 0)).toBe(true);
      expect(gk.subarray(4 * 5).every((x) => x === 0)).toBe(true);
      expect(gv.subarray(4 * 5).every((x) => x === 0)).toBe(true);
      expect([...gq2, ...gk, ...gv].every(Number.isFinite)).toBe(true);
    }
  });

  it('handles empty sides: Sq = 0 gives zero dK, dV', async () => {
    const p = problem({ ...base, Hkv: 1, group: 1, Sq: 1, Sk: 5, D: 8 });
    p.Sq = 0;
    const [gq, gk, gv] = await run(p, DEVICE);
    expect(gq.length).toBe(0);
    expect([...gk, ...gv].every((x) => x === 0)).toBe(true);
  });

  it.skipIf(DEVICE !== 'webgpu')('compiles one pipeline per tile configuration, not per size', async () => {
    const shape = (B: number, S: number): Shape => ({ ...base, B, Hkv: 1, group: 2, Sq: S, Sk: S + 3, D: 8, causal: true, segs: 'sorted', layout: 'dense' });
    expect(gradTiles('dq', 8, 40, true, 'cpu')).toEqual(gradTiles('dq', 8, 400, true, 'cpu'));
    await run(problem(shape(1, 40)), DEVICE);
    const before = gpuContext().pipelineCount;
    await run(problem(shape(2, 97)), DEVICE);
    await run(problem({ ...shape(1, 61), layout: 'permuted' }), DEVICE);
    expect(gpuContext().pipelineCount).toBe(before);
  });
});
