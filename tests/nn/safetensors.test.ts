import fc from 'fast-check';
import { mkdtempSync, promises as fsp, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  bfloat16ToNumber,
  float16ToNumber,
  loadSafetensors,
  loadShardedSafetensors,
  MAX_HEADER_BYTES,
  numberToBfloat16,
  numberToFloat16,
  readSafetensorsHeader,
  readShardIndex,
  saveSafetensors,
  streamSafetensors,
  type SafetensorsDType,
} from '../../nn/safetensors.js';
import * as uhd from '../../tensor/index.js';
import { PROP } from '../support.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-safetensors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileCounter = 0;
/** A fresh path in the test folder. */
function freshPath(stem = 'file'): string {
  return join(dir, `${stem}-${fileCounter++}.safetensors`);
}

// ---- building files by hand ------------------------------------------------------------------

/** prefix (u64 LE header length) + header text + data. */
function rawFile(headerText: string | Uint8Array, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const header = typeof headerText === 'string' ? new TextEncoder().encode(headerText) : headerText;
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

interface HandEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  bytes: Uint8Array;
}

/** A file laid out in the order given, header keys in reverse order, padded with `pad` spaces. */
function handFile(entries: HandEntry[], metadata?: Record<string, string>, pad = 3): Uint8Array {
  const parts: string[] = [];
  let offset = 0;
  const offsets = entries.map((e) => {
    const range = [offset, offset + e.bytes.length];
    offset += e.bytes.length;
    return range;
  });
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i];
    parts.push(`${JSON.stringify(e.name)}: {"dtype": "${e.dtype}", "shape": [${e.shape.join(', ')}], "data_offsets": [${offsets[i].join(', ')}]}`);
  }
  if (metadata) parts.push(`"__metadata__": ${JSON.stringify(metadata)}`);
  const data = new Uint8Array(offset);
  entries.forEach((e, i) => data.set(e.bytes, offsets[i][0]));
  return rawFile(`{${parts.join(', ')}}${' '.repeat(pad)}`, data);
}

/** Little-endian bytes of values written with `set` (a DataView setter) at `size` bytes each. */
function le<T extends number | bigint>(values: T[], size: number, set: (v: DataView, at: number, x: T) => void): Uint8Array {
  const out = new Uint8Array(values.length * size);
  const view = new DataView(out.buffer);
  values.forEach((x, i) => set(view, i * size, x));
  return out;
}
const f32le = (xs: number[]) => le(xs, 4, (v, at, x) => v.setFloat32(at, x, true));
const f64le = (xs: number[]) => le(xs, 8, (v, at, x) => v.setFloat64(at, x, true));
const i32le = (xs: number[]) => le(xs, 4, (v, at, x) => v.setInt32(at, x, true));
const u16le = (xs: number[]) => le(xs, 2, (v, at, x) => v.setUint16(at, x, true));
const i16le = (xs: number[]) => le(xs, 2, (v, at, x) => v.setInt16(at, x, true));
const i64le = (xs: bigint[]) => le(xs, 8, (v, at, x) => v.setBigInt64(at, x, true));
const u64le = (xs: bigint[]) => le(xs, 8, (v, at, x) => v.setBigUint64(at, x, true));

function write(bytes: Uint8Array, stem?: string): string {
  const path = freshPath(stem);
  writeFileSync(path, bytes);
  return path;
}

async function dataOf(t: uhd.Tensor): Promise<number[]> {
  return Array.from(await t.data());
}

function disposeAll(tensors: Map<string, uhd.Tensor>): void {
  for (const t of tensors.values()) t.dispose();
}

/** Error message of a rejected promise (fails the test when it resolves or throws a non-Error). */
async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    const value = await p;
    if (value instanceof Map) disposeAll(value as Map<string, uhd.Tensor>);
  } catch (err) {
    expect(err).toBeInstanceOf(Error);
    return (err as Error).message;
  }
  return expect.fail('expected a rejection');
}

// ---- tests ----------------------------------------------------------------------------------------

