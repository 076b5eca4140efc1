/**
 * safetensors: the checkpoint format of the Hugging Face hub, read and written.
 *
 * A file is
 *
 *   [8 bytes]  N, the header length, an unsigned 64-bit little-endian integer
 *   [N bytes]  the header: UTF-8 JSON, possibly padded with trailing spaces,
 *              { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] }, ...,
 *                "__metadata__": { "<key>": "<string value>" } }            (metadata optional)
 *   [rest]     the data section: each tensor's elements, row-major, little-endian, at
 *              [begin, end) counted from the start of the data section
 *
 * Files are untrusted input: the header is checked completely (dtypes, shapes, byte lengths,
 * and, as the reference implementation requires, that the tensors tile the data section with
 * neither overlaps nor holes) before any tensor is read, and every error names the file and,
 * where there is one, the tensor: `safetensors: <file>: tensor '<name>': <what is wrong>`.
 *
 * Reading streams: only the header is read up front; each tensor's bytes are read with
 * positioned reads when that tensor is loaded, in chunks, so an 8B-parameter checkpoint never
 * sits in memory as one buffer. Writing streams too, tensor by tensor, into a temporary file
 * that is renamed over the target only when complete.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import * as nodePath from 'node:path';
import { getBackend, Tensor, type Device, type DType, type TypedArray } from '../tensor/index.js';

// ---- the format ---------------------------------------------------------------------------

/** Element types a safetensors header may name, with their sizes in bytes. */
const DTYPE_BYTES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
  C64: 8,
} as const;

/** A dtype name as it appears in a safetensors header. */
export type SafetensorsDType = keyof typeof DTYPE_BYTES;

/** The on-disk float formats `saveSafetensors` can write float tensors as. */
export type SafetensorsFloatDType = 'F32' | 'F16' | 'BF16';

/** Headers longer than this are rejected as absurd (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * Headers nesting JSON deeper than this are rejected before parsing. A valid header nests 3
 * levels (`{name: {shape: [...]}}`); the limit leaves room for odd metadata while keeping every
 * later step (checks, error messages that quote a value) far from the call-stack limit.
 */
export const MAX_HEADER_DEPTH = 64;

/** Tensor bytes are read and written in pieces of at most this size. */
const CHUNK_BYTES = 1 << 24;

const METADATA_KEY = '__metadata__';

const HOST_IS_LITTLE_ENDIAN = endianness() === 'LE';

