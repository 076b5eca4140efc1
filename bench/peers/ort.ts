/**
 * onnxruntime-node, CPU execution provider, inference only: each workload is a tiny ONNX model
 * built in memory (onnx-model.ts) with the weights as initializers and the activations as
 * inputs. A timed call is one session.run, which returns the output as a JS array.
 */
import type * as OrtModule from 'onnxruntime-node';
import os from 'node:os';
import { OnnxGraph } from './onnx-model.js';
import { installedVersion, reason, Skip, type Opened, type Prepared, type Runner } from './runner.js';
import { blockParams, type BlockParamName, type BlockWork, type Workload } from './workloads.js';

type Ort = typeof OrtModule;

/** Opset 20: LayerNormalization (17) and Gelu with approximate='tanh' (20). */
const OPSET = 20;

type LinearName = 'attn.q_proj' | 'attn.k_proj' | 'attn.v_proj' | 'attn.out_proj' | 'mlp.fc1' | 'mlp.fc2';

/** BlockWork's forward as an ONNX graph; input 'x' [1, S, D], output 'y'. */
function blockGraph(w: BlockWork): OnnxGraph {
  const g = new OnnxGraph();
  const [S, D, H] = [w.seq, w.dim, w.heads];
  const hd = D / H;
  const p = blockParams(w);
  const c = (name: BlockParamName) => g.constant(name, p[name].shape, p[name].data);
  /** x [S, in] @ wᵀ + b, with wᵀ stored as a constant (no transpose at run time). */
  const linear = (x: string, prefix: LinearName) => {
    const w = p[`${prefix}.weight` as const];
    const wt = transposed(w.data, w.shape);
    return g.op('Add', [g.op('MatMul', [x, g.constant(`${prefix}.weight.T`, [wt.rows, wt.cols], wt.data)]), c(`${prefix}.bias` as const)]);
  };
  const ln = (x: string, prefix: 'ln1' | 'ln2') => g.op('LayerNormalization', [x, c(`${prefix}.weight`), c(`${prefix}.bias`)], { axis: -1, epsilon: { float: 1e-5 } });
  const x = g.op('Reshape', [g.input('x', [1, S, D]), g.int64s('shape_SD', [S, D])]);
  const h = ln(x, 'ln1');
  const headShape = g.int64s('shape_SHhd', [S, H, hd]);
  const heads = (t: string, perm: number[]) => g.op('Transpose', [g.op('Reshape', [t, headShape])], { perm });
  const q = heads(linear(h, 'attn.q_proj'), [1, 0, 2]); // [H, S, hd]
  const kT = heads(linear(h, 'attn.k_proj'), [1, 2, 0]); // [H, hd, S]
  const v = heads(linear(h, 'attn.v_proj'), [1, 0, 2]);
  const scale = g.constant('scale', [], new Float32Array([1 / Math.sqrt(hd)]));
  const probs = g.op('Softmax', [g.op('Mul', [g.op('MatMul', [q, kT]), scale])], { axis: -1 });
  const o = g.op('Reshape', [g.op('Transpose', [g.op('MatMul', [probs, v])], { perm: [1, 0, 2] }), g.int64s('shape_SD2', [S, D])]);
  const a = g.op('Add', [x, linear(o, 'attn.out_proj')]);
  const m = linear(g.op('Gelu', [linear(ln(a, 'ln2'), 'mlp.fc1')], { approximate: 'tanh' }), 'mlp.fc2');
  const y = g.op('Reshape', [g.op('Add', [a, m]), g.int64s('shape_1SD', [1, S, D])]);
  g.output(y, [1, S, D]);
  return g;
}

/** A [rows, cols] matrix transposed. */
function transposed(data: Float32Array, [rows, cols]: number[]): { rows: number; cols: number; data: Float32Array } {
  const out = new Float32Array(data.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = data[i * cols + j];
  return { rows: cols, cols: rows, data: out };
}

/** The model for a workload and the feeds of one call. */
function build(ort: Ort, w: Workload['work']): { model: Uint8Array; feeds: Record<string, OrtModule.Tensor> } {
  const g = new OnnxGraph();
  const f = (data: Float32Array, shape: number[]) => new ort.Tensor('float32', data, shape);
  switch (w.kind) {
    case 'matmul': {
      const y = g.op('MatMul', [g.input('a', [w.n, w.n]), g.input('b', [w.n, w.n])]);
      g.output(y, [w.n, w.n]);
      return { model: g.model(OPSET), feeds: { a: f(w.a, [w.n, w.n]), b: f(w.b, [w.n, w.n]) } };
    }
    case 'softmax': {
      const y = g.op('Softmax', [g.input('x', [w.rows, w.cols])], { axis: -1 });
      g.output(y, [w.rows, w.cols]);
      return { model: g.model(OPSET), feeds: { x: f(w.x, [w.rows, w.cols]) } };
    }
    case 'layerNorm': {
      const y = g.op('LayerNormalization', [g.input('x', [w.rows, w.cols]), g.constant('w', [w.cols], w.weight), g.constant('b', [w.cols], w.bias)], { axis: -1, epsilon: { float: 1e-5 } });
      g.output(y, [w.rows, w.cols]);
      return { model: g.model(OPSET), feeds: { x: f(w.x, [w.rows, w.cols]) } };
    }
    case 'block': {
      if (w.train) throw new Skip('inference only: onnxruntime-node has no training API');
      return { model: blockGraph(w).model(OPSET), feeds: { x: f(w.x, [1, w.seq, w.dim]) } };
    }
  }
}

function runner(ort: Ort): Runner {
  return {
    library: `onnxruntime-node ${installedVersion('onnxruntime-node')}`,
    backend: 'cpu',
    note: `CPU execution provider, its default intra-op threads (one per physical core; ${os.cpus().length} logical here)`,
    async prepare({ work }: Workload): Promise<Prepared> {
      const { model, feeds } = build(ort, work);
      const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
      const outName = session.outputNames[0];
      const call = async () => (await session.run(feeds))[outName];
      return {
        async run() {
          const y = await call();
          y.dispose();
        },
        async outputs() {
          const y = await call();
          const data = Float32Array.from(y.data as Float32Array);
          y.dispose();
          return [data];
        },
        dispose() {
          void session.release();
        },
      };
    },
  };
}

export async function openOrt(): Promise<Opened[]> {
  try {
    const ort = (await import('onnxruntime-node')) as Ort;
    return [runner(ort)];
  } catch (e) {
    return [{ library: 'onnxruntime-node', backend: 'cpu', reason: reason(e) }];
  }
}
