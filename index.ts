/**
 * uhd: a tensor runtime in TypeScript with WebGPU kernels, for LLaVA-UHD v4.
 *
 *   import * as uhd from 'uhd';
 *   await uhd.openDevice('wasm');           // or 'webgpu'; the CPU backend needs no setup
 *   const x = uhd.randn([2, 3], { device: 'webgpu' });
 *   console.log(await x.matmul(x.transpose()).toArray());
 *   uhd.shutdown();                         // lets Node exit
 */
export * from './tensor/index.js';
export { initWebGPU, shutdown, gpuInfo, PROBE_ORDER, type AdapterChoice, type GpuInfo, type InitOptions } from './kernels/index.js';
/** Opening devices by name (every backend), `--device auto`'s choice, the wasm backend. */
export { openDevice, closeDevice, autoDevice, describeDevices, DEVICES, parseDevice } from './backends/index.js';
export { initWasm, shutdownWasm, wasmInfo, type WasmInfo } from './backends/wasm/index.js';
/** Differentiable ops, backward, noGrad, gradcheck, checkpoint (Tensor methods record once loaded). */
export * as autograd from './autograd/index.js';
/** Modules, layers, optimizers, schedules, safetensors, training checkpoints. */
export * as nn from './nn/index.js';