describe('save then load gives back the same tensors', () => {
  it('round-trips float32, float64, int32, 0-d, empty and strided views with metadata', async () => {
    const base = uhd.arange(24, undefined, 1, { dtype: 'float32' }).reshape(2, 3, 4);
    const tensors = {
      'model.embed.weight': uhd.tensor(new Float32Array([1.5, -2.25, 3e-8, 1e30, -0, 7]), { shape: [2, 3] }),
      'double': uhd.tensor(new Float64Array([Math.PI, -1e-300, 1e300, 0.1]), { shape: [4] }),
      'ids': uhd.tensor(new Int32Array([-2147483648, 2147483647, 0, -1, 5, 6]), { shape: [3, 2] }),
      'scalar': uhd.tensor(new Float32Array([42.5]), { shape: [] }),
      'empty': uhd.tensor(new Float32Array(0), { shape: [0, 5] }),
      'view': base.permute(2, 0, 1).slice([1, 4, 2]), // [2,2,3], non-contiguous
    };
    const path = freshPath('roundtrip');
    await saveSafetensors(path, tensors, { metadata: { format: 'pt', note: 'ünïcode ✓' } });

    const header = await readSafetensorsHeader(path);
    expect(header.metadata).toEqual({ format: 'pt', note: 'ünïcode ✓' });
    expect(header.path).toBe(path);
    const loaded = await loadSafetensors(path);
    expect([...loaded.keys()].sort()).toEqual(Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      const got = loaded.get(name)!;
      expect(got.shape, name).toEqual(t.shape);
      expect(got.dtype, name).toBe(t.dtype);
      expect(got.device).toBe('cpu');
      expect(Object.is(got.size, t.size)).toBe(true);
      expect(await dataOf(got), name).toEqual(await dataOf(t));
    }
    expect(Object.is((await loaded.get('model.embed.weight')!.data())[4], -0)).toBe(true);
    disposeAll(loaded);
  });

  it('writes the reference layout: 8-byte-aligned space-padded header, __metadata__ then sorted names, aligned data', async () => {
    const path = freshPath('layout');
    await saveSafetensors(
      path,
      new Map([
        ['b', uhd.tensor(new Float32Array([1, 2, 3]))],
        ['a', uhd.tensor(new Int32Array([7]))],
        ['c', uhd.tensor(new Float64Array([0.5]))],
      ]),
      { metadata: { k: 'v' } },
    );
    const bytes = readFileSync(path);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const text = bytes.subarray(8, 8 + n).toString('utf8');
    expect(text.trimEnd().endsWith('}')).toBe(true);
    expect(text.slice(text.trimEnd().length)).toMatch(/^ *$/);
    const json = JSON.parse(text) as Record<string, { dtype: string; data_offsets: [number, number] }>;
    expect(Object.keys(json)).toEqual(['__metadata__', 'a', 'b', 'c']);
    expect(json.c).toMatchObject({ dtype: 'F64', data_offsets: [0, 8] }); // 8-byte elements first
    expect(json.a.dtype).toBe('I32');
    expect(json.b.dtype).toBe('F32');
    for (const key of ['a', 'b', 'c']) expect(json[key].data_offsets[0] % 4).toBe(0);
    expect(bytes.length).toBe(8 + n + 8 + 4 + 12);
  });

  it('overwrites an existing file and leaves no temporary file', async () => {
    const path = freshPath('overwrite');
    await saveSafetensors(path, { x: uhd.tensor([1, 2]) });
    await saveSafetensors(path, { y: uhd.tensor([3, 4, 5]) });
    const loaded = await loadSafetensors(path);
    expect([...loaded.keys()]).toEqual(['y']);
    expect(await dataOf(loaded.get('y')!)).toEqual([3, 4, 5]);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    disposeAll(loaded);
  });

  it('streams tensors larger than one 16 MiB I/O chunk in pieces, without losing or shifting elements', async () => {
    const n = 8_388_608 + 12_345; // more than one chunk of F32 (4 Mi) and of BF16 (8 Mi) elements
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = ((i % 251) - 125) * 2 ** ((i % 9) - 4); // at most 7 significant bits: exact in bf16
    const big = uhd.tensor(values, { shape: [n] });
    for (const dtype of ['F32', 'BF16'] as const) {
      const path = freshPath(`big-${dtype}`);
      await saveSafetensors(path, { big, tail: uhd.tensor([1, 2, 3]) }, { dtype });
      const loaded = await loadSafetensors(path);
      const got = (await loaded.get('big')!.data()) as Float32Array;
      expect(got.length).toBe(n);
      let firstBad = -1;
      for (let i = 0; i < n && firstBad < 0; i++) if (got[i] !== values[i]) firstBad = i;
      expect(firstBad, dtype).toBe(-1);
      expect(await dataOf(loaded.get('tail')!)).toEqual([1, 2, 3]);
      disposeAll(loaded);
      await fsp.rm(path);
    }
  });

  it('saves an empty collection as a valid file', async () => {
    const path = freshPath('nothing');
    await saveSafetensors(path, {});
    expect((await loadSafetensors(path)).size).toBe(0);
  });
});