function isSafetensorsDType(s: string): s is SafetensorsDType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/** One tensor of a header. `begin`/`end` are absolute byte offsets in the file. */
export interface SafetensorsEntry {
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

/** A checked header: the tensors in file order, and the string metadata (empty when absent). */
export interface SafetensorsHeader {
  path: string;
  tensors: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

/** Where loaded tensors go, and which to load. */
export interface LoadOptions {
  /** Default 'cpu'. F64 tensors become float32 on a device that holds no float64 (all but the CPU). */
  device?: Device;
  /** Loads only the tensors for which this returns true (the whole header is still checked). */
  filter?: (name: string) => boolean;
}

/** What to write besides the tensors, and in which float format. */
export interface SaveOptions {
  /** String key/value pairs stored under `__metadata__`. */
  metadata?: Record<string, string>;
  /**
   * On-disk format of float tensors (float32 and float64), rounded to nearest even.
   * Default: float32 as F32 and float64 as F64. int32 tensors are always I32.
   */
  dtype?: SafetensorsFloatDType;
}

/** `safetensors: <file>: [tensor '<name>': ]<message>`. */
function formatError(path: string, message: string, name?: string, cause?: unknown): Error {
  const where = name === undefined ? '' : `tensor '${name}': `;
  return new Error(`safetensors: ${path}: ${where}${message}`, cause === undefined ? undefined : { cause });
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The deepest nesting of arrays and objects in JSON text (strings skipped), stopping as soon as
 * it passes `limit`; a linear scan with no recursion, so a hostile header cannot exhaust the stack.
 */
function jsonDepth(text: string, limit: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      depth++;
      if (depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return deepest;
}

function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegativeInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

// ---- half and bfloat16 ----------------------------------------------------------------------

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Float32 bit pattern of an IEEE binary16 bit pattern: exact, keeps subnormals, inf, nan payloads. */
function float16BitsToFloat32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0; // inf, nan
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0; // 112 = 127 - 15
  if (mantissa === 0) return sign >>> 0; // +-0
  // subnormal: mantissa * 2^-24 = 1.f * 2^(k - 24), k the top set bit of the mantissa
  const k = 31 - Math.clz32(mantissa);
  return (sign | ((k + 103) << 23) | ((mantissa << (23 - k)) & 0x7fffff)) >>> 0;
}

let float16Table: Uint32Array | undefined;

/** Float32 bits of all 65536 half values, built on first use (256 KiB). */
function float16ToFloat32Table(): Uint32Array {
  if (!float16Table) {
    float16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) float16Table[h] = float16BitsToFloat32Bits(h);
  }
  return float16Table;
}

/** Binary16 bits nearest (ties to even) to the float32 with bits `f`; overflow gives inf. */
function float32BitsToFloat16Bits(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const exponent = (f >>> 23) & 0xff;
  const mantissa = f & 0x7fffff;
  if (exponent === 0xff) {
    if (mantissa === 0) return sign | 0x7c00;
    return sign | 0x7c00 | (mantissa >>> 13) | 0x200; // nan stays nan (quiet bit set)
  }
  const e = exponent - 127;
  if (e > 15) return sign | 0x7c00;
  if (e >= -14) {
    // normal half: keep 10 of 23 mantissa bits; a carry may step into the exponent (or to inf)
    let h = ((e + 15) << 10) | (mantissa >>> 13);
    const rest = mantissa & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
    return sign | h;
  }
  if (exponent === 0) return sign; // float32 subnormals are far below half's smallest subnormal
  // subnormal half, in units of 2^-24: (1.mantissa * 2^e) / 2^-24 = full >> (-e - 1)
  const shift = -e - 1;
  if (shift > 24) return sign;
  const full = mantissa | 0x800000;
  let h = full >>> shift;
  const rest = full & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (rest > halfway || (rest === halfway && (h & 1) === 1)) h++;
  return sign | h;
}

/** Bfloat16 bits nearest (ties to even) to the float32 with bits `f`; overflow gives inf. */
function float32BitsToBfloat16Bits(f: number): number {
  if ((f & 0x7fffffff) > 0x7f800000) return ((f >>> 16) | 0x40) & 0xffff; // nan stays nan
  return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Float32 bits of `x` rounded to odd: exact when representable, otherwise the one of the two
 * neighbouring float32 values whose last mantissa bit is 1. Rounding that to a format with at
 * least 2 fewer bits is correctly rounded, so float64 -> half / bfloat16 avoids double rounding.
 */
function float64ToFloat32BitsRoundToOdd(x: number): number {
  scratchF32[0] = x; // round to nearest even
  let bits = scratchU32[0];
  const rounded = scratchF32[0];
  if (rounded !== x && Number.isFinite(rounded) && (bits & 1) === 0) {
    bits = Math.abs(rounded) > Math.abs(x) ? bits - 1 : bits + 1; // bit patterns order magnitudes
  }
  return bits >>> 0;
}

/** The value of an IEEE binary16 (half) bit pattern. */
export function float16ToNumber(bits: number): number {
  scratchU32[0] = float16BitsToFloat32Bits(bits & 0xffff);
  return scratchF32[0];
}

/** The value of a bfloat16 bit pattern (the high 16 bits of a float32). */
export function bfloat16ToNumber(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0];
}

/** The binary16 bit pattern nearest to `x` (ties to even, overflow to inf). */
export function numberToFloat16(x: number): number {
  return float32BitsToFloat16Bits(float64ToFloat32BitsRoundToOdd(x));
}

/** The bfloat16 bit pattern nearest to `x` (ties to even, overflow to inf). */
export function numberToBfloat16(x: number): number {
  return float32BitsToBfloat16Bits(float64ToFloat32BitsRoundToOdd(x));
}

// ---- byte order --------------------------------------------------------------------------------

/** Reverses each `size`-byte group of `bytes` in place: file order <-> host order on big-endian hosts. */
function toHostOrder(bytes: Uint8Array, size: number): void {
  if (HOST_IS_LITTLE_ENDIAN || size === 1) return;
  for (let i = 0; i + size <= bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

function bytesOf(a: TypedArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function newTypedArray(dtype: DType, length: number): TypedArray {
  if (dtype === 'float64') return new Float64Array(length);
  if (dtype === 'int32') return new Int32Array(length);
  return new Float32Array(length);
}

// ---- file I/O --------------------------------------------------------------------------------

async function openForReading(path: string): Promise<FileHandle> {
  try {
    return await fsp.open(path, 'r');
  } catch (err) {
    throw formatError(path, `cannot open: ${messageOf(err)}`, undefined, err);
  }
}

/** Fills `target` from `position`; a short file is an error naming what was being read. */
async function readExactly(fh: FileHandle, target: Uint8Array, position: number, path: string, what: string, name?: string): Promise<void> {
  let done = 0;
  while (done < target.length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(target, done, target.length - done, position + done));
    } catch (err) {
      throw formatError(path, `reading ${what} failed: ${messageOf(err)}`, name, err);
    }
    if (bytesRead === 0) {
      throw formatError(path, `file ends at byte ${position + done} while reading ${what} (bytes ${position}..${position + target.length})`, name);
    }
    done += bytesRead;
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

// ---- reading the header ----------------------------------------------------------------------

/** Checks one header entry and returns it with offsets relative to the data section. */
function parseEntry(path: string, name: string, raw: unknown): SafetensorsEntry {
  if (!isJsonObject(raw)) throw formatError(path, 'entry is not an object {dtype, shape, data_offsets}', name);
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== 'string') throw formatError(path, `dtype is ${JSON.stringify(dtype) ?? 'missing'}, not a string`, name);
  if (!isSafetensorsDType(dtype)) throw formatError(path, `unknown dtype '${dtype}'`, name);
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
    throw formatError(path, `shape ${JSON.stringify(shape) ?? 'missing'} is not an array of non-negative integers`, name);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger)) {
    throw formatError(path, `data_offsets ${JSON.stringify(offsets) ?? 'missing'} is not [begin, end] with non-negative integers`, name);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw formatError(path, `data_offsets [${begin}, ${end}]: begin is after end`, name);
  return { dtype, shape: [...shape] as number[], begin, end };
}

function parseMetadata(path: string, raw: unknown): Record<string, string> {
  if (!isJsonObject(raw)) throw formatError(path, `${METADATA_KEY} is not an object of strings`);
  const pairs: [string, string][] = [];
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== 'string') throw formatError(path, `${METADATA_KEY} entry '${key}' is ${JSON.stringify(value)}, not a string`);
    pairs.push([key, value]);
  }
  return Object.fromEntries(pairs);
}

/**
 * Checks every entry against the data section of `dataLength` bytes: in bounds, the right
 * byte length for its shape and dtype, and all of them tiling [0, dataLength) exactly.
 * Returns the entries sorted by offset.
 */
function checkLayout(path: string, entries: [string, SafetensorsEntry][], dataLength: number): [string, SafetensorsEntry][] {
  for (const [name, e] of entries) {
    if (e.end > dataLength) {
      throw formatError(path, `data_offsets [${e.begin}, ${e.end}] end beyond the data section (${dataLength} bytes)`, name);
    }
    const needed = elementCount(e.shape) * DTYPE_BYTES[e.dtype];
    if (e.end - e.begin !== needed) {
      throw formatError(path, `holds ${e.end - e.begin} bytes but shape [${e.shape.join(',')}] of ${e.dtype} needs ${needed}`, name);
    }
  }
  const sorted = [...entries].sort(([na, a], [nb, b]) => a.begin - b.begin || a.end - b.end || (na < nb ? -1 : na > nb ? 1 : 0));
  let covered = 0;
  let previous: string | undefined;
  for (const [name, e] of sorted) {
    if (e.begin < covered) {
      throw formatError(path, `bytes [${e.begin}, ${e.end}) overlap tensor '${previous}' (which ends at ${covered})`, name);
    }
    if (e.begin > covered) {
      const after = previous === undefined ? 'at the start of the data section' : `after tensor '${previous}'`;
      throw formatError(path, `starts at byte ${e.begin}, leaving bytes [${covered}, ${e.begin}) ${after} unused (the data section must have no holes)`, name);
    }
    covered = e.end;
    previous = name;
  }
  if (covered !== dataLength) {
    const after = previous === undefined ? 'but the header lists no tensors' : `after the last tensor '${previous}'`;
    throw formatError(path, `the data section has ${dataLength - covered} unused bytes at its end, ${after}`);
  }
  return sorted;
}

async function readHeaderFrom(fh: FileHandle, path: string): Promise<SafetensorsHeader> {
  let size: number;
  try {
    size = (await fh.stat()).size;
  } catch (err) {
    throw formatError(path, `cannot stat: ${messageOf(err)}`, undefined, err);
  }
  if (size < 8) throw formatError(path, `file is ${size} bytes, shorter than the 8-byte header length`);
  const prefix = new Uint8Array(8);
  await readExactly(fh, prefix, 0, path, 'the header length');
  const declared = new DataView(prefix.buffer).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw formatError(path, `header length ${declared} is larger than the limit of ${MAX_HEADER_BYTES} bytes`);
  }
  const headerLength = Number(declared);
  if (8 + headerLength > size) {
    throw formatError(path, `header length ${headerLength} runs past the end of the file (${size} bytes)`);
  }
  const headerBytes = new Uint8Array(headerLength);
  await readExactly(fh, headerBytes, 8, path, 'the header');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    throw formatError(path, 'header is not valid UTF-8');
  }
  if (jsonDepth(text, MAX_HEADER_DEPTH) > MAX_HEADER_DEPTH) {
    throw formatError(path, `header nests JSON more than ${MAX_HEADER_DEPTH} levels deep (a valid header nests 3)`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw formatError(path, `header is not valid JSON (${messageOf(err)})`);
  }
  if (!isJsonObject(json)) throw formatError(path, 'header is not a JSON object');

  let metadata: Record<string, string> = {};
  const entries: [string, SafetensorsEntry][] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === METADATA_KEY) metadata = parseMetadata(path, raw);
    else entries.push([name, parseEntry(path, name, raw)]);
  }
  const dataStart = 8 + headerLength;
  const sorted = checkLayout(path, entries, size - dataStart);
  const tensors = new Map<string, SafetensorsEntry>();
  for (const [name, e] of sorted) tensors.set(name, { ...e, begin: dataStart + e.begin, end: dataStart + e.end });
  return { path, tensors, metadata };
}

