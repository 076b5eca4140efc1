/** `uhd info`: every backend (the WebGPU adapter and limits, wasm, the CPU reference) and what `--device auto` picks. */
import { closeDevice, describeDevices, webgpuIsSoftware } from '../backends/index.js';
import { wasmSummary } from '../backends/wasm/index.js';
import { initWebGPU, type GpuInfo } from '../kernels/index.js';
import { getBackend, openDevices } from '../tensor/index.js';

const SHOWN_LIMITS = [
  'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupStorageSize',
  'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize', 'maxBufferSize',
  'maxStorageBuffersPerShaderStage', 'maxUniformBufferBindingSize', 'minUniformBufferOffsetAlignment',
];

export function formatInfo(info: GpuInfo): string {
  const lines = [
    `backend:        webgpu (Dawn ${info.backend}, feature level ${info.featureLevel})`,
    `adapter:        ${info.description || info.device || 'unknown'}`,
    `vendor:         ${info.vendor || '-'} ${info.architecture || ''}`.trimEnd(),
    `features:       ${info.features.join(', ') || '(none)'}`,
  ];
  if (info.tried.length) lines.push(`tried first:    ${info.tried.join('; ')}`);
  if (info.toggles?.length) lines.push(`dawn toggles:   ${info.toggles.join(', ')}`);
  if (info.experimental?.length) lines.push(`experimental:   ${info.experimental.join(', ')}`);
  lines.push('limits in use:');
  for (const k of SHOWN_LIMITS) if (k in info.limits) lines.push(`  ${k.padEnd(36)} ${info.limits[k]}`);
  return lines.join('\n');
}

export interface InfoOptions {
  json?: boolean;
  /** With a model: the memory estimate (no GPU needed) instead of the adapter. */
  model?: string;
  dtype?: string;
  gpuMemory?: string;
  recipe?: string;
}

/** `uhd info --model llava-uhd-v4 --dtype bf16 [--gpu-memory 80GiB|h200] [--recipe file]`. */
async function memoryCommand(opts: InfoOptions): Promise<void> {
  const { resolveConfig } = await import('../llava-uhd/config.js');
  const { estimateMemory, formatEstimate, parseGpuMemory, WEIGHT_BYTES } = await import('../llava-uhd/memory-estimate.js');
  const alias: Record<string, keyof typeof WEIGHT_BYTES> = { bf16: 'bfloat16', bfloat16: 'bfloat16', f16: 'float16', fp16: 'float16', float16: 'float16', f32: 'float32', fp32: 'float32', float32: 'float32' };
  const dtype = alias[(opts.dtype ?? 'bf16').toLowerCase()];
  if (!dtype) throw new Error(`--dtype: '${opts.dtype}' is not one of bf16, f16, f32`);
  const config = await resolveConfig(opts.model!);
  const { readFile } = await import('node:fs/promises');
  const recipePath = opts.recipe ?? new URL('../recipes/llava-uhd-v4.json', import.meta.url).pathname;
  let recipe;
  try {
    recipe = JSON.parse(await readFile(recipePath, 'utf8'));
  } catch (e) {
    throw new Error(`--recipe: cannot read ${recipePath}: ${(e as Error).message}`);
  }
  const e = estimateMemory(config, { dtype, recipe, modelName: opts.model, ...(opts.gpuMemory ? { gpuBytes: parseGpuMemory(opts.gpuMemory) } : {}) });
  console.log(opts.json ? JSON.stringify(e, null, 2) : formatEstimate(e));
}

export async function infoCommand(opts: InfoOptions): Promise<void> {
  if (opts.model) {
    try {
      await memoryCommand(opts);
    } catch (e) {
      console.error((e as Error).message);
      process.exitCode = 2;
    }
    return;
  }
  try {
    let gpu: GpuInfo | null = null;
    let gpuError = '';
    try {
      gpu = await initWebGPU();
    } catch (e) {
      gpuError = (e as Error).message;
    }
    const wasm = wasmSummary();
    const software = gpu !== null && webgpuIsSoftware();
    const auto = gpu && !software
      ? { device: 'webgpu', reason: 'a GPU adapter' }
      : { device: 'wasm', reason: gpu ? 'the WebGPU adapter is a software rasteriser, slower here than wasm' : 'no WebGPU adapter' };
    if (opts.json) {
      const backends = Object.fromEntries(openDevices().map((d) => {
        const c = getBackend(d).capabilities;
        return [d, { describe: c.describe?.() ?? '', dtypes: c.dtypes, syncRead: c.syncRead }];
      }));
      console.log(JSON.stringify({ webgpu: gpu ?? { unavailable: gpuError }, webgpuSoftware: software, backends, wasm, auto }, null, 2));
      return;
    }
    console.log(gpu ? formatInfo(gpu) : `webgpu: unavailable\n${gpuError}`);
    console.log('\nbackends:');
    for (const line of describeDevices()) console.log(`  ${line}`);
    console.log(`  wasm: ${wasm}`);
    console.log(`\n--device auto: ${auto.device} (${auto.reason})`);
  } finally {
    closeDevice();
  }
}