describe('half and bfloat16', () => {
  it('decodes known float16 bit patterns exactly', () => {
    expect(float16ToNumber(0x3c00)).toBe(1);
    expect(float16ToNumber(0xc000)).toBe(-2);
    expect(float16ToNumber(0x7bff)).toBe(65504);
    expect(float16ToNumber(0x0001)).toBe(2 ** -24); // smallest subnormal
    expect(float16ToNumber(0x03ff)).toBe(1023 * 2 ** -24); // largest subnormal
    expect(float16ToNumber(0x0400)).toBe(2 ** -14); // smallest normal
    expect(float16ToNumber(0x3555)).toBe(0.333251953125);
    expect(float16ToNumber(0x7c00)).toBe(Infinity);
    expect(float16ToNumber(0xfc00)).toBe(-Infinity);
    expect(float16ToNumber(0x7e00)).toBeNaN();
    expect(float16ToNumber(0xfc01)).toBeNaN();
    expect(Object.is(float16ToNumber(0x8000), -0)).toBe(true);
  });

  it('decodes known bfloat16 bit patterns exactly', () => {
    expect(bfloat16ToNumber(0x3f80)).toBe(1);
    expect(bfloat16ToNumber(0x4049)).toBe(3.140625); // bf16(pi)
    expect(numberToBfloat16(Math.PI)).toBe(0x4049);
    expect(bfloat16ToNumber(0xc000)).toBe(-2);
    expect(bfloat16ToNumber(0x0001)).toBe(2 ** -133);
    expect(bfloat16ToNumber(0x7f80)).toBe(Infinity);
    expect(bfloat16ToNumber(0x7fc0)).toBeNaN();
  });

  it('encode(decode(bits)) is the identity on every non-NaN 16-bit pattern', () => {
    for (let h = 0; h < 65536; h++) {
      const half = float16ToNumber(h);
      if (Number.isNaN(half)) expect(Number.isNaN(float16ToNumber(numberToFloat16(half)))).toBe(true);
      else if (numberToFloat16(half) !== h) expect.fail(`f16 ${h.toString(16)} -> ${half} -> ${numberToFloat16(half).toString(16)}`);
      const bf = bfloat16ToNumber(h);
      if (Number.isNaN(bf)) expect(Number.isNaN(bfloat16ToNumber(numberToBfloat16(bf)))).toBe(true);
      else if (numberToBfloat16(bf) !== h) expect.fail(`bf16 ${h.toString(16)} -> ${bf} -> ${numberToBfloat16(bf).toString(16)}`);
    }
  });

  it('rounds to nearest with ties to even, overflow to inf, underflow to signed zero', () => {
    expect(numberToFloat16(1 + 2 ** -11)).toBe(0x3c00); // tie, down to even
    expect(numberToFloat16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, up to even
    expect(numberToFloat16(65519.99)).toBe(0x7bff);
    expect(numberToFloat16(65520)).toBe(0x7c00); // tie with 2^16: up, to inf
    expect(numberToFloat16(2 ** -25)).toBe(0x0000); // tie between 0 and the smallest subnormal
    expect(numberToFloat16(2 ** -25 * 1.0001)).toBe(0x0001);
    expect(numberToFloat16(3 * 2 ** -25)).toBe(0x0002); // tie between subnormals 1 and 2
    expect(numberToFloat16(-1e-30)).toBe(0x8000);
    expect(numberToFloat16(1023.5 * 2 ** -24)).toBe(0x0400); // carries from subnormal to normal
    expect(numberToBfloat16(1 + 2 ** -8)).toBe(0x3f80);
    expect(numberToBfloat16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(numberToBfloat16(3.4e38)).toBe(0x7f80);
    // a float64 just above a tie: rounding through float32 first would wrongly give the tie's even side
    expect(numberToFloat16(1 + 2 ** -11 + 2 ** -40)).toBe(0x3c01);
    expect(numberToBfloat16(1 + 2 ** -8 + 2 ** -40)).toBe(0x3f81);
  });

  it('numberToFloat16 and numberToBfloat16 pick the nearest representable value (property)', () => {
    const check = (x: number, bits: number, decode: (b: number) => number, maxFinite: number, overflowAt: number) => {
      const sign = bits & 0x8000;
      const magnitude = bits & 0x7fff;
      const got = decode(bits);
      if (x !== 0) expect(sign !== 0, `sign of ${x}`).toBe(x < 0);
      if (!Number.isFinite(got)) {
        expect(Math.abs(x)).toBeGreaterThanOrEqual(overflowAt);
        return;
      }
      const err = Math.abs(got - x);
      for (const m of [magnitude - 1, magnitude + 1]) {
        if (m < 0 || m > maxFinite) continue;
        const otherErr = Math.abs(decode(sign | m) - x);
        expect(err, `${x}: ${got} vs ${decode(sign | m)}`).toBeLessThanOrEqual(otherErr);
        if (err === otherErr) expect(magnitude % 2, `tie at ${x} goes to even`).toBe(0);
      }
      if (magnitude === maxFinite) expect(Math.abs(x)).toBeLessThan(overflowAt);
    };
    const value = fc.oneof(
      fc.double({ min: -70000, max: 70000, noNaN: true }),
      fc.double({ min: -1e-3, max: 1e-3, noNaN: true }),
      fc.integer({ min: -(2 ** 20), max: 2 ** 20 }).map((k) => k * 2 ** -25), // many exact ties
      fc.float({ noNaN: true, noDefaultInfinity: true }),
    );
    fc.assert(
      fc.property(value, (x) => {
        check(x, numberToFloat16(x), float16ToNumber, 0x7bff, 65520);
        check(x, numberToBfloat16(x), bfloat16ToNumber, 0x7f7f, (2 - 2 ** -8) * 2 ** 127);
      }),
      { ...PROP, numRuns: 2000 },
    );
  });

  it('saves float32 and float64 as F16 / BF16 / F32 and loads back the rounded values', async () => {
    const xs = [0, 1, -2, Math.PI, 1e-6, 6e-8, -65504, 70000, 1 + 2 ** -11, 0.1, -0.3333, 1e-40, NaN, -Infinity];
    const formats = {
      F16: [numberToFloat16, float16ToNumber],
      BF16: [numberToBfloat16, bfloat16ToNumber],
      F32: [Math.fround, (x: number) => x],
    } as const;
    for (const dtype of ['F16', 'BF16', 'F32'] as const) {
      const [encode, decode] = formats[dtype];
      const path = freshPath(dtype);
      await saveSafetensors(
        path,
        {
          f32: uhd.tensor(new Float32Array(xs), { shape: [2, 7] }),
          f64: uhd.tensor(new Float64Array(xs), { shape: [14] }),
          ids: uhd.tensor(new Int32Array([1, 2])),
        },
        { dtype },
      );
      const header = await readSafetensorsHeader(path);
      expect(header.tensors.get('f32')!.dtype).toBe(dtype);
      expect(header.tensors.get('f64')!.dtype).toBe(dtype);
      expect(header.tensors.get('ids')!.dtype).toBe('I32');
      const loaded = await loadSafetensors(path);
      expect(loaded.get('f32')!.dtype).toBe('float32');
      expect(loaded.get('f32')!.shape).toEqual([2, 7]);
      expect(await dataOf(loaded.get('f32')!)).toEqual(xs.map((x) => decode(encode(Math.fround(x)))));
      expect(await dataOf(loaded.get('f64')!)).toEqual(xs.map((x) => decode(encode(x))));
      expect(await dataOf(loaded.get('ids')!)).toEqual([1, 2]);
      disposeAll(loaded);
    }
  });
});

describe('a file written byte by byte loads correctly', () => {
  const entries: HandEntry[] = [
    { name: 'halves', dtype: 'F16', shape: [2, 3], bytes: u16le([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x7e00]) },
    { name: 'bf', dtype: 'BF16', shape: [2], bytes: u16le([0x3f80, 0x4049]) },
    { name: 'positions', dtype: 'I64', shape: [4], bytes: i64le([-3n, 2147483647n, -2147483648n, 0n]) },
    { name: 'w', dtype: 'F32', shape: [3, 1], bytes: f32le([0.5, -1.25, 3]) },
    { name: 'scalar', dtype: 'F64', shape: [], bytes: f64le([Math.E]) },
    { name: 'no elements', dtype: 'F32', shape: [2, 0], bytes: new Uint8Array(0) },
    { name: 'mask', dtype: 'BOOL', shape: [3], bytes: new Uint8Array([1, 0, 1]) },
    { name: 'bytes', dtype: 'U8', shape: [2], bytes: new Uint8Array([0, 255]) },
    { name: 'signed bytes', dtype: 'I8', shape: [2], bytes: new Uint8Array([0x80, 0x7f]) },
    { name: 'shorts', dtype: 'I16', shape: [2], bytes: i16le([-32768, 12345]) },
    { name: 'ushorts', dtype: 'U16', shape: [1], bytes: u16le([65535]) },
    { name: 'counts', dtype: 'U64', shape: [2], bytes: u64le([0n, 2147483647n]) },
    { name: 'i32', dtype: 'I32', shape: [1, 1], bytes: i32le([-7]) },
  ];
  const expected: Record<string, { shape: number[]; dtype: uhd.DType; values: number[] }> = {
    halves: { shape: [2, 3], dtype: 'float32', values: [1, -2, 65504, 2 ** -24, Infinity, NaN] },
    bf: { shape: [2], dtype: 'float32', values: [1, 3.140625] },
    positions: { shape: [4], dtype: 'int32', values: [-3, 2147483647, -2147483648, 0] },
    w: { shape: [3, 1], dtype: 'float32', values: [0.5, -1.25, 3] },
    scalar: { shape: [], dtype: 'float64', values: [Math.E] },
    'no elements': { shape: [2, 0], dtype: 'float32', values: [] },
    mask: { shape: [3], dtype: 'int32', values: [1, 0, 1] },
    bytes: { shape: [2], dtype: 'int32', values: [0, 255] },
    'signed bytes': { shape: [2], dtype: 'int32', values: [-128, 127] },
    shorts: { shape: [2], dtype: 'int32', values: [-32768, 12345] },
    ushorts: { shape: [1], dtype: 'int32', values: [65535] },
    counts: { shape: [2], dtype: 'int32', values: [0, 2147483647] },
    i32: { shape: [1, 1], dtype: 'int32', values: [-7] },
  };

  it('reads the header: absolute offsets in file order, metadata', async () => {
    const bytes = handFile(entries, { format: 'pt' }, 5);
    const path = write(bytes, 'hand');
    const header = await readSafetensorsHeader(path);
    expect([...header.tensors.keys()]).toEqual(entries.map((e) => e.name));
    const dataStart = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
    let at = dataStart;
    for (const e of entries) {
      const got = header.tensors.get(e.name)!;
      expect(got).toEqual({ dtype: e.dtype, shape: e.shape, begin: at, end: at + e.bytes.length });
      at += e.bytes.length;
    }
    expect(at).toBe(bytes.length);
    expect(header.metadata).toEqual({ format: 'pt' });
  });

  it('converts every dtype on load', async () => {
    const path = write(handFile(entries, undefined, 0), 'hand');
    const loaded = await loadSafetensors(path);
    expect(loaded.size).toBe(entries.length);
    for (const [name, want] of Object.entries(expected)) {
      const t = loaded.get(name)!;
      expect(t.shape, name).toEqual(want.shape);
      expect(t.dtype, name).toBe(want.dtype);
      expect(await dataOf(t), name).toEqual(want.values);
    }
    disposeAll(loaded);
  });

  it('streams each tensor once, in file order, and honours filter', async () => {
    const path = write(handFile(entries), 'hand');
    const seen: string[] = [];
    for await (const [name, t] of streamSafetensors(path)) {
      seen.push(name);
      expect(t.shape).toEqual(expected[name].shape);
      t.dispose();
    }
    expect(seen).toEqual(entries.map((e) => e.name));
    const asked: string[] = [];
    const picked: string[] = [];
    for await (const [name, t] of streamSafetensors(path, { filter: (n) => (asked.push(n), n.startsWith('s')) })) {
      picked.push(name);
      t.dispose();
    }
    expect(picked).toEqual(['scalar', 'signed bytes', 'shorts']);
    expect(asked).toEqual(entries.map((e) => e.name));
    const some = await loadSafetensors(path, { filter: (n) => n === 'w' });
    expect([...some.keys()]).toEqual(['w']);
    disposeAll(some);
  });

  it('a stream abandoned early closes its file', async () => {
    const path = write(handFile(entries), 'hand');
    const realOpen = fsp.open.bind(fsp);
    const opened: FileHandle[] = [];
    const open = vi.spyOn(fsp, 'open').mockImplementation(async (file, flags, mode) => {
      const handle = await realOpen(file, flags, mode);
      opened.push(handle);
      return handle;
    });
    try {
      for await (const [, t] of streamSafetensors(path)) {
        expect(opened.map((h) => h.fd >= 0)).toEqual([true]);
        t.dispose();
        break;
      }
    } finally {
      open.mockRestore();
    }
    expect(opened.map((h) => h.fd)).toEqual([-1]); // a closed FileHandle has fd -1
  });
});

describe('sharded checkpoints', () => {
  async function makeShards(weightMap: Record<string, string>): Promise<string> {
    const shardDir = mkdtempSync(join(dir, 'sharded-'));
    await saveSafetensors(join(shardDir, 'model-00001-of-00002.safetensors'), {
      'model.embed_tokens.weight': uhd.tensor(new Float32Array([1, 2, 3, 4]), { shape: [2, 2] }),
      'model.layers.0.mlp.up_proj.weight': uhd.tensor(new Float32Array([5, 6])),
    });
    await saveSafetensors(join(shardDir, 'model-00002-of-00002.safetensors'), {
      'lm_head.weight': uhd.tensor(new Float32Array([7, 8, 9]), { shape: [3, 1] }),
      'model.norm.weight': uhd.tensor(new Int32Array([10])),
    });
    writeFileSync(join(shardDir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 40 }, weight_map: weightMap }));
    return shardDir;
  }
  const goodMap = {
    'model.embed_tokens.weight': 'model-00001-of-00002.safetensors',
    'model.layers.0.mlp.up_proj.weight': 'model-00001-of-00002.safetensors',
    'lm_head.weight': 'model-00002-of-00002.safetensors',
    'model.norm.weight': 'model-00002-of-00002.safetensors',
  };

  it('loads every tensor of the weight map from its shard, given the folder or the index file', async () => {
    const shardDir = await makeShards(goodMap);
    for (const where of [shardDir, join(shardDir, 'model.safetensors.index.json')]) {
      const loaded = await loadShardedSafetensors(where);
      expect([...loaded.keys()].sort()).toEqual(Object.keys(goodMap).sort());
      expect(loaded.get('lm_head.weight')!.shape).toEqual([3, 1]);
      expect(await dataOf(loaded.get('lm_head.weight')!)).toEqual([7, 8, 9]);
      expect(await dataOf(loaded.get('model.embed_tokens.weight')!)).toEqual([1, 2, 3, 4]);
      expect(loaded.get('model.norm.weight')!.dtype).toBe('int32');
      disposeAll(loaded);
    }
    const some = await loadShardedSafetensors(shardDir, { filter: (n) => n.startsWith('model.') && n.endsWith('weight') && !n.includes('layers') });
    expect([...some.keys()].sort()).toEqual(['model.embed_tokens.weight', 'model.norm.weight']);
    disposeAll(some);
  });

  it('only loads the names the index assigns to each shard', async () => {
    const shardDir = await makeShards({ 'lm_head.weight': 'model-00002-of-00002.safetensors' });
    const loaded = await loadShardedSafetensors(shardDir);
    expect([...loaded.keys()]).toEqual(['lm_head.weight']);
    disposeAll(loaded);
  });

  it('names the tensor and the shard when the weight map lists a tensor its shard lacks', async () => {
    const shardDir = await makeShards({ ...goodMap, 'lm_head.weight': 'model-00001-of-00002.safetensors' });
    const shard = join(shardDir, 'model-00001-of-00002.safetensors');
    const message = await rejection(loadShardedSafetensors(shardDir));
    expect(message).toContain(`safetensors: ${shard}: tensor 'lm_head.weight': `);
    expect(message).toContain('missing from this shard');
  });

  it('rejects a malformed index and shard names outside its folder', async () => {
    const shardDir = await makeShards({ 'lm_head.weight': '../elsewhere.safetensors' });
    const index = join(shardDir, 'model.safetensors.index.json');
    expect(await rejection(loadShardedSafetensors(shardDir))).toContain(`safetensors: ${index}: tensor 'lm_head.weight': `);
    writeFileSync(index, '{"metadata": {}}');
    expect(await rejection(loadShardedSafetensors(index))).toMatch(/weight_map/);
    writeFileSync(index, '{"weight_map": ');
    expect(await rejection(loadShardedSafetensors(index))).toContain(`safetensors: ${index}: shard index is not valid JSON`);
    const missing = join(shardDir, 'nope');
    expect(await rejection(loadShardedSafetensors(missing))).toContain(missing);
  });
});

