/**
 * The wasm backend: tensors live in one shared WebAssembly.Memory; the hot ops run as
 * generated WebAssembly SIMD kernels on every core (./kernels/*), and the rest run the CPU
 * reference's loops directly on that memory (a wasm storage is a host typed array). float32
 * and int32; float64 stays on the CPU reference. Every call is synchronous. Fused ops: linear
 * (matmul + bias/activation/residual epilogue) and the multi-tensor optimizer kernels.
 */
import type { Backend } from '../../tensor/backend.js';
import { cpuBackend } from '../../tensor/cpu/backend.js';
import { readCpu } from '../../tensor/cpu/storage.js';
import { convertArray, type DType, type TypedArray } from '../../tensor/dtype.js';
import { isContiguous } from '../../tensor/shape.js';
import type { Tensor } from '../../tensor/tensor.js';
import { adamw } from './kernels/adamw.js';
import { attention, attentionGrad } from './kernels/attention.js';
import * as E from './kernels/elementwise.js';
import * as I from './kernels/indexing.js';
import { linear } from './kernels/linear.js';
import { matmul } from './kernels/matmul.js';
import { adamwMany, scaleMany, sumOfSquares } from './kernels/multi-tensor.js';
import { reduce } from './kernels/reduce.js';
import { rowOp } from './kernels/rows.js';
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

/** A dense block fills natively; other views through the reference. */
function fill(out: Tensor, value: number): void {
  if (isContiguous(out.shape, out.strides)) {
    (out.storage as WasmStorage).data.fill(out.dtype === 'int32' ? Math.trunc(value) : value, out.offset, out.offset + out.size);
  } else cpu.fill(out, value);
}
/** The generated kernels are float32; int32 runs the reference's loops on the same memory. */
const f32 = (t: Tensor) => t.dtype === 'float32';

export const wasmBackend: Backend = {
  device: 'wasm',
  capabilities: {
    dtypes: ['float32', 'int32'],
    syncRead: true,
    describe: () => {
      const r = runtime();
      const relaxed = r.features.relaxedSimd ? `relaxed-SIMD FMA (${r.features.relaxedVia === 'flag' ? "V8's --experimental-wasm-relaxed-simd, set at open" : 'native'})` : 'no relaxed SIMD';
      const threads = `${r.pool.threads} thread${r.pool.threads > 1 ? 's' : ''}${r.pool.threads > 1 && !r.pool.running ? ' (workers start on the first parallel op)' : ''}`;
      return `WebAssembly SIMD kernels generated at run time, ${threads}, ${relaxed}`;
    },
  },
  alloc,
  upload,
  read: async (x: Tensor) => readCpu(x),
  readSync: readCpu,
  copy: (x, out) => {
    if (!(x.dtype !== 'float64' && E.copy(x, out))) cpu.copy(x, out);
  },
  fill,
  unary: (op, x, out) => {
    if (!(f32(x) && E.unary(op, x, out))) cpu.unary(op, x, out);
  },
  binary: (op, a, b, out) => {
    if (!E.binary(op, a, b, out)) cpu.binary(op, a, b, out);
  },
  where: (cond, a, b, out) => {
    if (!E.where(cond, a, b, out)) cpu.where(cond, a, b, out);
  },
  reduce: (op, x, rank, out) => {
    if (!reduce(op, x, rank, out)) cpu.reduce(op, x, rank, out);
  },
  softmax: (x, log, out) => f32(x) ? rowOp(log ? 'logSoftmax' : 'softmax', x, out) : cpu.softmax(x, log, out),
  matmul: (a, b, out) => (a.dtype === 'float32' ? matmul(a, b, out) : cpu.matmul(a, b, out)),
  attention: (q, k, v, p, out) => (q.dtype === 'float32' ? attention(q, k, v, p, out) : cpu.attention(q, k, v, p, out)),
  layerNorm: (x, weight, bias, eps, out) => f32(x) ? rowOp('layerNorm', x, out, { weight, bias, eps }) : cpu.layerNorm(x, weight, bias, eps, out),
  rmsNorm: (x, weight, eps, out) => f32(x) ? rowOp('rmsNorm', x, out, { weight, eps }) : cpu.rmsNorm(x, weight, eps, out),
  gather: (x, dim, index, out) => {
    if (!I.gather(x, dim, index, out)) cpu.gather(x, dim, index, out);
  },
  scatterAdd: (x, dim, index, src, out) => {
    if (!I.scatterAdd(x, dim, index, src, out, wasmBackend.copy)) cpu.scatterAdd(x, dim, index, src, out);
  },
  unaryGrad: (op, x, gy, out) => {
    if (!(f32(x) && E.unaryGrad(op, x, gy, out))) cpu.unaryGrad(op, x, gy, out);
  },
  softmaxGrad: (y, gy, log, out) => f32(y) ? rowOp(log ? 'logSoftmaxGrad' : 'softmaxGrad', y, out, { gy }) : cpu.softmaxGrad(y, gy, log, out),
  layerNormGrad: (x, weight, gy, eps, out) => f32(x) ? rowOp('layerNormGrad', x, out, { weight, gy, eps }) : cpu.layerNormGrad(x, weight, gy, eps, out),
  rmsNormGrad: (x, weight, gy, eps, out) => f32(x) ? rowOp('rmsNormGrad', x, out, { weight, gy, eps }) : cpu.rmsNormGrad(x, weight, gy, eps, out),
  attentionGrad: (q, k, v, p, g, gq, gk, gv) => (q.dtype === 'float32' ? attentionGrad(q, k, v, p, g, gq, gk, gv) : cpu.attentionGrad(q, k, v, p, g, gq, gk, gv)),
  adamw: (param, grad, m, v, h) => (f32(param) ? adamw(param, grad, m, v, h) : cpu.adamw(param, grad, m, v, h)),
  // fused ops (tensor/backend.ts FusedOps): each declines what its kernel does not cover
  linear,
  adamwMany,
  sumOfSquares,
  scaleMany,
  sync: async () => {},
};
