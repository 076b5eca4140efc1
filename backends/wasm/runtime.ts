/**
 * The wasm backend's state once opened: the heap, the thread pool, the SIMD features the
 * probe found, and the argument block kernels read their parameters from.
 */
import { setFlagsFromString } from 'node:v8';
import { encodeModule, Func } from './emit.js';
import { closeHeap, currentHeap, MAX_PAGES, openHeap, type WasmHeap } from './memory.js';
import { ARGS_BYTES, ARGS_PTR, Pool } from './pool.js';

export interface WasmFeatures {
  /** f32x4.relaxed_madd validates (natively, or after enabling V8's flag). */
  relaxedSimd: boolean;
  /** How relaxed SIMD became available: 'native', 'flag' (Node 20's --experimental-wasm-relaxed-simd), or 'off'. */
  relaxedVia: 'native' | 'flag' | 'off';
}

/** A module using f32x4.relaxed_madd, to ask WebAssembly.validate whether this engine has it. */
function relaxedProbe(): Uint8Array {
  const f = new Func(['i32', 'i32', 'i32']);
  f.get(f.params[0]).get(f.params[0]).v128_load().f32x4(2).f32x4(1).f32x4_relaxed_madd().v128_store(0);
  return encodeModule({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES });
}

/** Probes relaxed SIMD; on Node 20 it validates only once V8's flag is set (set here, process-wide). UHD_WASM_RELAXED=0 turns it off. */
export function probeFeatures(): WasmFeatures {
  if (process.env.UHD_WASM_RELAXED === '0') return { relaxedSimd: false, relaxedVia: 'off' };
  const probe = relaxedProbe();
  if (WebAssembly.validate(probe)) return { relaxedSimd: true, relaxedVia: 'native' };
  try {
    setFlagsFromString('--experimental-wasm-relaxed-simd');
  } catch {
    return { relaxedSimd: false, relaxedVia: 'off' };
  }
  return WebAssembly.validate(probe) ? { relaxedSimd: true, relaxedVia: 'flag' } : { relaxedSimd: false, relaxedVia: 'off' };
}

export interface Runtime {
  heap: WasmHeap;
  pool: Pool;
  features: WasmFeatures;
  /** The argument block, as words (views over the first page, valid for the memory's life). */
  argsI32: Int32Array;
  argsF32: Float32Array;
}

let rt: Runtime | null = null;

export function openRuntime(): Runtime {
  if (rt) return rt;
  const features = probeFeatures();
  const heap = openHeap();
  const threads = process.env.UHD_WASM_THREADS ? Number(process.env.UHD_WASM_THREADS) : undefined;
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
    throw new Error(`UHD_WASM_THREADS: '${process.env.UHD_WASM_THREADS}' is not a positive integer`);
  }
  const argsI32 = new Int32Array(heap.buffer, ARGS_PTR, ARGS_BYTES / 4);
  rt = { heap, pool: new Pool(heap, threads), features, argsI32, argsF32: new Float32Array(argsI32.buffer, ARGS_PTR, ARGS_BYTES / 4) };
  return rt;
}

export function runtime(): Runtime {
  if (!rt) {
    currentHeap(); // throws the not-open error
    throw new Error('wasm: not open');
  }
  return rt;
}

export function closeRuntime(): void {
  rt?.pool.close();
  rt = null;
  closeHeap();
}

/**
 * The argument block: kernels read word i at `args + 4 i`. `i32(i, v)` and `f32(i, v)` write
 * word i; `ARGS_PTR` is the address passed to the kernel.
 */
export class Args {
  constructor(private readonly r: Runtime) {}
  i32(i: number, v: number): this {
    this.r.argsI32[i] = v;
    return this;
  }
  f32(i: number, v: number): this {
    this.r.argsF32[i] = v;
    return this;
  }
  /** Words i, i+1, ... from `values` (i32). */
  i32s(i: number, values: readonly number[]): this {
    for (let k = 0; k < values.length; k++) this.r.argsI32[i + k] = values[k];
    return this;
  }
}

export { ARGS_PTR };
