/**
 * WebGPU device bootstrap through Dawn (the `webgpu` npm package). Adapters are probed in
 * order: the native backend (Vulkan on Linux) at core feature level, then Dawn's OpenGL ES
 * and OpenGL backends at compatibility level (Mesa llvmpipe on a machine without a GPU).
 * The adapter's real limits are requested: the defaults are far lower.
 */
import { closeSync, constants, existsSync, fstatSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface AdapterChoice {
  backend: string;
  featureLevel: 'core' | 'compatibility';
}

export interface GpuInfo {
  /** The Dawn backend option that produced the adapter. */
  backend: string;
  featureLevel: string;
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** What was tried before, with why it failed. */
  tried: string[];
  /** Features the device was opened with (those of WANTED_FEATURES the adapter offers). */
  features: string[];
  /** Every feature the adapter offers. */
  adapterFeatures: string[];
  limits: Record<string, number>;
  /** Dawn toggles the instance was created with (`enable-dawn-features=...`), if any. */
  toggles: string[];
  /** Features opened beyond the standard wanted ones (experimental, e.g. subgroup matrices). */
  experimental: string[];
}

/**
 * What Dawn is asked beyond the defaults: toggles for its instance (the names of Dawn's
 * Toggles.cpp, e.g. 'allow_unsafe_apis'), and extra features to request where the adapter
 * offers them (e.g. 'chromium-experimental-subgroup-matrix', which needs allow_unsafe_apis).
 */
export interface DawnOptions {
  enableToggles?: readonly string[];
  disableToggles?: readonly string[];
  features?: readonly string[];
}

export const PROBE_ORDER: readonly AdapterChoice[] = [
  { backend: 'vulkan', featureLevel: 'core' },
  { backend: 'opengles', featureLevel: 'compatibility' },
  { backend: 'opengl', featureLevel: 'compatibility' },
];

/** Limits worth asking for in full (the rest keep their defaults). */
const WANTED_LIMITS = [
  'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ', 'maxComputeWorkgroupStorageSize', 'maxComputeWorkgroupsPerDimension',
  'maxStorageBufferBindingSize', 'maxBufferSize', 'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize', 'maxBindGroups',
] as const;

const WANTED_FEATURES = ['shader-f16', 'timestamp-query', 'subgroups'];

interface DawnModule {
  create(options: string[]): GPU;
  globals: Record<string, unknown>;
}

let dawn: DawnModule | null = null;

/**
 * One Dawn instance per backend, alive until the process exits. dawn.node's AsyncRunner (held by
 * every adapter, device and pending promise) keeps a raw pointer to the instance that the `GPU`
 * object owns; once that object is garbage-collected, the next `setImmediate` poll calls
 * ProcessEvents on freed memory: the segfaults and `pthread_mutex_lock` assertions seen at exit
 * after `shutdown()` dropped the last reference. Kept on globalThis so that a module graph
 * evaluated twice in one process (test runners) shares them too.
 */
const INSTANCES_KEY = Symbol.for('uhd.dawn.instances');
function instanceFor(create: DawnModule['create'], backend: string, toggles: readonly string[]): GPU {
  const g = globalThis as { [INSTANCES_KEY]?: Map<string, GPU> };
  const instances = (g[INSTANCES_KEY] ??= new Map<string, GPU>());
  const flags = [`backend=${backend}`, ...toggles];
  const key = flags.join(' '); // one instance per backend and set of toggles
  let gpu = instances.get(key);
  if (!gpu) instances.set(key, (gpu = create(flags)));
  return gpu;
}

/** Dawn's notice on clamping the adapter's dynamic-buffer limits (Limits.cpp), printed on every adapter enumeration; we use no dynamic offsets. */
const DAWN_LIMIT_NOTICE = /^Warning: maxDynamic(?:Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/;

/**
 * Runs `fn` with file descriptor 2 pointed at a temporary file, then puts it back and forwards
 * what native code wrote there, less Dawn's limit notices (written by C++ straight to fd 2, where
 * no JS hook sees them). Only on Linux, when stderr is a terminal or a pipe with nothing queued
 * (a regular file may share its offset with stdout, which a reopened descriptor would not), and
 * never with UHD_DAWN_NOTICES=1; otherwise `fn` runs as it is.
 */
async function filteringDawnNotices<T>(fn: () => Promise<T>): Promise<T> {
  const restore = process.env.UHD_DAWN_NOTICES === '1' ? null : redirectStderr();
  if (!restore) return fn();
  try {
    return await fn();
  } finally {
    restore();
  }
}

function redirectStderr(): (() => void) | null {
  if (process.platform !== 'linux' || process.stderr.writableLength > 0) return null;
  let saved = -1;
  try {
    const st = fstatSync(2);
    if (!(st.isCharacterDevice() || st.isFIFO())) return null;
    fstatSync(0);
    fstatSync(1); // 0 and 1 open: the next open() returns 2
    saved = openSync('/proc/self/fd/2', constants.O_WRONLY | constants.O_NOCTTY);
  } catch {
    if (saved >= 0) closeSync(saved);
    return null;
  }
  const sink = join(tmpdir(), `uhd-dawn-stderr-${process.pid}-${Date.now()}.log`);
  const reopen = (): void => {
    const fd = openSync(`/proc/self/fd/${saved}`, constants.O_WRONLY | constants.O_NOCTTY);
    if (fd !== 2) closeSync(fd);
  };
  closeSync(2);
  let sinkFd: number;
  try {
    sinkFd = openSync(sink, 'w+');
  } catch {
    reopen();
    closeSync(saved);
    return null;
  }
  if (sinkFd !== 2) {
    // someone took fd 2 in between: give up filtering
    closeSync(sinkFd);
    rmSync(sink, { force: true });
    reopen();
    closeSync(saved);
    return null;
  }
  return () => {
    closeSync(2);
    reopen();
    closeSync(saved);
    const text = readFileSync(sink, 'utf8');
    rmSync(sink, { force: true });
    const rest = text.split('\n').filter((l, i, all) => !DAWN_LIMIT_NOTICE.test(l) && !(i === all.length - 1 && l === ''));
    if (rest.length) writeSync(2, rest.join('\n') + '\n');
  };
}

function loadDawn(): DawnModule {
  if (!dawn) {
    // Mesa's EGL needs a platform when there is no display; set it before Dawn loads.
    process.env.EGL_PLATFORM ??= 'surfaceless';
    const require = createRequire(import.meta.url);
    dawn = require('webgpu') as DawnModule;
    // The WebGPU enums (GPUBufferUsage, GPUMapMode, ...) as globals, as in a browser.
    for (const [k, v] of Object.entries(dawn.globals)) {
      if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
    }
  }
  return dawn;
}

/** Whether the Vulkan loader can be found (probing without it only prints Dawn warnings). */
function vulkanLoaderPresent(): boolean {
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu',
    '/lib64', '/usr/local/lib',
  ];
  return process.platform !== 'linux' || dirs.some((d) => existsSync(`${d}/libvulkan.so.1`));
}

export interface OpenedDevice {
  gpu: GPU;
  adapter: GPUAdapter;
  device: GPUDevice;
  info: GpuInfo;
}

/** Opens the first adapter that works among `order`; throws listing every attempt. */
export function openDevice(order: readonly AdapterChoice[] = PROBE_ORDER, dawnOpts: DawnOptions = {}): Promise<OpenedDevice> {
  return filteringDawnNotices(() => probe(order, dawnOpts));
}

async function probe(order: readonly AdapterChoice[], dawnOpts: DawnOptions): Promise<OpenedDevice> {
  const { create } = loadDawn();
  const toggles: string[] = [];
  if (dawnOpts.enableToggles?.length) toggles.push(`enable-dawn-features=${dawnOpts.enableToggles.join(',')}`);
  if (dawnOpts.disableToggles?.length) toggles.push(`disable-dawn-features=${dawnOpts.disableToggles.join(',')}`);
  const extra = (dawnOpts.features ?? []).filter((f) => !WANTED_FEATURES.includes(f));
  const tried: string[] = [];
  for (const choice of order) {
    const label = `${choice.backend}/${choice.featureLevel}`;
    if (choice.backend === 'vulkan' && !vulkanLoaderPresent()) {
      tried.push(`${label}: libvulkan.so.1 not found`);
      continue;
    }
    let gpu: GPU | null = null;
    try {
      gpu = instanceFor(create, choice.backend, toggles);
      const adapter = await gpu.requestAdapter({ featureLevel: choice.featureLevel } as GPURequestAdapterOptions);
      if (!adapter) {
        tried.push(`${label}: no adapter`);
        continue;
      }
      const requiredLimits: Record<string, number> = {};
      for (const k of WANTED_LIMITS) {
        const v = (adapter.limits as unknown as Record<string, number>)[k];
        if (typeof v === 'number') requiredLimits[k] = v;
      }
      const requiredFeatures = [...WANTED_FEATURES, ...extra].filter((f) => adapter.features.has(f)) as GPUFeatureName[];
      const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
      const limits: Record<string, number> = {};
      for (const k in device.limits) limits[k] = (device.limits as unknown as Record<string, number>)[k];
      const ai = adapter.info;
      return {
        gpu,
        adapter,
        device,
        info: {
          backend: choice.backend,
          featureLevel: choice.featureLevel,
          vendor: ai.vendor,
          architecture: ai.architecture,
          device: ai.device,
          description: ai.description,
          tried,
          features: [...device.features].sort(),
          adapterFeatures: [...adapter.features].sort(),
          limits,
          toggles: [...(dawnOpts.enableToggles ?? []), ...(dawnOpts.disableToggles ?? []).map((t) => `-${t}`)],
          experimental: extra.filter((f) => device.features.has(f)),
        },
      };
    } catch (e) {
      tried.push(`${label}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(`webgpu: no usable adapter. Tried:\n  ${tried.join('\n  ')}`);
}
