/**
 * Our runtime on its backends, the baseline every peer is compared with. Timed calls end
 * as bench/harness.ts's do: a read-back of one element, which flushes the queued GPU work.
 */
import * as ag from '../../autograd/index.js';
import { LayerNorm, MLP, Module, MultiHeadAttention } from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import type { Prepared, Runner } from './runner.js';
import { BLOCK_PARAM_NAMES, type BlockWork, type Workload } from './workloads.js';

/** The pre-norm block of BlockWork, from our nn modules. x: [B, S, dim] -> [B, S, dim]. */
class PreNormBlock extends Module {
  ln1: LayerNorm;
  attn: MultiHeadAttention;
  ln2: LayerNorm;
  mlp: MLP;
  constructor(dim: number, heads: number, hidden: number, device: Device) {
    super();
    this.ln1 = this.module('ln1', new LayerNorm(dim, 1e-5, { device }));
    this.attn = this.module('attn', new MultiHeadAttention({ dim, heads, bias: true, device }));
    this.ln2 = this.module('ln2', new LayerNorm(dim, 1e-5, { device }));
    this.mlp = this.module('mlp', new MLP(dim, hidden, 'tanh', { device }));
  }
  forward(x: Tensor): Tensor {
    const a = ag.add(x, this.attn.forward(this.ln1.forward(x)));
    return ag.add(a, this.mlp.forward(this.ln2.forward(a)));
  }
}

/** Reads one element: on the GPU this submits and waits for everything queued before it. */
async function touch(t: Tensor): Promise<void> {
  const one = t.slice(...t.shape.map(() => [0, 1] as const));
  await one.data();
  one.dispose();
}

async function readAll(ts: Tensor[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const t of ts) out.push(Float32Array.from(await t.data()));
  return out;
}

function prepareBlock(w: BlockWork, device: Device): Prepared {
  const block = new PreNormBlock(w.dim, w.heads, w.hidden, device);
  const sd = new Map(w.params.map((p) => [p.name, uhd.tensor(p.data, { shape: p.shape, device })]));
  block.loadStateDict(sd);
  for (const t of sd.values()) t.dispose();
  const named = new Map(block.namedParameters());
  const params = BLOCK_PARAM_NAMES.map((n) => named.get(n)!);
  const x = uhd.tensor(w.x, { shape: [1, w.seq, w.dim], device });
  /** Output, then (train) the gradients of sum(y) in BLOCK_PARAM_NAMES order; the caller frees them. */
  const call = (): Tensor[] => {
    if (!w.train) return [ag.noGrad(() => uhd.tidy(() => block.forward(x)))];
    const y = uhd.tidy(() => {
      const out = block.forward(x);
      ag.sum(out).backward();
      return out;
    });
    const grads = params.map((p) => p.grad!);
    for (const p of params) p.grad = null;
    return [y, ...grads];
  };
  return {
    async run() {
      const outs = call();
      await touch(outs[outs.length - 1]);
      for (const t of outs) t.dispose();
    },
    async outputs() {
      const outs = call();
      const data = await readAll(outs);
      for (const t of outs) t.dispose();
      return data;
    },
    dispose() {
      x.dispose();
      for (const p of block.parameters()) p.dispose();
    },
  };
}

/** The single-output workloads: inputs made once, `op` timed. */
function prepareOp(inputs: Tensor[], op: () => Tensor): Prepared {
  return {
    async run() {
      const y = op();
      await touch(y);
      y.dispose();
    },
    async outputs() {
      const y = op();
      const data = await readAll([y]);
      y.dispose();
      return data;
    },
    dispose() {
      for (const t of inputs) t.dispose();
    },
  };
}

export function uhdRunner(device: Device): Runner {
  return {
    library: 'uhd (ours)',
    backend: device,
    note: device === 'cpu' ? 'single-threaded TypeScript' : device === 'wasm' ? 'WebAssembly SIMD kernels generated at run time, on every core (main thread + worker_threads)' : undefined,
    async prepare({ work: w }: Workload): Promise<Prepared> {
      const t = (data: Float32Array, shape: number[]) => uhd.tensor(data, { shape, device });
      switch (w.kind) {
        case 'matmul': {
          const [a, b] = [t(w.a, [w.n, w.n]), t(w.b, [w.n, w.n])];
          return prepareOp([a, b], () => a.matmul(b));
        }
        case 'softmax': {
          const x = t(w.x, [w.rows, w.cols]);
          return prepareOp([x], () => uhd.softmax(x, -1));
        }
        case 'layerNorm': {
          const [x, g, b] = [t(w.x, [w.rows, w.cols]), t(w.weight, [w.cols]), t(w.bias, [w.cols])];
          return prepareOp([x, g, b], () => uhd.layerNorm(x, g, b, 1e-5));
        }
        case 'block':
          return prepareBlock(w, device);
      }
    },
  };
}