/**
 * Reads and checks the header of a safetensors file (and nothing else of it): every tensor's
 * dtype, shape and absolute byte range [begin, end) in file order, and the `__metadata__` strings.
 * Throws, naming the file and tensor, when the file is malformed.
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const fh = await openForReading(path);
  try {
    return await readHeaderFrom(fh, path);
  } finally {
    await fh.close();
  }
}

// ---- decoding tensor data ------------------------------------------------------------------------

/** Called by a decoder with a value the target dtype cannot hold; throws. */
type RejectValue = (index: number, value: bigint | number, why: string) => never;

/**
 * Turns a file dtype into a tensor dtype. `direct` decoders have the same layout in memory as
 * on disk, so bytes are read straight into the result; the others convert `count` elements of
 * `src` (host byte order) into `out` from index `outStart`.
 */
interface Decoder {
  readonly dtype: DType;
  readonly direct: boolean;
  decode(src: ArrayBuffer, count: number, out: TypedArray, outStart: number, reject: RejectValue): void;
}

const INT32_MAX = 0x7fffffff;

function direct(dtype: DType): Decoder {
  return { dtype, direct: true, decode: () => undefined };
}

function widenToInt32(view: (src: ArrayBuffer, count: number) => Uint8Array | Int8Array | Int16Array | Uint16Array, bool = false): Decoder {
  return {
    dtype: 'int32',
    direct: false,
    decode(src, count, out, outStart) {
      const values = view(src, count);
      if (bool) for (let i = 0; i < count; i++) out[outStart + i] = values[i] === 0 ? 0 : 1;
      else out.set(values, outStart);
    },
  };
}