const ELEMENT_BYTES: Record<string, number> = { BOOL: 1, U8: 1, I8: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8 };

/** Element values of `count` elements at `at` in `bytes`, decoded independently with a DataView. */
function decodeByHand(bytes: Uint8Array, dtype: SafetensorsDType, at: number, count: number): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset + at);
  const read: Partial<Record<SafetensorsDType, [number, (i: number) => number]>> = {
    F32: [4, (i) => view.getFloat32(4 * i, true)],
    F64: [8, (i) => view.getFloat64(8 * i, true)],
    F16: [2, (i) => float16ToNumber(view.getUint16(2 * i, true))],
    BF16: [2, (i) => new Float32Array(new Uint32Array([view.getUint16(2 * i, true) << 16]).buffer)[0]],
    I32: [4, (i) => view.getInt32(4 * i, true)],
    U32: [4, (i) => view.getUint32(4 * i, true)],
    I64: [8, (i) => Number(view.getBigInt64(8 * i, true))],
    U64: [8, (i) => Number(view.getBigUint64(8 * i, true))],
    I16: [2, (i) => view.getInt16(2 * i, true)],
    U16: [2, (i) => view.getUint16(2 * i, true)],
    I8: [1, (i) => view.getInt8(i)],
    U8: [1, (i) => view.getUint8(i)],
    BOOL: [1, (i) => (view.getUint8(i) === 0 ? 0 : 1)],
  };
  const reader = read[dtype];
  if (!reader) return expect.fail(`a ${dtype} tensor loaded`);
  return Array.from({ length: count }, (_, i) => reader[1](i));
}

