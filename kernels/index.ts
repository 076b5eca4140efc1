/** The kernels layer: WebGPU device bootstrap, the runtime, and the WGSL kernel library. */
import { registerBackend, unregisterBackend } from '../tensor/backend.js';
import { webgpuBackend } from './backend.js';
import { PROBE_ORDER, type AdapterChoice, type DawnOptions, type GpuInfo } from './device.js';
import { createContext, ctx, destroyContext } from './runtime.js';

export interface InitOptions {
  /** Adapters to try, in order (default: Vulkan, then OpenGL ES, then OpenGL). */
  order?: readonly AdapterChoice[];
  /**
   * Dawn toggles and extra features (see DawnOptions), e.g. `{ enableToggles: ['allow_unsafe_apis'],
   * features: ['chromium-experimental-subgroup-matrix'] }`: experimental, reported in gpuInfo().
   * UHD_DAWN_TOGGLES=a,b and UHD_DAWN_FEATURES=c,d add to them.
   */
  dawn?: DawnOptions;
}

let initialising: Promise<GpuInfo> | null = null;

/** Opens the GPU device and registers the 'webgpu' backend. Safe to call more than once. */
export function initWebGPU(opts: InitOptions = {}): Promise<GpuInfo> {
  if (!initialising) {
    initialising = createContext(opts.order ?? envOrder() ?? PROBE_ORDER, dawnOptions(opts.dawn)).then((c) => {
      registerBackend(webgpuBackend);
      return c.info;
    });
    initialising.catch(() => (initialising = null));
  }
  return initialising;
}

/** opts.dawn plus UHD_DAWN_TOGGLES / UHD_DAWN_FEATURES (comma-separated). */
function dawnOptions(d: DawnOptions = {}): DawnOptions {
  const list = (v: string | undefined) => (v ? v.split(',').map((x) => x.trim()).filter(Boolean) : []);
  return {
    enableToggles: [...(d.enableToggles ?? []), ...list(process.env.UHD_DAWN_TOGGLES)],
    disableToggles: d.disableToggles ?? [],
    features: [...(d.features ?? []), ...list(process.env.UHD_DAWN_FEATURES)],
  };
}

/** UHD_WEBGPU_BACKEND=opengles (say) skips the probe and uses that backend. */
function envOrder(): AdapterChoice[] | null {
  const b = process.env.UHD_WEBGPU_BACKEND;
  if (!b) return null;
  return [{ backend: b, featureLevel: b.startsWith('opengl') ? 'compatibility' : 'core' }];
}

/** The adapter in use. */
export function gpuInfo(): GpuInfo {
  return ctx().info;
}

/** Destroys the device so that Node can exit. Live webgpu tensors become unusable. */
export function shutdown(): void {
  unregisterBackend('webgpu');
  destroyContext();
  initialising = null;
}

export { PROBE_ORDER, type AdapterChoice, type DawnOptions, type GpuInfo } from './device.js';
export { ctx as gpuContext } from './runtime.js';