const DECODERS: Partial<Record<SafetensorsDType, Decoder>> = {
  F32: direct('float32'),
  I32: direct('int32'),
  F16: {
    dtype: 'float32',
    direct: false,
    decode(src, count, out, outStart) {
      const halves = new Uint16Array(src, 0, count);
      const bits = new Uint32Array(out.buffer, out.byteOffset + outStart * 4, count);
      const table = float16ToFloat32Table();
      for (let i = 0; i < count; i++) bits[i] = table[halves[i]];
    },
  },
  BF16: {
    dtype: 'float32',
    direct: false,
    decode(src, count, out, outStart) {
      const halves = new Uint16Array(src, 0, count);
      const bits = new Uint32Array(out.buffer, out.byteOffset + outStart * 4, count);
      for (let i = 0; i < count; i++) bits[i] = halves[i] << 16;
    },
  },
  I64: {
    dtype: 'int32',
    direct: false,
    decode(src, count, out, outStart, reject) {
      const words = new Int32Array(src, 0, 2 * count);
      for (let i = 0; i < count; i++) {
        const low = words[2 * i];
        if (words[2 * i + 1] !== (low < 0 ? -1 : 0)) reject(outStart + i, new BigInt64Array(src, 8 * i, 1)[0], 'does not fit in int32');
        out[outStart + i] = low;
      }
    },
  },
  U64: {
    dtype: 'int32',
    direct: false,
    decode(src, count, out, outStart, reject) {
      const words = new Uint32Array(src, 0, 2 * count);
      for (let i = 0; i < count; i++) {
        const low = words[2 * i];
        if (words[2 * i + 1] !== 0 || low > INT32_MAX) reject(outStart + i, new BigUint64Array(src, 8 * i, 1)[0], 'does not fit in int32');
        out[outStart + i] = low;
      }
    },
  },
  U32: {
    dtype: 'int32',
    direct: false,
    decode(src, count, out, outStart, reject) {
      const values = new Uint32Array(src, 0, count);
      for (let i = 0; i < count; i++) {
        if (values[i] > INT32_MAX) reject(outStart + i, values[i], 'does not fit in int32');
        out[outStart + i] = values[i];
      }
    },
  },
  BOOL: widenToInt32((src, n) => new Uint8Array(src, 0, n), true),
  U8: widenToInt32((src, n) => new Uint8Array(src, 0, n)),
  I8: widenToInt32((src, n) => new Int8Array(src, 0, n)),
  I16: widenToInt32((src, n) => new Int16Array(src, 0, n)),
  U16: widenToInt32((src, n) => new Uint16Array(src, 0, n)),
};