/**
 * What a successful load must mean, checked from the raw bytes: the header's tensors tile the
 * data section exactly, each holds numel * element size bytes, and each loaded tensor has the
 * header's shape and exactly the values those bytes encode.
 */
async function expectFaithfulToBytes(bytes: Uint8Array, path: string, loaded: Map<string, uhd.Tensor>): Promise<void> {
  const header = await readSafetensorsHeader(path);
  expect([...loaded.keys()]).toEqual([...header.tensors.keys()]);
  let at = 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  for (const [name, e] of header.tensors) {
    const t = loaded.get(name)!;
    expect(e.begin, name).toBe(at);
    expect(t.shape).toEqual(e.shape);
    const count = e.shape.reduce((a, b) => a * b, 1);
    expect(e.end - e.begin, name).toBe(count * ELEMENT_BYTES[e.dtype]);
    expect(await dataOf(t), name).toEqual(decodeByHand(bytes, e.dtype, e.begin, count).map((x) => (t.dtype === 'float32' ? Math.fround(x) : x)));
    at = e.end;
  }
  expect(at).toBe(bytes.length);
}

describe('malformed files are rejected with the file and tensor named', () => {
  /** Writes `bytes`, then expects both header reading and loading to fail naming the file (and tensor). */
  async function expectRejected(bytes: Uint8Array, pattern: RegExp, tensorName?: string): Promise<void> {
    const path = write(bytes, 'bad');
    for (const attempt of [() => readSafetensorsHeader(path), () => loadSafetensors(path)]) {
      const message = await rejection(attempt());
      expect(message.startsWith(`safetensors: ${path}: `), message).toBe(true);
      if (tensorName !== undefined) expect(message).toContain(`tensor '${tensorName}': `);
      expect(message).toMatch(pattern);
    }
  }
  const entry = (dtype: string, shape: unknown, offsets: unknown) => JSON.stringify({ dtype, shape, data_offsets: offsets });
  const eight = new Uint8Array(8);

  it('a file shorter than 8 bytes', async () => {
    await expectRejected(new Uint8Array(5), /file is 5 bytes, shorter than the 8-byte header length/);
    await expectRejected(new Uint8Array(0), /file is 0 bytes/);
  });

  it('a header length past the end of the file, or absurdly large', async () => {
    const bytes = rawFile('{}');
    new DataView(bytes.buffer).setBigUint64(0, 1000n, true);
    await expectRejected(bytes, /header length 1000 runs past the end of the file \(10 bytes\)/);
    new DataView(bytes.buffer).setBigUint64(0, 2n ** 63n + 5n, true);
    await expectRejected(bytes, /header length 9223372036854775813 is larger than the limit of 100000000 bytes/);
  });

  it('a deeply nested header (in a shape, the offsets or the metadata) is refused before parsing, naming the file', async () => {
    const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
    // 200000 levels: quoting such a value in an error message used to overflow the call stack
    await expectRejected(rawFile(`{"a": {"dtype": "F32", "shape": ${deep(200_000)}, "data_offsets": [0, 0]}}`), /header nests JSON more than 64 levels deep/);
    await expectRejected(rawFile(`{"a": {"dtype": "F32", "shape": [1], "data_offsets": ${deep(100_000)}}}`, eight.subarray(0, 4)), /more than 64 levels/);
    await expectRejected(rawFile(`{"__metadata__": ${'{"x":'.repeat(70)}1${'}'.repeat(70)}}`), /more than 64 levels/);
    // brackets inside strings do not count, and 64 levels are still read (then rejected for what they hold)
    const ok = write(rawFile(`{"__metadata__": {"note": "${'[\\"'.repeat(500)}"}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}`, eight.subarray(0, 4)));
    expect((await readSafetensorsHeader(ok)).metadata.note).toBe('["'.repeat(500));
    await expectRejected(rawFile(`{"__metadata__": {"x": ${deep(62)}}}`), /__metadata__ entry 'x' is \[\[/);
  });

  it('a shard index that is deeply nested or huge is refused, naming the index', async () => {
    const sub = mkdtempSync(join(dir, 'deep-index-'));
    const index = join(sub, 'model.safetensors.index.json');
    writeFileSync(index, `{"weight_map": {"a": ${'['.repeat(100_000)}${']'.repeat(100_000)}}}`);
    await expect(readShardIndex(sub)).rejects.toThrow(`safetensors: ${index}: shard index nests JSON more than 64 levels deep`);
    writeFileSync(index, '');
    truncateSync(index, MAX_HEADER_BYTES + 1); // sparse: no disk used
    await expect(readShardIndex(index)).rejects.toThrow(/cannot read the shard index: it is 100000001 bytes, larger than the limit of 100000000/);
  });

  it('a header that is not UTF-8, not JSON, or not a JSON object', async () => {
    await expectRejected(rawFile(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), /header is not valid UTF-8/);
    await expectRejected(rawFile('{"a": {"dtype": "F32"'), /header is not valid JSON/);
    await expectRejected(rawFile(''), /header is not valid JSON/);
    await expectRejected(rawFile('[1, 2]'), /header is not a JSON object/);
    await expectRejected(rawFile('null'), /header is not a JSON object/);
    await expectRejected(rawFile('"x"   '), /header is not a JSON object/);
  });

  it('metadata that is not an object of strings', async () => {
    await expectRejected(rawFile('{"__metadata__": {"epoch": 3}}'), /__metadata__ entry 'epoch' is 3, not a string/);
    await expectRejected(rawFile('{"__metadata__": ["a"]}'), /__metadata__ is not an object/);
  });

  it('entries that are not {dtype: string, shape: integers >= 0, data_offsets: [int, int]}', async () => {
    await expectRejected(rawFile('{"a": 5}'), /entry is not an object/, 'a');
    await expectRejected(rawFile('{"a": [1]}'), /entry is not an object/, 'a');
    await expectRejected(rawFile(`{"a": ${JSON.stringify({ dtype: 3, shape: [], data_offsets: [0, 0] })}}`), /dtype is 3, not a string/, 'a');
    await expectRejected(rawFile(`{"a": ${JSON.stringify({ shape: [], data_offsets: [0, 0] })}}`), /dtype is missing/, 'a');
    for (const shape of [[-1], [1.5], '2', null, [2, '3'], [1e300]]) {
      await expectRejected(rawFile(`{"a": ${entry('F32', shape, [0, 0])}}`, eight), /shape .* is not an array of non-negative integers/, 'a');
    }
    await expectRejected(rawFile(`{"a": ${JSON.stringify({ dtype: 'F32', data_offsets: [0, 4] })}}`, eight), /shape missing/, 'a');
    for (const offsets of [[0], [0, '4'], [-4, 0], [0, 1, 2], null, [0, 4.5], [0, 2 ** 60]]) {
      await expectRejected(rawFile(`{"a": ${entry('F32', [1], offsets)}}`, eight), /data_offsets .* is not \[begin, end\]/, 'a');
    }
  });

  it('an unknown dtype, and a known dtype that cannot be loaded', async () => {
    await expectRejected(rawFile(`{"a": ${entry('F128', [1], [0, 16])}}`, new Uint8Array(16)), /unknown dtype 'F128'/, 'a');
    await expectRejected(rawFile(`{"a": ${entry('f32', [1], [0, 4])}}`, new Uint8Array(4)), /unknown dtype 'f32'/, 'a');
    const path = write(rawFile(`{"x": ${entry('I32', [1], [0, 4])}, "q": ${entry('F8_E4M3', [4], [4, 8])}}`, new Uint8Array(8)));
    expect((await readSafetensorsHeader(path)).tensors.get('q')!.dtype).toBe('F8_E4M3');
    const message = await rejection(loadSafetensors(path));
    expect(message).toContain(`safetensors: ${path}: tensor 'q': dtype F8_E4M3 cannot be loaded`);
    const justX = await loadSafetensors(path, { filter: (n) => n === 'x' });
    expect(justX.size).toBe(1);
  });

  it('begin after end, end beyond the data section, wrong byte length', async () => {
    await expectRejected(rawFile(`{"a": ${entry('F32', [1], [8, 4])}}`, new Uint8Array(8)), /data_offsets \[8, 4\]: begin is after end/, 'a');
    await expectRejected(rawFile(`{"a": ${entry('F32', [4], [0, 16])}}`, eight), /end beyond the data section \(8 bytes\)/, 'a');
    await expectRejected(rawFile(`{"a": ${entry('F32', [3], [0, 8])}}`, eight), /holds 8 bytes but shape \[3\] of F32 needs 12/, 'a');
    await expectRejected(rawFile(`{"a": ${entry('BF16', [2, 3], [0, 8])}}`, eight), /holds 8 bytes but shape \[2,3\] of BF16 needs 12/, 'a');
    await expectRejected(rawFile(`{"a": ${entry('F32', [2 ** 40, 2 ** 40], [0, 8])}}`, eight), /holds 8 bytes but shape/, 'a');
  });

  it('overlapping tensors, holes, and bytes after the last tensor', async () => {
    await expectRejected(
      rawFile(`{"a": ${entry('F32', [2], [0, 8])}, "b": ${entry('F32', [2], [4, 12])}}`, new Uint8Array(12)),
      /bytes \[4, 12\) overlap tensor 'a'/,
      'b',
    );
    await expectRejected(
      rawFile(`{"a": ${entry('F32', [1], [0, 4])}, "b": ${entry('F32', [1], [8, 12])}}`, new Uint8Array(12)),
      /leaving bytes \[4, 8\) after tensor 'a' unused/,
      'b',
    );
    await expectRejected(rawFile(`{"a": ${entry('F32', [1], [4, 8])}}`, eight), /leaving bytes \[0, 4\) at the start of the data section unused/, 'a');
    await expectRejected(rawFile(`{"a": ${entry('F32', [1], [0, 4])}}`, eight), /4 unused bytes at its end, after the last tensor 'a'/);
    await expectRejected(rawFile('{}', eight), /8 unused bytes at its end, but the header lists no tensors/);
    // the same tensor's bytes claimed twice
    await expectRejected(
      rawFile(`{"a": ${entry('F32', [1], [0, 4])}, "b": ${entry('F32', [1], [0, 4])}}`, new Uint8Array(4)),
      /overlap tensor 'a'/,
      'b',
    );
  });

  it('I64 / U64 / U32 values that do not fit in int32', async () => {
    const path = write(rawFile(`{"pos": ${entry('I64', [3], [0, 24])}}`, i64le([1n, -(2n ** 31n) - 1n, 0n])));
    expect(await rejection(loadSafetensors(path))).toBe(`safetensors: ${path}: tensor 'pos': I64 value -2147483649 at flat index 1 does not fit in int32`);
    const big = write(rawFile(`{"n": ${entry('U64', [1], [0, 8])}}`, u64le([2n ** 63n])));
    expect(await rejection(loadSafetensors(big))).toContain(`safetensors: ${big}: tensor 'n': U64 value 9223372036854775808 at flat index 0`);
    const u32 = write(rawFile(`{"n": ${entry('U32', [2], [0, 8])}}`, new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0x80])));
    expect(await rejection(loadSafetensors(u32))).toContain(`safetensors: ${u32}: tensor 'n': U32 value 2147483648 at flat index 1`);
  });

  it('a missing file', async () => {
    const path = join(dir, 'does-not-exist.safetensors');
    expect(await rejection(loadSafetensors(path))).toMatch(new RegExp(`^safetensors: ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot open`));
  });

  it('random corruptions either fail naming the file or load the same shapes and dtypes (fuzz)', async () => {
    const entries: HandEntry[] = [
      { name: 'w', dtype: 'F32', shape: [2, 3], bytes: f32le([1, 2, 3, 4, 5, 6]) },
      { name: 'h', dtype: 'F16', shape: [3], bytes: u16le([0x3c00, 0x7bff, 0x0001]) },
      { name: 'b', dtype: 'BF16', shape: [1, 2], bytes: u16le([0x3f80, 0x4049]) },
      { name: 'ids', dtype: 'I64', shape: [2], bytes: i64le([5n, -5n]) },
      { name: 'd', dtype: 'F64', shape: [], bytes: f64le([0.25]) },
      { name: 'm', dtype: 'BOOL', shape: [2], bytes: new Uint8Array([1, 0]) },
      { name: 'e', dtype: 'F32', shape: [0], bytes: new Uint8Array(0) },
      { name: 'i', dtype: 'I32', shape: [2, 1], bytes: i32le([9, -9]) },
    ];
    const original = handFile(entries, { format: 'pt' }, 4);
    const dataStart = 8 + Number(new DataView(original.buffer).getBigUint64(0, true));
    const path = freshPath('fuzz');
    const digitPositions = [...original.subarray(0, dataStart).keys()].filter((i) => i >= 8 && original[i] >= 0x30 && original[i] <= 0x39);
    const corruption = fc.oneof(
      fc.record({
        kind: fc.constant('edit' as const),
        edits: fc.array(
          fc.record({ at: fc.nat({ max: original.length - 1 }), flipBit: fc.boolean(), value: fc.integer({ min: 0, max: 255 }) }),
          { minLength: 1, maxLength: 8 },
        ),
      }),
      fc.record({ kind: fc.constant('truncate' as const), length: fc.nat({ max: original.length - 1 }) }),
      // header numbers (shapes, offsets, the length prefix's low byte) changed to other digits
      fc.record({
        kind: fc.constant('digits' as const),
        edits: fc.array(fc.record({ index: fc.nat(), digit: fc.integer({ min: 0x30, max: 0x39 }) }), { minLength: 1, maxLength: 4 }),
      }),
      // edits inside the 8-byte length and the header only, where the checks are
      fc.record({
        kind: fc.constant('edit' as const),
        edits: fc.array(
          fc.record({ at: fc.nat({ max: dataStart - 1 }), flipBit: fc.boolean(), value: fc.integer({ min: 0, max: 7 }) }),
          { minLength: 1, maxLength: 3 },
        ),
      }),
    );
    let failures = 0;
    await fc.assert(
      fc.asyncProperty(corruption, async (c) => {
        let bytes: Uint8Array;
        let dataOnly = false;
        if (c.kind === 'truncate') bytes = original.slice(0, c.length);
        else if (c.kind === 'digits') {
          bytes = original.slice();
          for (const e of c.edits) bytes[digitPositions[e.index % digitPositions.length]] = e.digit;
        } else {
          bytes = original.slice();
          for (const e of c.edits) bytes[e.at] = e.flipBit ? bytes[e.at] ^ (1 << (e.value & 7)) : e.value;
          dataOnly = c.edits.every((e) => e.at >= dataStart);
        }
        writeFileSync(path, bytes);
        let loaded: Map<string, uhd.Tensor>;
        try {
          loaded = await loadSafetensors(path);
        } catch (err) {
          failures++;
          expect(err).toBeInstanceOf(Error);
          expect((err as Error).constructor).toBe(Error); // not a RangeError / TypeError / SyntaxError
          expect((err as Error).message).toContain(`safetensors: ${path}: `);
          if (dataOnly) expect((err as Error).message).toMatch(/I64 value .* does not fit in int32/);
          return;
        }
        await expectFaithfulToBytes(bytes, path, loaded);
        if (dataOnly) {
          expect([...loaded.keys()]).toEqual(entries.map((e) => e.name));
          for (const e of entries) {
            const t = loaded.get(e.name)!;
            expect(t.shape).toEqual(e.shape);
            expect(t.dtype).toBe(e.dtype === 'F64' ? 'float64' : e.dtype.startsWith('F') || e.dtype === 'BF16' ? 'float32' : 'int32');
          }
        }
        disposeAll(loaded);
      }),
      { ...PROP, numRuns: 300 },
    );
    expect(failures).toBeGreaterThan(0);
  });
});

