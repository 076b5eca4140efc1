/**
 * A browser-like `navigator.gpu` for the peers' WebGPU backends, on the same Dawn backend our
 * runtime chose (kernels/device.ts). Node has no `navigator` (before v21), and Dawn's OpenGL ES
 * adapter exists only at the compatibility feature level, which the peers do not ask for: so
 * `requestAdapter` is wrapped to ask for the feature level our runtime opened.
 */
import { createRequire } from 'node:module';
import type { GpuInfo } from '../../kernels/index.js';

interface DawnModule {
  create(options: string[]): GPU;
}

let installed: GPU | null = null;

/** Installs `globalThis.navigator = { gpu, userAgent }` once; returns the GPU object. */
export function installNavigatorGpu(info: GpuInfo): GPU {
  if (installed) return installed;
  process.env.EGL_PLATFORM ??= 'surfaceless';
  const dawn = createRequire(import.meta.url)('webgpu') as DawnModule;
  const gpu = dawn.create([`backend=${info.backend}`]);
  const requestAdapter = gpu.requestAdapter.bind(gpu);
  gpu.requestAdapter = (options?: GPURequestAdapterOptions) =>
    requestAdapter({ ...options, featureLevel: info.featureLevel } as GPURequestAdapterOptions);
  // jax-js reads navigator.userAgent (a Firefox check) when its WebGPU backend loads.
  Object.defineProperty(globalThis, 'navigator', {
    value: { gpu, userAgent: `Node.js ${process.version} (Dawn ${info.backend})` },
    configurable: true,
    writable: true,
  });
  installed = gpu;
  return gpu;
}