/** F64 is float64 where the device holds it (the CPU); elsewhere it is rounded to float32. */
const F64_AS_FLOAT32: Decoder = {
  dtype: 'float32',
  direct: false,
  decode(src, count, out, outStart) {
    out.set(new Float64Array(src, 0, count), outStart);
  },
};

function decoderFor(path: string, name: string, dtype: SafetensorsDType, device: Device): Decoder {
  if (dtype === 'F64') return getBackend(device).capabilities.dtypes.includes('float64') ? direct('float64') : F64_AS_FLOAT32;
  const decoder = DECODERS[dtype];
  if (!decoder) throw formatError(path, `dtype ${dtype} cannot be loaded (supported: F32, F16, BF16, F64, I64, I32, U32, U64, I16, U16, I8, U8, BOOL)`, name);
  return decoder;
}

/** Reads one tensor's bytes (in chunks) and converts them; the result lives on `device`. */
async function readTensor(fh: FileHandle, path: string, name: string, entry: SafetensorsEntry, device: Device): Promise<Tensor> {
  const backend = getBackend(device);
  const decoder = decoderFor(path, name, entry.dtype, device);
  const elementBytes = DTYPE_BYTES[entry.dtype];
  const count = elementCount(entry.shape);
  const out = newTypedArray(decoder.dtype, count);
  const what = `its ${entry.dtype} data`;
  if (decoder.direct) {
    const bytes = bytesOf(out);
    for (let at = 0; at < bytes.length; at += CHUNK_BYTES) {
      await readExactly(fh, bytes.subarray(at, Math.min(at + CHUNK_BYTES, bytes.length)), entry.begin + at, path, what, name);
    }
    toHostOrder(bytes, elementBytes);
  } else if (count > 0) {
    const chunkElements = Math.max(1, Math.floor(CHUNK_BYTES / elementBytes));
    const scratch = new ArrayBuffer(Math.min(count, chunkElements) * elementBytes);
    const reject: RejectValue = (index, value, why) => {
      throw formatError(path, `${entry.dtype} value ${value} at flat index ${index} ${why}`, name);
    };
    for (let start = 0; start < count; start += chunkElements) {
      const n = Math.min(chunkElements, count - start);
      const chunk = new Uint8Array(scratch, 0, n * elementBytes);
      await readExactly(fh, chunk, entry.begin + start * elementBytes, path, what, name);
      toHostOrder(chunk, elementBytes);
      decoder.decode(scratch, n, out, start, reject);
    }
  }
  return new Tensor(backend.upload(out, decoder.dtype), entry.shape);
}