describe('saving is atomic', () => {
  it('a save that fails mid-way leaves the previous file intact and no temporary file', async () => {
    const path = freshPath('atomic');
    await saveSafetensors(path, { a: uhd.tensor([1, 2, 3]) });
    const before = readFileSync(path);

    const bad = uhd.tensor(new Float32Array(1000));
    vi.spyOn(bad, 'data').mockRejectedValue(new Error('device lost'));
    const good = uhd.tensor(new Float32Array(5000).fill(7)); // 'a' sorts first: written before 'z' fails
    const message = await rejection(saveSafetensors(path, { a: good, z: bad }, { metadata: { step: '2' } }));
    expect(message).toBe(`safetensors: ${path}: tensor 'z': reading its data failed: device lost`);
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const gone = uhd.tensor([4, 5]);
    gone.dispose();
    expect(await rejection(saveSafetensors(path, { a: good, gone }))).toContain(`safetensors: ${path}: tensor 'gone': reading its data failed`);
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    const still = await loadSafetensors(path);
    expect(await dataOf(still.get('a')!)).toEqual([1, 2, 3]);
    disposeAll(still);
  });

  it('rejects what it cannot write, naming the file (and tensor)', async () => {
    const path = freshPath('refused');
    expect(await rejection(saveSafetensors(path, { __metadata__: uhd.tensor([1]) }))).toContain(`safetensors: ${path}: tensor '__metadata__': the name __metadata__ is reserved`);
    const notStrings = { epoch: 3 } as unknown as Record<string, string>;
    expect(await rejection(saveSafetensors(path, { a: uhd.tensor([1]) }, { metadata: notStrings }))).toContain(`safetensors: ${path}: metadata 'epoch' is number, not a string`);
    const missingDir = join(dir, 'no-such-folder', 'x.safetensors');
    expect(await rejection(saveSafetensors(missingDir, { a: uhd.tensor([1]) }))).toContain(`safetensors: ${missingDir}: writing`);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});
