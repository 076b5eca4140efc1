/** The tensor layer: Tensor, creation, ops, memory, and the CPU backend (registered on import). */
import { registerBackend } from './backend.js';
import { cpuBackend } from './cpu/backend.js';

registerBackend(cpuBackend);

export { Tensor, type SliceRange } from './tensor.js';
export * from './creation.js';
export * as ops from './ops/index.js';
export * from './ops/index.js';
export { manualSeed, getRngState, setRngState } from './random.js';
export { tidy, keep, memory, type MemoryInfo } from './memory.js';
export {
  registerBackend, unregisterBackend, getBackend, hasBackend, openDevices, requireDeviceDtype, fusedOpsOf, FUSED_OPS,
  type Backend, type Capabilities, type FusedOps, type WindowMergeArgs, type AdamWItem, type LinearActivation, type AttentionParams, type AdamWHyper,
  type UnaryOp, type BinaryOp, type ReduceOp, UNARY_OPS, BINARY_OPS,
} from './backend.js';
export { ops as opTable, recording, installAutograd, type OpTable, type AutogradHooks, type GradFn } from './dispatch.js';
export type { DType, TypedArray } from './dtype.js';
export type { Device, DeviceNames } from './device.js';
export { Storage, HostStorage } from './storage.js';
export type { AttentionOptions } from './ops/attention.js';