async function* tensorsOf(fh: FileHandle, header: SafetensorsHeader, device: Device, wanted: (name: string) => boolean): AsyncGenerator<[string, Tensor]> {
  for (const [name, entry] of header.tensors) {
    if (wanted(name)) yield [name, await readTensor(fh, header.path, name, entry, device)];
  }
}

/**
 * Yields the tensors of a safetensors file one at a time, in file order, reading each one's
 * bytes only when it is asked for, so a loader can move it to the GPU and drop it before the
 * next. Dtypes on load: F32, F16, BF16 -> float32; F64 -> float64 (float32 on webgpu);
 * I32, and I64 / U64 / U32 / I16 / U16 / I8 / U8 / BOOL whose values fit -> int32.
 * The header is checked completely before the first tensor is yielded.
 */
export async function* streamSafetensors(path: string, opts: LoadOptions = {}): AsyncGenerator<[string, Tensor]> {
  const fh = await openForReading(path);
  try {
    const header = await readHeaderFrom(fh, path);
    yield* tensorsOf(fh, header, opts.device ?? 'cpu', opts.filter ?? (() => true));
  } finally {
    await fh.close();
  }
}

/** Disposes what was gathered so far when `source` fails, so a failed load leaks nothing. */
async function collect(source: AsyncIterable<[string, Tensor]>): Promise<Map<string, Tensor>> {
  const out = new Map<string, Tensor>();
  try {
    for await (const [name, t] of source) out.set(name, t);
  } catch (err) {
    for (const t of out.values()) t.dispose();
    throw err;
  }
  return out;
}

/**
 * Loads the tensors of a safetensors file (those passing `opts.filter`), in file order.
 * See `streamSafetensors` for the dtype conversions; it loads one tensor at a time.
 */
export async function loadSafetensors(path: string, opts: LoadOptions = {}): Promise<Map<string, Tensor>> {
  return collect(streamSafetensors(path, opts));
}

// ---- sharded checkpoints -------------------------------------------------------------------------

/** The index file Hugging Face writes beside sharded checkpoints. */
export const SHARD_INDEX_FILE = 'model.safetensors.index.json';

/** A checked `model.safetensors.index.json`: each tensor's shard, as a path beside the index. */
export interface ShardIndex {
  path: string;
  /** tensor name -> shard file path (resolved against the index's folder). */
  weightMap: Map<string, string>;
  metadata: Record<string, unknown>;
}

/** Reads an index (given as its path, or the folder holding `model.safetensors.index.json`). */
export async function readShardIndex(indexPathOrDir: string): Promise<ShardIndex> {
  let path = indexPathOrDir;
  try {
    if ((await fsp.stat(path)).isDirectory()) path = nodePath.join(path, SHARD_INDEX_FILE);
  } catch (err) {
    throw formatError(path, `cannot open: ${messageOf(err)}`, undefined, err);
  }
  let text: string;
  try {
    const size = (await fsp.stat(path)).size;
    if (size > MAX_HEADER_BYTES) throw new Error(`it is ${size} bytes, larger than the limit of ${MAX_HEADER_BYTES}`);
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    throw formatError(path, `cannot read the shard index: ${messageOf(err)}`, undefined, err);
  }
  if (jsonDepth(text, MAX_HEADER_DEPTH) > MAX_HEADER_DEPTH) {
    throw formatError(path, `shard index nests JSON more than ${MAX_HEADER_DEPTH} levels deep`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw formatError(path, `shard index is not valid JSON (${messageOf(err)})`);
  }
  if (!isJsonObject(json) || !isJsonObject(json.weight_map)) {
    throw formatError(path, 'shard index has no "weight_map" object');
  }
  const metadata = json.metadata === undefined ? {} : json.metadata;
  if (!isJsonObject(metadata)) throw formatError(path, 'shard index "metadata" is not an object');
  const dir = nodePath.dirname(path);
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(json.weight_map)) {
    const parts = typeof shard === 'string' ? shard.split(/[\\/]/) : [];
    if (typeof shard !== 'string' || shard === '' || nodePath.isAbsolute(shard) || parts.includes('..')) {
      throw formatError(path, `shard ${JSON.stringify(shard)} is not a file name beside the index`, name);
    }
    weightMap.set(name, nodePath.join(dir, shard));
  }
  return { path, weightMap, metadata: { ...metadata } };
}

