/**
 * The wasm backend: tensors live in one shared WebAssembly.Memory; the hot ops run as
 * generated WebAssembly SIMD kernels on every core (./kernels/*), and the rest run the CPU
 * reference's loops directly on that memory (a wasm storage is a host typed array). float32
 * and int32; float64 stays on the CPU reference. Every call is synchronous.
 */
import type { Backend } from '../../tensor/backend.js';
import { cpuBackend } from '../../tensor/cpu/backend.js';
import { readCpu } from '../../tensor/cpu/storage.js';
import { convertArray, type DType, type TypedArray } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/tensor.js';
import { matmul } from './kernels/matmul.js';
import { WasmStorage } from './memory.js';
import { runtime } from './runtime.js';

declare module '../../tensor/device.js' {
  interface DeviceNames {
    /** WebAssembly SIMD kernels generated at run time, on every core (backends/wasm). */
    wasm: true;
  }
}

function alloc(numel: number, dtype: DType): WasmStorage {
  return new WasmStorage(runtime().heap, dtype, numel);
}

function upload(data: TypedArray, dtype: DType): WasmStorage {
  const s = alloc(data.length, dtype);
  if ((dtype === 'int32') === data instanceof Int32Array && !(data instanceof Float64Array)) s.data.set(data);
  else s.data.set(convertArray(data, dtype));
  return s;
}

const cpu = cpuBackend;

export const wasmBackend: Backend = {
  device: 'wasm',
  capabilities: {
    dtypes: ['float32', 'int32'],
    syncRead: true,
    describe: () => {
      const r = runtime();
      const relaxed = r.features.relaxedSimd ? `relaxed-SIMD FMA (${r.features.relaxedVia === 'flag' ? "V8's --experimental-wasm-relaxed-simd, set at open" : 'native'})` : 'no relaxed SIMD';
      return `WebAssembly SIMD kernels generated at run time, ${r.pool.threads} thread${r.pool.threads > 1 ? 's' : ''}, ${relaxed}`;
    },
  },
  alloc,
  upload,
  read: async (x: Tensor) => readCpu(x),
  readSync: readCpu,
  copy: cpu.copy,
  fill: cpu.fill,
  unary: cpu.unary,
  binary: cpu.binary,
  where: cpu.where,
  reduce: cpu.reduce,
  softmax: cpu.softmax,
  matmul: (a, b, out) => (a.dtype === 'float32' ? matmul(a, b, out) : cpu.matmul(a, b, out)),
  attention: cpu.attention,
  layerNorm: cpu.layerNorm,
  rmsNorm: cpu.rmsNorm,
  gather: cpu.gather,
  scatterAdd: cpu.scatterAdd,
  unaryGrad: cpu.unaryGrad,
  softmaxGrad: cpu.softmaxGrad,
  layerNormGrad: cpu.layerNormGrad,
  rmsNormGrad: cpu.rmsNormGrad,
  attentionGrad: cpu.attentionGrad,
  adamw: cpu.adamw,
  sync: async () => {},
};
