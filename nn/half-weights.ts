/**
 * Loading a bfloat16 / float16 checkpoint straight into half GPU buffers: each BF16 or F16
 * weight's bytes are read from the file in chunks and written into its device buffer as they
 * are, so the model is never materialised as float32 on the host (peak host memory: one
 * chunk). Shards are read one after the other. Vectors (biases, norm weights: rank below
 * `minHalfRank`) and non-half tensors load through the ordinary loader (nn/safetensors.ts) as
 * float32: they are small, and every op takes them in float32.
 *
 *   for await (const [name, t] of streamHalfSafetensors('model.safetensors', { device: 'webgpu' })) ...
 */
import { promises as fsp } from 'node:fs';
import { endianness } from 'node:os';
import { getBackend, Tensor, type Device } from '../tensor/index.js';
import type { HalfDType } from '../tensor/dtype.js';
import { readSafetensorsHeader, readShardIndex, streamSafetensors, type SafetensorsHeader } from './safetensors.js';

export interface HalfLoadOptions {
  /** Must be a device with half storage (webgpu). */
  device: Device;
  /** Loads only the tensors for which this returns true. */
  filter?: (name: string) => boolean;
  /** Half tensors of lower rank load as float32 (default 2: matrices stay half). */
  minHalfRank?: number;
  /** Bytes read and written per step (default 16 MiB; a multiple of 4). */
  chunkBytes?: number;
}

const HALF_OF = { BF16: 'bfloat16', F16: 'float16' } as const satisfies Record<string, HalfDType>;

/**
 * Yields the tensors of one file: half matrices as half tensors on `opts.device`, streamed
 * chunk by chunk; the rest as float32 through `streamSafetensors` (after the half ones).
 */
export async function* streamHalfSafetensors(path: string, opts: HalfLoadOptions, only?: ReadonlySet<string>): AsyncGenerator<[string, Tensor]> {
  const backend = getBackend(opts.device);
  if (!backend.writeBytes) throw new Error(`streamHalfSafetensors: device '${opts.device}' has no half storage (use webgpu, or loadSafetensors for float32)`);
  if (endianness() !== 'LE') throw new Error('streamHalfSafetensors: needs a little-endian host (the file and the device are little-endian)');
  const chunk = opts.chunkBytes ?? 16 * 2 ** 20;
  if (!(Number.isInteger(chunk) && chunk >= 4 && chunk % 4 === 0)) throw new Error(`streamHalfSafetensors: chunkBytes must be a positive multiple of 4, got ${chunk}`);
  const minRank = opts.minHalfRank ?? 2;
  const wanted = (name: string) => (!only || only.has(name)) && (opts.filter?.(name) ?? true);
  const header: SafetensorsHeader = await readSafetensorsHeader(path); // checked completely
  const rest = new Set<string>();
  const fh = await fsp.open(path, 'r');
  try {
    const buf = new Uint8Array(chunk);
    for (const [name, entry] of header.tensors) {
      if (!wanted(name)) continue;
      const dtype = entry.dtype === 'BF16' || entry.dtype === 'F16' ? HALF_OF[entry.dtype] : null;
      if (!dtype || entry.shape.length < minRank) {
        rest.add(name);
        continue;
      }
      const t = Tensor.empty(entry.shape, dtype, opts.device);
      try {
        const bytes = entry.end - entry.begin;
        for (let done = 0; done < bytes; done += chunk) {
          const n = Math.min(chunk, bytes - done);
          const { bytesRead } = await fh.read(buf, 0, n, entry.begin + done); // begin: an absolute file offset
          if (bytesRead !== n) throw new Error(`safetensors: ${path}: tensor '${name}': file ends inside its data`);
          const padded = Math.ceil(n / 4) * 4; // an odd element count ends in half a word
          buf.fill(0, n, padded);
          backend.writeBytes(t.storage, done, buf.subarray(0, padded));
        }
      } catch (err) {
        t.dispose();
        throw err;
      }
      yield [name, t];
    }
  } finally {
    await fh.close();
  }
  if (rest.size) yield* streamSafetensors(path, { device: opts.device, filter: (n) => rest.has(n) });
}

/** As `streamHalfSafetensors` over a sharded checkpoint (its index or folder), shard by shard. */
export async function* streamShardedHalfSafetensors(indexPathOrDir: string, opts: HalfLoadOptions): AsyncGenerator<[string, Tensor]> {
  const index = await readShardIndex(indexPathOrDir);
  const byShard = new Map<string, Set<string>>();
  for (const [name, shard] of index.weightMap) {
    let names = byShard.get(shard);
    if (!names) byShard.set(shard, (names = new Set()));
    names.add(name);
  }
  for (const [shard, names] of [...byShard].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const header = await readSafetensorsHeader(shard);
    for (const name of names) {
      if (!header.tensors.has(name)) throw new Error(`safetensors: ${shard}: tensor '${name}': listed in ${index.path} but missing from this shard`);
    }
    yield* streamHalfSafetensors(shard, opts, names);
  }
}

/** Every tensor of a file (see `streamHalfSafetensors`), freed again if any fails. */
export async function loadHalfSafetensors(path: string, opts: HalfLoadOptions): Promise<Map<string, Tensor>> {
  const out = new Map<string, Tensor>();
  try {
    for await (const [name, t] of streamHalfSafetensors(path, opts)) out.set(name, t);
  } catch (err) {
    for (const t of out.values()) t.dispose();
    throw err;
  }
  return out;
}