/**
 * Yields the tensors of a sharded checkpoint one at a time, shard by shard. Each shard's
 * header is checked, and so is that every name the index assigns to it is in it.
 * Tensors a shard holds but the index does not assign to it are skipped.
 */
export async function* streamShardedSafetensors(indexPathOrDir: string, opts: LoadOptions = {}): AsyncGenerator<[string, Tensor]> {
  const index = await readShardIndex(indexPathOrDir);
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of index.weightMap) {
    const names = byShard.get(shard);
    if (names) names.push(name);
    else byShard.set(shard, [name]);
  }
  const filter = opts.filter ?? (() => true);
  for (const [shard, names] of [...byShard].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const fh = await openForReading(shard);
    try {
      const header = await readHeaderFrom(fh, shard);
      for (const name of names) {
        if (!header.tensors.has(name)) throw formatError(shard, `listed in ${index.path} but missing from this shard`, name);
      }
      const assigned = new Set(names);
      yield* tensorsOf(fh, header, opts.device ?? 'cpu', (name) => assigned.has(name) && filter(name));
    } finally {
      await fh.close();
    }
  }
}

/** Loads a sharded checkpoint through its index (path, or the folder holding it). */
export async function loadShardedSafetensors(indexPathOrDir: string, opts: LoadOptions = {}): Promise<Map<string, Tensor>> {
  return collect(streamShardedSafetensors(indexPathOrDir, opts));
}

// ---- writing ----------------------------------------------------------------------------------------

/** Writes `count` elements of `src` from `start` into `dst` (little-endian bytes). */
type Encoder = (src: TypedArray, start: number, count: number, dst: ArrayBuffer) => void;

const ENCODERS: Record<'F16' | 'BF16', Encoder> = {
  F16: (src, start, count, dst) => encodeHalves(src, start, count, dst, float32BitsToFloat16Bits),
  BF16: (src, start, count, dst) => encodeHalves(src, start, count, dst, float32BitsToBfloat16Bits),
};

function encodeHalves(src: TypedArray, start: number, count: number, dst: ArrayBuffer, fromFloat32Bits: (bits: number) => number): void {
  const halves = new Uint16Array(dst, 0, count);
  if (src instanceof Float32Array) {
    const bits = new Uint32Array(src.buffer, src.byteOffset + start * 4, count);
    for (let i = 0; i < count; i++) halves[i] = fromFloat32Bits(bits[i]);
  } else {
    for (let i = 0; i < count; i++) halves[i] = fromFloat32Bits(float64ToFloat32BitsRoundToOdd(src[start + i]));
  }
  toHostOrder(new Uint8Array(dst, 0, 2 * count), 2);
}

/** The on-disk dtype a tensor is written as: int32 as I32, floats as requested or as they are. */
function fileDTypeOf(t: Tensor, requested: SafetensorsFloatDType | undefined): SafetensorsDType {
  if (t.dtype === 'int32') return 'I32';
  if (requested) return requested;
  return t.dtype === 'float64' ? 'F64' : 'F32';
}

interface PlannedTensor {
  name: string;
  tensor: Tensor;
  dtype: SafetensorsDType;
  begin: number;
  end: number;
}

/** Streams one tensor's elements to the file at `position`, converting to `dtype`. */
async function writeTensorData(fh: FileHandle, data: TypedArray, dtype: SafetensorsDType, position: number): Promise<void> {
  const elementBytes = DTYPE_BYTES[dtype];
  const chunkElements = Math.floor(CHUNK_BYTES / elementBytes);
  const converted = dtype === 'F16' || dtype === 'BF16';
  if (!converted && dtype === 'F32' && !(data instanceof Float32Array)) data = Float32Array.from(data); // float64 saved as F32
  if (!converted && HOST_IS_LITTLE_ENDIAN) {
    const bytes = bytesOf(data);
    for (let at = 0; at < bytes.length; at += CHUNK_BYTES) await writeAll(fh, bytes.subarray(at, at + CHUNK_BYTES), position + at);
    return;
  }
  const scratch = new ArrayBuffer(Math.min(data.length, chunkElements) * elementBytes);
  for (let start = 0; start < data.length; start += chunkElements) {
    const n = Math.min(chunkElements, data.length - start);
    const chunk = new Uint8Array(scratch, 0, n * elementBytes);
    if (converted) ENCODERS[dtype](data, start, n, scratch);
    else {
      chunk.set(new Uint8Array(data.buffer, data.byteOffset + start * elementBytes, n * elementBytes));
      toHostOrder(chunk, elementBytes);
    }
    await writeAll(fh, chunk, position + start * elementBytes);
  }
}

