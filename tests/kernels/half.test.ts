/**
 * bfloat16 / float16 weight storage on WebGPU (kernels/half.ts, matmul's half b, gather's half
 * table) against the CPU reference computing in float32 with the half-rounded values.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gpuContext } from '../../kernels/index.js';
import * as uhd from '../../tensor/index.js';
import { decodeHalf, encodeHalf, fromBfloat16Bits, fromFloat16Bits, roundToHalf, toBfloat16Bits, toFloat16Bits, type HalfDType } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/index.js';
import { expectClose, PROP, useWebGPU, values } from '../support.js';

useWebGPU();

const HALVES: HalfDType[] = ['bfloat16', 'float16'];

/** Values that stress rounding: ties, subnormals, overflow, signed zero, NaN and infinities. */
const SPECIAL = [0, -0, 1, -1, 1 + 2 ** -8, 1 + 3 * 2 ** -9, 65504, 65520, 1e5, 6e-8, 3e-8, 2 ** -14, 2 ** -24, 1e-40, Infinity, -Infinity, NaN, 3.14159, -2.5e-5];

describe('half encodings on the host', () => {
  it('known bit patterns and round-to-nearest-even', () => {
    expect(toBfloat16Bits(1)).toBe(0x3f80);
    expect(toBfloat16Bits(-2)).toBe(0xc000);
    expect(toBfloat16Bits(1 + 2 ** -8)).toBe(0x3f80); // a tie rounds to even (down)
    expect(toBfloat16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // a tie rounds to even (up)
    expect(Number.isNaN(fromBfloat16Bits(toBfloat16Bits(NaN)))).toBe(true);
    expect(toFloat16Bits(1)).toBe(0x3c00);
    expect(toFloat16Bits(65504)).toBe(0x7bff);
    expect(toFloat16Bits(65520)).toBe(0x7c00); // rounds up to infinity
    expect(toFloat16Bits(2 ** -24)).toBe(0x0001); // the smallest subnormal
    expect(fromFloat16Bits(0x0001)).toBe(2 ** -24);
    expect(toFloat16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie to even
  });

  it('decode(encode(x)) is the nearest half: within half an ulp', () => {
    fc.assert(fc.property(fc.float({ noNaN: true, min: -60000, max: 60000 }), (x) => {
      for (const dt of HALVES) {
        const r = decodeHalf(encodeHalf([x], dt), dt)[0];
        const ulp = dt === 'bfloat16' ? 2 ** (Math.floor(Math.log2(Math.abs(x) || 1)) - 7) : Math.max(2 ** (Math.floor(Math.log2(Math.abs(x) || 1)) - 10), 2 ** -24);
        expect(Math.abs(r - x)).toBeLessThanOrEqual(ulp / 2 + 1e-30);
      }
    }));
  });
});

function f32(device: 'cpu' | 'webgpu', shape: number[], seed: number): Tensor {
  return uhd.tensor(values(shape.reduce((a, b) => a * b, 1), seed), { shape, dtype: 'float32', device });
}

describe('half storage on WebGPU', () => {
  for (const dt of HALVES) {
    it(`${dt}: upload, read back, and cast on the device equal the host's rounding, special values included`, async () => {
      const data = new Float32Array([...SPECIAL, ...values(101, 7).map((v) => v * 300)]);
      const want = roundToHalf(data, dt);
      const up = uhd.tensor(data, { dtype: dt, device: 'webgpu' });
      expect(up.storage.bytes).toBe(2 * data.length);
      expectClose(await up.data(), want, { atol: 0, rtol: 0 }, `${dt} upload`);
      const g = uhd.tensor(data, { device: 'webgpu' });
      const cast = uhd.cast(g, dt);
      expectClose(await cast.data(), want, { atol: 0, rtol: 0 }, `${dt} cast on the device`);
      // a strided view read out of half storage, and half -> half copies
      const view = cast.slice([1, data.length, 3]);
      expectClose(await view.data(), want.filter((_, i) => i >= 1 && (i - 1) % 3 === 0), { atol: 0, rtol: 0 }, `${dt} strided`);
      const copy = uhd.clone(view);
      expectClose(await copy.data(), await view.data(), { atol: 0, rtol: 0 });
      for (const t of [up, g, cast, view, copy]) t.dispose();
    });

    it(`${dt}: matmul with half weights equals the float32 product with the rounded weights`, async () => {
      const dim = fc.oneof(fc.constantFrom(1, 3, 4, 8, 33, 64), fc.integer({ min: 1, max: 70 }));
      await fc.assert(
        fc.asyncProperty(dim, dim, dim, fc.constantFrom('plain', 'transposed'), fc.integer({ min: 1, max: 1e6 }), async (M, K, N, layout, seed) => {
          const wShape = layout === 'plain' ? [K, N] : [N, K];
          const wv = values(K * N, seed + 1);
          const x = f32('webgpu', [M, K], seed);
          const cx = f32('cpu', [M, K], seed);
          const wh = uhd.tensor(wv, { shape: wShape, dtype: dt, device: 'webgpu' });
          const wc = uhd.tensor(roundToHalf(wv, dt), { shape: wShape });
          const b = layout === 'plain' ? wh : wh.transpose();
          const cb = layout === 'plain' ? wc : wc.transpose();
          const got = uhd.matmul(x, b);
          const want = uhd.matmul(cx, cb);
          expect(got.dtype).toBe('float32');
          expectClose(await got.data(), await want.data(), { atol: 4e-6 * Math.sqrt(K) + 1e-6, rtol: 1e-5 }, `${dt} ${M}x${K}x${N} ${layout}`);
          for (const t of [x, cx, wh, wc, got, want]) t.dispose();
          if (b !== wh) b.dispose();
          if (cb !== wc) cb.dispose();
        }),
        { ...PROP, numRuns: Math.min(PROP.numRuns, 15) },
      );
    }, 300_000);

    it(`${dt}: the fused linear and an embedding lookup read half weights`, async () => {
      const [M, K, N, V] = [7, 12, 20, 50];
      const wv = values(N * K, 3);
      const ev = values(V * K, 4);
      const w = uhd.tensor(wv, { shape: [N, K], dtype: dt, device: 'webgpu' });
      const cw = uhd.tensor(roundToHalf(wv, dt), { shape: [N, K] });
      const b = f32('webgpu', [N], 5);
      const cb = f32('cpu', [N], 5);
      const x = f32('webgpu', [M, K], 6);
      const cx = f32('cpu', [M, K], 6);
      const got = uhd.linear(x, w, b, { activation: 'gelu' });
      const want = uhd.linear(cx, cw, cb, { activation: 'gelu' });
      expectClose(await got.data(), await want.data(), { atol: 2e-5, rtol: 1e-5 }, 'linear');
      const table = uhd.tensor(ev, { shape: [V, K], dtype: dt, device: 'webgpu' });
      const ctable = uhd.tensor(roundToHalf(ev, dt), { shape: [V, K] });
      const ids = [0, 49, 3, 3, 17];
      const rows = uhd.indexSelect(table, 0, uhd.tensor(ids, { dtype: 'int32', device: 'webgpu' }));
      const crows = uhd.indexSelect(ctable, 0, uhd.tensor(ids, { dtype: 'int32' }));
      expect(rows.dtype).toBe('float32');
      expectClose(await rows.data(), await crows.data(), { atol: 0, rtol: 0 }, 'embedding rows');
      for (const t of [w, cw, b, cb, x, cx, got, want, table, ctable, rows, crows]) t.dispose();
    });
  }

  it('ops that take no half operands say so, naming the dtype; the CPU refuses half storage', () => {
    const h = uhd.tensor([1, 2, 3, 4], { dtype: 'bfloat16', device: 'webgpu' });
    expect(() => h.add(h)).toThrow(/bfloat16 tensors are weight storage/);
    expect(() => uhd.tensor([1, 2], { dtype: 'bfloat16' })).toThrow("tensor: bfloat16 is not a dtype of device 'cpu' (it holds float32, float64, int32); cast first");
    h.dispose();
  });

  it('where shader-f16 is offered, float16 weights are read natively (else two halves per word)', async () => {
    const native = gpuContext().device.features.has('shader-f16');
    // llvmpipe offers no shader-f16: this run covers the packed path only
    const x = f32('webgpu', [4, 8], 1);
    const w = uhd.tensor(values(64, 2), { shape: [8, 8], dtype: 'float16', device: 'webgpu' });
    const cw = uhd.tensor(roundToHalf(values(64, 2), 'float16'), { shape: [8, 8] });
    const got = uhd.matmul(x, w);
    const want = uhd.matmul(f32('cpu', [4, 8], 1), cw);
    expectClose(await got.data(), await want.data(), { atol: 1e-5, rtol: 1e-5 }, native ? 'native f16' : 'packed f16');
    for (const t of [x, w, cw, got, want]) t.dispose();
  });
});
