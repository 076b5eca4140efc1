/**
 * The backends beyond the CPU reference, one line each in `BACKENDS`: how to open and close
 * it. Adding a backend is its folder (implementing tensor/backend.ts's `Backend`, adding its
 * name to `DeviceNames` in tensor/device.ts by declaration merging, registering itself when
 * opened) and one line here; the table's type requires a line for every declared device.
 */
import { gpuInfo, initWebGPU, shutdown as shutdownWebGPU } from '../kernels/index.js';
import { getBackend, hasBackend, openDevices } from '../tensor/backend.js';
import { initWasm, shutdownWasm } from './wasm/index.js';
import type { Device } from '../tensor/device.js';
import { existsSync, readdirSync } from 'node:fs';

interface BackendEntry {
  /** Opens the device and registers its backend (safe to call when open). */
  open(): Promise<void>;
  /** Frees what it holds so that Node can exit; its live tensors become unusable. */
  close(): void;
  /** What it is, before opening (for `--help` and errors). */
  summary: string;
}

const BACKENDS: Record<Exclude<Device, 'cpu'>, BackendEntry> = {
  webgpu: { open: async () => void (await initWebGPU()), close: shutdownWebGPU, summary: 'WGSL kernels through Dawn (a GPU, or llvmpipe without one)' },
  wasm: { open: async () => void (await initWasm()), close: shutdownWasm, summary: 'WebAssembly SIMD kernels generated at run time, on every core' },
};

/** Every device name, the CPU reference first. */
export const DEVICES: readonly Device[] = ['cpu', ...(Object.keys(BACKENDS) as Exclude<Device, 'cpu'>[])];

export function isDevice(name: string): name is Device {
  return (DEVICES as readonly string[]).includes(name);
}

/** `name` as a Device, or an error naming `what` (a flag, a variable) and the choices. */
export function parseDevice(what: string, name: string, extra: readonly string[] = []): Device {
  if (!isDevice(name)) throw new Error(`${what}: '${name}' is not one of ${[...extra, ...DEVICES].join(', ')}`);
  return name;
}

/** Opens `device` (the CPU is always open). */
export async function openDevice(device: Device): Promise<void> {
  if (device === 'cpu' || hasBackend(device)) return;
  await BACKENDS[device].open();
}

/** Closes `device`, or every open device but the CPU. */
export function closeDevice(device?: Device): void {
  for (const d of device ? [device] : openDevices()) if (d !== 'cpu') BACKENDS[d].close();
}

/** One line per open device, from its capabilities. */
export function describeDevices(): string[] {
  return openDevices().map((d) => {
    const b = getBackend(d);
    return `${d}: ${b.capabilities.describe?.() ?? ''} (dtypes ${b.capabilities.dtypes.join(', ')}; ${b.capabilities.syncRead ? 'synchronous' : 'asynchronous'} read-back)`;
  });
}

/** On Linux, how many GPU device nodes exist (render nodes, NVIDIA's); null elsewhere (unknown: probe). */
function gpuDeviceNodes(): number | null {
  if (process.platform !== 'linux') return null;
  const list = (dir: string, re: RegExp) => (existsSync(dir) ? readdirSync(dir).filter((f) => re.test(f)).length : 0);
  return list('/dev/dri', /^renderD\d+$/) + list('/dev', /^nvidia\d+$/);
}

/** Adapters that rasterise on the CPU: a WebGPU device on one is not a GPU. */
const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|softpipe|swiftshader|basic render/i;

/** Whether the open WebGPU adapter is a software one (Mesa llvmpipe and the like). */
export function webgpuIsSoftware(): boolean {
  const i = gpuInfo();
  return SOFTWARE_ADAPTER.test(`${i.description} ${i.device} ${i.vendor} ${i.architecture}`);
}

/**
 * `--device auto`: WebGPU on a real GPU adapter; otherwise the wasm backend (WebAssembly SIMD
 * on every core), which on a CPU-only machine is several times faster than WebGPU over a
 * software adapter such as llvmpipe (bench/results/peers.md), and says so. Returns the device,
 * opened, and why it was chosen.
 */
export async function autoDevice(): Promise<{ device: Device; reason: string }> {
  let why: string;
  const nodes = gpuDeviceNodes();
  if (nodes === 0) {
    // no GPU for Dawn to find: WebGPU would be llvmpipe (and loading Dawn costs time)
    await openDevice('wasm');
    return { device: 'wasm', reason: 'no GPU device node (/dev/dri/renderD*, /dev/nvidia*): WebGPU would run on a software rasteriser' };
  }
  try {
    await initWebGPU();
    const i = gpuInfo();
    const adapter = `${i.backend}: ${i.description || i.device}`;
    if (!webgpuIsSoftware()) return { device: 'webgpu', reason: `a GPU adapter (${adapter})` };
    why = `the WebGPU adapter is a software rasteriser (${adapter}), slower here than the wasm backend`;
    shutdownWebGPU();
  } catch (e) {
    why = `no WebGPU adapter (${(e as Error).message.split('\n')[0]})`;
  }
  await openDevice('wasm');
  return { device: 'wasm', reason: why };
}

/**
 * A command's --device: 'auto' picks as `autoDevice` does and says what it chose and why
 * (through `say`, stderr by default: stdout may be an answer being piped); a device name is
 * checked and opened. Returns the device, open.
 */
export async function chooseDevice(flag: string, name: string, say: (line: string) => void = (l) => console.error(l)): Promise<Device> {
  if (name === 'auto') {
    const { device, reason } = await autoDevice();
    say(`${flag} auto: ${device} (${reason})`);
    return device;
  }
  const device = parseDevice(flag, name, ['auto']);
  await openDevice(device);
  return device;
}
