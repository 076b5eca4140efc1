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
  lines.push('limits in use:');
  for (const k of SHOWN_LIMITS) if (k in info.limits) lines.push(`  ${k.padEnd(36)} ${info.limits[k]}`);
  return lines.join('\n');
}

export async function infoCommand(opts: { json?: boolean }): Promise<void> {
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
