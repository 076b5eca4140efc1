/**
 * Streaming a bf16 / f16 checkpoint into half GPU buffers (nn/half-weights.ts): the values are
 * the file's halves bit for bit, read in chunks (a chunk size far below a tensor's, odd element
 * counts), vectors come as float32, shards one after the other.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadHalfSafetensors, saveSafetensors, streamShardedHalfSafetensors } from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import { roundToHalf } from '../../tensor/dtype.js';
import { expectClose, useWebGPU, values as f64values } from '../support.js';

/** float32 values, so that one rounding to half is the reference (the saver rounds float64 to odd first). */
const values = (n: number, seed: number) => Float32Array.from(f64values(n, seed));

useWebGPU();

const dir = mkdtempSync(join(tmpdir(), 'uhd-half-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('loading half checkpoints into half GPU buffers', () => {
  for (const [fileDtype, dtype] of [['BF16', 'bfloat16'], ['F16', 'float16']] as const) {
    it(`${fileDtype}: matrices stay ${dtype} on the device, equal to the file's values, in small chunks`, async () => {
      const w = values(37 * 13, 1); // odd count: the last word holds one element
      const emb = values(100 * 8, 2);
      const bias = values(13, 3);
      const path = join(dir, `m-${fileDtype}.safetensors`);
      await saveSafetensors(path, {
        'a.weight': uhd.tensor(w, { shape: [37, 13] }),
        'embed.weight': uhd.tensor(emb, { shape: [100, 8] }),
        'a.bias': uhd.tensor(bias, { shape: [13] }),
        'step': uhd.tensor([7], { dtype: 'int32' }),
      }, { dtype: fileDtype });
      const got = await loadHalfSafetensors(path, { device: 'webgpu', chunkBytes: 60 });
      expect([...got.keys()].sort()).toEqual(['a.bias', 'a.weight', 'embed.weight', 'step']);
      const a = got.get('a.weight')!;
      expect(a.dtype).toBe(dtype);
      expect(a.shape).toEqual([37, 13]);
      expect(a.storage.bytes).toBe(2 * 37 * 13);
      expectClose(await a.data(), roundToHalf(w, dtype), { atol: 0, rtol: 0 }, 'a.weight');
      expectClose(await got.get('embed.weight')!.data(), roundToHalf(emb, dtype), { atol: 0, rtol: 0 }, 'embed');
      const b = got.get('a.bias')!;
      expect(b.dtype).toBe('float32'); // vectors load as float32
      expectClose(await b.data(), roundToHalf(bias, dtype), { atol: 0, rtol: 0 }, 'bias');
      expect(Array.from(await got.get('step')!.data())).toEqual([7]);
      // the loaded weights serve a matmul at once
      const x = uhd.tensor(values(2 * 13, 4), { shape: [2, 13], device: 'webgpu' });
      const y = uhd.matmul(x, a.transpose());
      const ref = uhd.matmul(uhd.tensor(values(2 * 13, 4), { shape: [2, 13] }), uhd.tensor(roundToHalf(w, dtype), { shape: [37, 13] }).transpose());
      expectClose(await y.data(), await ref.data(), { atol: 1e-5, rtol: 1e-5 });
      for (const t of got.values()) t.dispose();
    });
  }

  it('a sharded checkpoint streams shard by shard, and the filter picks tensors', async () => {
    const s1 = join(dir, 'model-00001-of-00002.safetensors');
    const s2 = join(dir, 'model-00002-of-00002.safetensors');
    await saveSafetensors(s1, { 'l0.weight': uhd.tensor(values(12, 5), { shape: [3, 4] }) }, { dtype: 'BF16' });
    await saveSafetensors(s2, { 'l1.weight': uhd.tensor(values(12, 6), { shape: [4, 3] }), 'skip.weight': uhd.tensor(values(4, 7), { shape: [2, 2] }) }, { dtype: 'BF16' });
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'l0.weight': 'model-00001-of-00002.safetensors', 'l1.weight': 'model-00002-of-00002.safetensors', 'skip.weight': 'model-00002-of-00002.safetensors' } }));
    const seen: string[] = [];
    for await (const [name, t] of streamShardedHalfSafetensors(dir, { device: 'webgpu', filter: (n) => n !== 'skip.weight' })) {
      seen.push(name);
      expect(t.dtype).toBe('bfloat16');
      expectClose(await t.data(), roundToHalf(values(12, name === 'l0.weight' ? 5 : 6), 'bfloat16'), { atol: 0, rtol: 0 }, name);
      t.dispose();
    }
    expect(seen).toEqual(['l0.weight', 'l1.weight']);
  });

  it('refuses a device without half storage, naming it', async () => {
    const path = join(dir, 'm-BF16.safetensors');
    await expect(loadHalfSafetensors(path, { device: 'cpu' })).rejects.toThrow(/device 'cpu' has no half storage/);
  });
});
