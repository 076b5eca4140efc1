/**
 * The workloads every library runs, with the same inputs: float32 arrays drawn once from our
 * seeded generator and handed to each library as they are.
 */
import * as uhd from '../../tensor/index.js';

export interface Param {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** x @ y, both [n, n]. */
export interface MatmulWork {
  kind: 'matmul';
  n: number;
  a: Float32Array;
  b: Float32Array;
}

/** softmax over the last axis of x: [rows, cols]. */
export interface SoftmaxWork {
  kind: 'softmax';
  rows: number;
  cols: number;
  x: Float32Array;
}

/** layerNorm over the last axis of x: [rows, cols], weight and bias [cols], eps 1e-5. */
export interface LayerNormWork {
  kind: 'layerNorm';
  rows: number;
  cols: number;
  x: Float32Array;
  weight: Float32Array;
  bias: Float32Array;
}

/**
 * A pre-norm transformer block (ViT-style): a = x + MHA(LN1(x)); y = a + MLP(LN2(a)), MHA with
 * `heads` heads and biases, no mask, scale 1/sqrt(headDim); MLP fc1 -> GELU (tanh form) -> fc2.
 * x: [1, seq, dim]. Weights are in PyTorch's [out, in] layout (y = x Wᵀ + b).
 * `train`: forward, then the gradients of sum(y) with respect to every parameter.
 */
export interface BlockWork {
  kind: 'block';
  train: boolean;
  seq: number;
  dim: number;
  heads: number;
  hidden: number;
  x: Float32Array;
  /** In BLOCK_PARAM_NAMES order. */
  params: Param[];
}

export type Work = MatmulWork | SoftmaxWork | LayerNormWork | BlockWork;

/** Parameter names, as in our nn modules' state dict (bench/peers/uhd.ts builds the module). */
export const BLOCK_PARAM_NAMES = [
  'ln1.weight', 'ln1.bias',
  'attn.q_proj.weight', 'attn.q_proj.bias', 'attn.k_proj.weight', 'attn.k_proj.bias',
  'attn.v_proj.weight', 'attn.v_proj.bias', 'attn.out_proj.weight', 'attn.out_proj.bias',
  'ln2.weight', 'ln2.bias',
  'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias',
] as const;

export type BlockParamName = (typeof BLOCK_PARAM_NAMES)[number];

/** The parameters by name (the order of `params` is BLOCK_PARAM_NAMES). */
export function blockParams(w: BlockWork): Record<BlockParamName, Param> {
  return Object.fromEntries(w.params.map((p) => [p.name, p])) as Record<BlockParamName, Param>;
}

export interface Workload {
  /** e.g. 'matmul 512x512x512'. */
  name: string;
  work: Work;
  /** Floating-point operations per call, where a GFLOP/s figure means something. */
  flops?: number;
}

/** Normal samples from our seeded generator (on the CPU, so the same on every machine). */
async function normal(shape: number[], std = 1, mean = 0): Promise<Float32Array> {
  const t = uhd.randn(shape);
  const src = await t.data();
  t.dispose();
  const out = new Float32Array(src.length);
  for (let i = 0; i < out.length; i++) out[i] = mean + std * src[i];
  return out;
}

async function blockWork(train: boolean): Promise<BlockWork> {
  const [seq, dim, heads, hidden] = [256, 256, 4, 1024];
  uhd.manualSeed(1);
  const shapes: Record<BlockParamName, number[]> = {
    'ln1.weight': [dim], 'ln1.bias': [dim],
    'attn.q_proj.weight': [dim, dim], 'attn.q_proj.bias': [dim],
    'attn.k_proj.weight': [dim, dim], 'attn.k_proj.bias': [dim],
    'attn.v_proj.weight': [dim, dim], 'attn.v_proj.bias': [dim],
    'attn.out_proj.weight': [dim, dim], 'attn.out_proj.bias': [dim],
    'ln2.weight': [dim], 'ln2.bias': [dim],
    'mlp.fc1.weight': [hidden, dim], 'mlp.fc1.bias': [hidden],
    'mlp.fc2.weight': [dim, hidden], 'mlp.fc2.bias': [dim],
  };
  const params: Param[] = [];
  for (const name of BLOCK_PARAM_NAMES) {
    const shape = shapes[name];
    // Norm weights near 1, biases small, matrices with a fan-in scale: activations stay O(1).
    const data = name.startsWith('ln') && name.endsWith('weight') ? await normal(shape, 0.1, 1)
      : name.endsWith('bias') ? await normal(shape, 0.02)
      : await normal(shape, 1 / Math.sqrt(shape[1]));
    params.push({ name, shape, data });
  }
  return { kind: 'block', train, seq, dim, heads, hidden, x: await normal([1, seq, dim]), params };
}

/** Multiply-adds of the block's forward: projections, scores and values, MLP. */
function blockForwardFlops(seq: number, dim: number, hidden: number): number {
  return 2 * (seq * dim * dim * 4 + 2 * seq * seq * dim + 2 * seq * dim * hidden);
}

export async function workloads(): Promise<Workload[]> {
  uhd.manualSeed(0);
  const out: Workload[] = [];
  for (const n of [256, 512, 1024, 2048]) {
    out.push({ name: `matmul ${n}x${n}x${n}`, flops: 2 * n ** 3, work: { kind: 'matmul', n, a: await normal([n, n]), b: await normal([n, n]) } });
  }
  const [rows, cols] = [1024, 1024];
  out.push({ name: `softmax [${rows},${cols}] last axis`, work: { kind: 'softmax', rows, cols, x: await normal([rows, cols], 2) } });
  out.push({
    name: `layerNorm [${rows},${cols}] +w +b`,
    work: { kind: 'layerNorm', rows, cols, x: await normal([rows, cols], 2, 0.5), weight: await normal([cols], 0.1, 1), bias: await normal([cols], 0.1) },
  });
  const fwd = await blockWork(false);
  const f = blockForwardFlops(fwd.seq, fwd.dim, fwd.hidden);
  out.push({ name: `block fwd d=${fwd.dim} S=${fwd.seq} h=${fwd.heads}`, flops: f, work: fwd });
  // backward: about twice the forward's multiply-adds
  out.push({ name: `block fwd+bwd d=${fwd.dim} S=${fwd.seq} h=${fwd.heads}`, flops: 3 * f, work: await blockWork(true) });
  return out;
}
