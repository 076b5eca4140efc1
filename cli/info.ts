/** `uhd info`: which backend and adapter were chosen, and the limits in use. */
import { initWebGPU, shutdown, type GpuInfo } from '../kernels/index.js';

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
  lines.push('cpu backend:    always available (float32, float64, int32)');
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
    const info = await initWebGPU();
    console.log(opts.json ? JSON.stringify(info, null, 2) : formatInfo(info));
  } catch (e) {
    console.log(`webgpu: unavailable\n${(e as Error).message}\ncpu backend: available`);
    process.exitCode = 1;
  } finally {
    shutdown();
  }
}
