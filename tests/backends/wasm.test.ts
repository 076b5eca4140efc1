/**
 * The wasm backend's own machinery: the binary emitter, the heap, the thread pool, the
 * relaxed-SIMD and plain kernel variants, and what the device-parametrized files do not
 * reach (tile and block boundaries of the matmul, AdamW, exit without shutdown). The ops
 * themselves are checked against the CPU reference by tests/kernels/* with UHD_DEVICE=wasm.
 */
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeModule, Func, sleb, uleb } from '../../backends/wasm/emit.js';
import { MATMUL_TUNING, matmulRuns } from '../../backends/wasm/kernels/matmul.js';
import { MAX_PAGES, WasmHeap } from '../../backends/wasm/memory.js';
import { runtime } from '../../backends/wasm/runtime.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { expectClose, PROP, useDevice, values } from '../support.js';

useDevice('wasm');

const mk = (shape: number[], seed: number, device: 'cpu' | 'wasm' = 'wasm') =>
  uhd.tensor(values(shape.reduce((a, b) => a * b, 1), seed), { shape, device, dtype: 'float32' });

async function agreeWithCpu(run: (...xs: Tensor[]) => Tensor, shapes: number[][], tol = { atol: 1e-4, rtol: 1e-4 }, label = ''): Promise<void> {
  const cpu = shapes.map((s, i) => mk(s, 10 + i, 'cpu'));
  const dev = shapes.map((s, i) => mk(s, 10 + i));
  const want = run(...cpu);
  const got = run(...dev);
  expectClose(await got.data(), await want.data(), tol, label);
  for (const t of [...cpu, ...dev, want, got]) t.dispose();
}

describe('the emitter', () => {
  it('encodes LEB128 as the spec does', () => {
    expect(uleb(0)).toEqual([0]);
    expect(uleb(127)).toEqual([0x7f]);
    expect(uleb(128)).toEqual([0x80, 0x01]);
    expect(uleb(624485)).toEqual([0xe5, 0x8e, 0x26]);
    expect(sleb(-1)).toEqual([0x7f]);
    expect(sleb(63)).toEqual([0x3f]);
    expect(sleb(64)).toEqual([0xc0, 0x00]);
    expect(sleb(-123456)).toEqual([0xc0, 0xbb, 0x78]);
    expect(() => uleb(-1)).toThrow(/not an unsigned integer/);
  });

  it('builds a valid module whose loop and SIMD code computes what it says', () => {
    // run(p, n, _): sum of n floats at p, four lanes at a time
    const f = new Func(['i32', 'i32', 'i32'], ['f32']);
    const [p, n] = f.params;
    const [i, acc] = [f.local('i32'), f.local('v128')];
    f.for(i, 0, n, 4, () => void f.get(acc).get(p).get(i).i32(2).i32_shl().i32_add().v128_load().f32x4_add().set(acc));
    f.get(acc).f32x4_extract_lane(0).get(acc).f32x4_extract_lane(1).f32_add().get(acc).f32x4_extract_lane(2).f32_add().get(acc).f32x4_extract_lane(3).f32_add();
    const bytes = encodeModule({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES, name: 'test.sum' });
    expect(WebAssembly.validate(bytes)).toBe(true);
    const heap = new WasmHeap(1);
    const block = heap.alloc(64);
    new Float32Array(heap.buffer, block.ptr, 16).set(Array.from({ length: 16 }, (_, k) => k + 1));
    const run = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory: heap.memory } }).exports.run as (a: number, b: number, c: number) => number;
    expect(run(block.ptr, 16, 0)).toBe(136);
  });

  it('names the kernel when generated code does not validate', () => {
    const f = new Func(['i32', 'i32', 'i32']);
    f.f32x4_add(); // nothing on the stack
    expect(() => runtime().pool.kernel('broken.kernel', () => ({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES }))).toThrow(/wasm: the generated kernel 'broken.kernel' does not compile/);
  });
});

describe('the heap', () => {
  it('reuses freed blocks of the same size class and grows the memory when needed', () => {
    const heap = new WasmHeap(1);
    const a = heap.alloc(1000);
    heap.release(a.ptr, a.size);
    const b = heap.alloc(900);
    expect(b.ptr).toBe(a.ptr);
    const before = heap.buffer.byteLength;
    const big = heap.alloc(3 << 20);
    expect(heap.buffer.byteLength).toBeGreaterThan(before);
    expect(big.ptr % 64).toBe(0);
  });

  it('holds memory flat over a training-like loop (tensors, storages and heap bytes)', () => {
    const w = uhd.randn([64, 64], { device: 'wasm' });
    const step = () => uhd.tidy(() => uhd.layerNorm(w.matmul(w).gelu(), null, null).softmax(-1).sum());
    step().dispose();
    const before = { ...uhd.memory('wasm'), heap: runtime().heap.inUse };
    for (let i = 0; i < 30; i++) step().dispose();
    expect({ ...uhd.memory('wasm'), heap: runtime().heap.inUse }).toEqual(before);
    w.dispose();
  });

  it('refuses float64, naming the op', () => {
    expect(() => uhd.zeros([3], { dtype: 'float64', device: 'wasm' })).toThrow("full: float64 is not a dtype of device 'wasm'");
    expect(() => uhd.tensor([1, 2], { dtype: 'float64', device: 'wasm' })).toThrow("tensor: float64 is not a dtype of device 'wasm'");
  });
});

