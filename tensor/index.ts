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
export { registerBackend, getBackend, hasBackend, type Backend, type AttentionParams, type AdamWHyper, type AdamWItem, type FusedOps, type LinearActivation, type UnaryOp, type BinaryOp, type ReduceOp, UNARY_OPS, BINARY_OPS } from './backend.js';
export type { DType, TypedArray } from './dtype.js';
export type { Device } from './storage.js';
export { Storage } from './storage.js';
export type { AttentionOptions } from './ops/attention.js';