/** The header JSON: `__metadata__` first, then tensors by name, padded with spaces to 8 bytes. */
function headerBytes(plan: PlannedTensor[], metadata: Record<string, string> | undefined): Uint8Array {
  const fields: string[] = [];
  const metaKeys = metadata ? Object.keys(metadata).sort() : [];
  if (metadata && metaKeys.length > 0) {
    fields.push(`"${METADATA_KEY}":{${metaKeys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(',')}}`);
  }
  for (const p of [...plan].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const entry = { dtype: p.dtype, shape: p.tensor.shape, data_offsets: [p.begin, p.end] };
    fields.push(`${JSON.stringify(p.name)}:${JSON.stringify(entry)}`);
  }
  const json = new TextEncoder().encode(`{${fields.join(',')}}`);
  const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
  padded.set(json);
  return padded;
}

/**
 * Writes tensors (any device, views fine) to a safetensors file: the header (names sorted,
 * padded with spaces so the data starts 8-byte aligned), then the data, largest elements
 * first so every tensor is aligned to its element size, each tensor read with `data()` and
 * written before the next is read. float32 -> F32 (or `opts.dtype`), float64 -> F64 (or
 * `opts.dtype`), int32 -> I32. Atomic: the file is written beside `path` under a temporary
 * name and renamed over it when complete; on any error the temporary file is removed and a
 * previous file at `path` is left as it was.
 */
export async function saveSafetensors(
  path: string,
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  opts: SaveOptions = {},
): Promise<void> {
  const named: [string, Tensor][] = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  if (opts.dtype !== undefined && opts.dtype !== 'F32' && opts.dtype !== 'F16' && opts.dtype !== 'BF16') {
    throw formatError(path, `cannot save floats as ${String(opts.dtype)} (choose F32, F16 or BF16)`);
  }
  for (const [key, value] of Object.entries(opts.metadata ?? {})) {
    if (typeof value !== 'string') throw formatError(path, `metadata '${key}' is ${typeof value}, not a string`);
  }
  const plan: PlannedTensor[] = [];
  for (const [name, tensor] of named) {
    if (name === METADATA_KEY) throw formatError(path, `the name ${METADATA_KEY} is reserved for metadata`, name);
    if (!(tensor instanceof Tensor)) throw formatError(path, 'is not a Tensor', name);
    plan.push({ name, tensor, dtype: fileDTypeOf(tensor, opts.dtype), begin: 0, end: 0 });
  }
  plan.sort((a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let offset = 0;
  for (const p of plan) {
    p.begin = offset;
    offset = p.end = offset + p.tensor.size * DTYPE_BYTES[p.dtype];
  }
  const header = headerBytes(plan, opts.metadata);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(header.length), true);

  const tempPath = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fh: FileHandle | undefined;
  try {
    try {
      fh = await fsp.open(tempPath, 'wx');
      await writeAll(fh, prefix, 0);
      await writeAll(fh, header, 8);
    } catch (err) {
      throw formatError(path, `writing ${tempPath} failed: ${messageOf(err)}`, undefined, err);
    }
    const dataStart = 8 + header.length;
    for (const p of plan) {
      let data: TypedArray;
      try {
        data = await p.tensor.data();
      } catch (err) {
        throw formatError(path, `reading its data failed: ${messageOf(err)}`, p.name, err);
      }
      if (data.length !== p.tensor.size) throw formatError(path, `data() gave ${data.length} elements for shape [${p.tensor.shape.join(',')}]`, p.name);
      try {
        await writeTensorData(fh, data, p.dtype, dataStart + p.begin);
      } catch (err) {
        throw formatError(path, `writing its data failed: ${messageOf(err)}`, p.name, err);
      }
    }
    try {
      await fh.sync();
      await fh.close();
      fh = undefined;
      await fsp.rename(tempPath, path);
    } catch (err) {
      throw formatError(path, `finishing the file failed: ${messageOf(err)}`, undefined, err);
    }
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await fsp.rm(tempPath, { force: true }).catch(() => undefined);
    throw err;
  }
}
