/** The wasm backend: open (heap, threads, feature probe), close, describe. */
import { hasBackend, registerBackend, unregisterBackend } from '../../tensor/backend.js';
import { wasmBackend } from './backend.js';
import { closeRuntime, openRuntime, runtime, type WasmFeatures } from './runtime.js';

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

export function wasmInfo(): WasmInfo {
  const r = runtime();
  return { ...r.features, threads: r.pool.threads };
}

export { wasmBackend } from './backend.js';