describe('the thread pool', () => {
  it('runs large ops on more than one thread with the same result as one thread', async () => {
    const pool = runtime().pool;
    const a = mk([300, 200], 1);
    const b = mk([200, 170], 2);
    const before = pool.parallelCalls;
    const c = a.matmul(b);
    if (pool.threads > 1) expect(pool.parallelCalls).toBeGreaterThan(before);
    const cpu = mk([300, 200], 1, 'cpu').matmul(mk([200, 170], 2, 'cpu'));
    expectClose(await c.data(), await cpu.data(), { atol: 1e-4, rtol: 1e-4 });
    for (const t of [a, b, c, cpu]) t.dispose();
  });

  it('lets Node exit without a shutdown (workers are unref\'d)', () => {
    const code = "const b = await import('./backends/wasm/index.ts'); const u = await import('./tensor/index.ts'); await b.initWasm(); const x = u.randn([256, 256], { device: 'wasm' }); console.log((await x.matmul(x).sum().item()) !== 0);";
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: process.cwd(), timeout: 60_000 }).toString();
    expect(out.trim()).toBe('true');
  });
});

describe('matmul at tile, block and batch boundaries', () => {
  const sizes = [1, 5, 6, 7, 8, 9, 95, 96, 97, 255, 256, 257, 300];
  it('on sizes around MR = 6, NR = 8, MC = 96, NC = 256 and KC = 256, every way of reading a', async () => {
    const was = MATMUL_TUNING.packAK;
    try {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...sizes), fc.constantFrom(...sizes), fc.constantFrom(1, 4, 255, 256, 257, 513), fc.boolean(), fc.constantFrom('rows', 'transposed', 'packed'), async (M, N, K, bt, aMode) => {
          MATMUL_TUNING.packAK = aMode === 'packed' ? 1 : Infinity;
          const at = aMode === 'transposed';
          const run = (a: Tensor, b: Tensor) => (at ? a.transpose() : a).matmul(bt ? b.transpose() : b);
          await agreeWithCpu(run, [at ? [K, M] : [M, K], bt ? [N, K] : [K, N]], { atol: 2e-5 * Math.sqrt(K), rtol: 1e-4 }, `${M}x${K}x${N} a ${aMode}${bt ? ' b^T' : ''}`);
        }),
        { ...PROP, numRuns: 30 },
      );
    } finally {
      MATMUL_TUNING.packAK = was;
    }
  });

  it('batched with a shared weight (one tall matrix) and with per-entry operands, transposed or not', async () => {
    await agreeWithCpu((x, w) => x.matmul(w.transpose()), [[3, 50, 33], [70, 33]], { atol: 1e-4, rtol: 1e-4 });
    await agreeWithCpu((x, y) => x.matmul(y), [[4, 13, 40], [4, 40, 21]], { atol: 1e-4, rtol: 1e-4 });
    await agreeWithCpu((x, y) => x.transpose().matmul(y), [[2, 3, 17, 29], [2, 3, 17, 31]], { atol: 1e-4, rtol: 1e-4 });
    // a's rows not evenly spaced over the batch (a permuted batch): not merged
    await agreeWithCpu((x, w) => x.permute(1, 0, 2).matmul(w), [[9, 4, 12], [12, 10]], { atol: 1e-4, rtol: 1e-4 });
  });

  it('a with repeated rows (row stride 0) and b with repeated columns: one row or column, broadcast', async () => {
    const tol = { atol: 1e-4, rtol: 1e-4 };
    // an expanded row [1, K] -> [M, K] (a sum's gradient), a fully broadcast scalar, batched rows, b's columns
    for (const [run, shapes] of [
      [(r: Tensor, b: Tensor) => r.expand(37, 20).matmul(b), [[1, 20], [20, 45]]],
      [(s: Tensor, b: Tensor) => s.reshape(1, 1).expand(30, 9).matmul(b), [[1], [9, 14]]],
      [(r: Tensor, b: Tensor) => r.expand(3, 11, 16).matmul(b), [[3, 1, 16], [3, 16, 7]]],
      [(a: Tensor, c: Tensor) => a.matmul(c.expand(19, 23)), [[13, 19], [19, 1]]],
    ] as [(...xs: Tensor[]) => Tensor, number[][]][]) {
      const before = matmulRuns.repeated;
      await agreeWithCpu(run, shapes, tol, JSON.stringify(shapes));
      expect(matmulRuns.repeated, JSON.stringify(shapes)).toBe(before + 1);
    }
  });

  it('the relaxed-SIMD (fused multiply-add) and the mul + add kernels agree with the reference', async () => {
    const f = runtime().features;
    const was = f.relaxedSimd;
    try {
      for (const relaxed of [true, false]) {
        if (relaxed && !was) continue;
        f.relaxedSimd = relaxed;
        await agreeWithCpu((a, b) => a.matmul(b), [[61, 130], [130, 45]], { atol: 1e-4, rtol: 1e-4 }, `relaxed ${relaxed}`);
        await agreeWithCpu((q, k, v) => uhd.attention(q, k, v, { causal: true }), [[1, 2, 37, 12], [1, 2, 37, 12], [1, 2, 37, 12]], { atol: 1e-5, rtol: 1e-4 }, `attention relaxed ${relaxed}`);
      }
    } finally {
      f.relaxedSimd = was;
    }
  });
});

