/** The wasm backend: open (heap, threads, feature probe), close, describe. */
import { hasBackend, registerBackend, unregisterBackend } from '../../tensor/backend.js';
import { wasmBackend } from './backend.js';
import { availableParallelism } from 'node:os';
import { closeRuntime, openRuntime, probeFeatures, runtime, type WasmFeatures } from './runtime.js';

export interface WasmInfo extends WasmFeatures {
  threads: number;
}

/** Opens the wasm device and registers its backend. Safe to call more than once. */
export async function initWasm(): Promise<WasmInfo> {
  const r = openRuntime();
  if (!hasBackend('wasm')) registerBackend(wasmBackend);
  return { ...r.features, threads: r.pool.threads };
}

/** Ends the worker threads and drops the memory; live wasm tensors become unusable. */
export function shutdownWasm(): void {
  unregisterBackend('wasm');
  closeRuntime();
}

/**
 * What the wasm backend would run with here, without opening it (no memory, no threads): for
 * `uhd info`, which should not start what it only reports.
 */
export function wasmSummary(): string {
  const f = probeFeatures();
  const threads = process.env.UHD_WASM_THREADS ? Number(process.env.UHD_WASM_THREADS) : availableParallelism();
  const relaxed = f.relaxedSimd ? `relaxed-SIMD FMA (${f.relaxedVia === 'flag' ? "V8's --experimental-wasm-relaxed-simd, set at open" : 'native'})` : 'no relaxed SIMD';
  return `WebAssembly SIMD kernels generated at run time, ${threads} thread${threads > 1 ? 's' : ''}, ${relaxed} (dtypes float32, int32; synchronous read-back)`;
}

export function wasmInfo(): WasmInfo {
  const r = runtime();
  return { ...r.features, threads: r.pool.threads };
}

export { wasmBackend } from './backend.js';
