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
  lines.push('limits in use:');
  for (const k of SHOWN_LIMITS) if (k in info.limits) lines.push(`  ${k.padEnd(36)} ${info.limits[k]}`);
  lines.push('cpu backend:    always available (float32, float64, int32)');
  return lines.join('\n');
}

export async function infoCommand(opts: { json?: boolean }): Promise<void> {
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