describe('blocked attention (flash.ts, flash-grad.ts) against the CPU reference', () => {
  /** q [B, Hq, Sq, D] and k, v [B, Hkv, Sk, D] as permuted [B, S, H, D] views (what projections give). */
  const bshd = (device: 'cpu' | 'wasm', B: number, H: number, S: number, D: number, seed: number) => {
    const t = uhd.tensor(values(B * S * H * D, seed), { shape: [B, S, H, D], device, dtype: 'float32' });
    const v = t.permute(0, 2, 1, 3);
    t.dispose();
    return v;
  };
  const cases = [
    { B: 1, Hq: 2, Hkv: 2, Sq: 70, Sk: 70, D: 64, causal: false, segs: false },
    { B: 2, Hq: 4, Hkv: 2, Sq: 13, Sk: 77, D: 12, causal: true, segs: false },
    { B: 1, Hq: 3, Hkv: 1, Sq: 131, Sk: 131, D: 20, causal: true, segs: true },
    { B: 2, Hq: 2, Hkv: 1, Sq: 9, Sk: 200, D: 8, causal: false, segs: true },
  ];
  for (const c of cases) {
    it(`forward and gradients: ${JSON.stringify(c)}`, async () => {
      const run = async (device: 'cpu' | 'wasm') => {
        const [q, k, v] = [bshd(device, c.B, c.Hq, c.Sq, c.D, 1), bshd(device, c.B, c.Hkv, c.Sk, c.D, 2), bshd(device, c.B, c.Hkv, c.Sk, c.D, 3)];
        const g = uhd.tensor(values(c.B * c.Hq * c.Sq * c.D, 4), { shape: [c.B, c.Hq, c.Sq, c.D], device, dtype: 'float32' });
        // segment runs: three per row of keys; queries follow the same split (Sq = Sk) or the last run
        const ids = (S: number) => uhd.tensor(Int32Array.from({ length: c.B * S }, (_, i) => Math.floor(((i % S) * 3) / S)), { shape: [c.B, S], dtype: 'int32', device });
        const opts = { causal: c.causal, segmentIds: c.segs ? { q: ids(c.Sq), k: ids(c.Sk) } : undefined };
        const out = await uhd.attention(q, k, v, opts).data();
        const { gq, gk, gv } = uhd.attentionGrad(q, k, v, g, opts);
        return [out, await gq.data(), await gk.data(), await gv.data()];
      };
      const before = runtime().pool.kernelNames().filter((n) => n.includes('flash.dkv')).length;
      const [want, got] = [await run('cpu'), await run('wasm')];
      ['out', 'gq', 'gk', 'gv'].forEach((name, i) => expectClose(got[i], want[i], { atol: 3e-5, rtol: 3e-4 }, name));
      const names = runtime().pool.kernelNames();
      expect(names).toContain(`attention.flash.forward.D${c.D}.${runtime().features.relaxedSimd ? 'fma' : 'muladd'}`);
      expect(names.filter((n) => n.includes('flash.dkv')).length).toBeGreaterThanOrEqual(before);
      expect(names.some((n) => n.startsWith(`attention.flash.dkv.D${c.D}.`))).toBe(true);
    });
  }
});

describe('AdamW over the elements', () => {
  it('one step per tensor equals the reference, odd sizes and a strided gradient', async () => {
    for (const n of [1, 3, 4, 4097, 10001]) {
      const make = (device: 'cpu' | 'wasm') => ({
        p: uhd.tensor(values(n, 1), { device, dtype: 'float32' }), g: uhd.tensor(values(2 * n, 2), { device, dtype: 'float32' }).slice([0, 2 * n, 2]),
        m: uhd.tensor(values(n, 3, 0, 0.1), { device, dtype: 'float32' }), v: uhd.tensor(values(n, 4, 0, 0.1), { device, dtype: 'float32' }),
      });
      const [c, w] = [make('cpu'), make('wasm')];
      const h = { lr: 1e-2, beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.05, step: 3 };
      uhd.adamwStep(c.p, c.g, c.m, c.v, h);
      uhd.adamwStep(w.p, w.g, w.m, w.v, h);
      for (const k of ['p', 'm', 'v'] as const) expectClose(await w[k].data(), await c[k].data(), { atol: 1e-6, rtol: 1e-5 }, `${k} n ${n}`);
    }
  });
});
