/**
 * TensorFlow.js: the pure-JS CPU backend, the WebGPU backend on our Dawn adapter, and
 * tfjs-node (libtensorflow), which is not installed here (see TFJS_NODE_MISSING). Plain tfjs
 * ops; gradients with tf.grads (registered by the '@tensorflow/tfjs' union package). Timed GPU calls end by reading back one element.
 */
import type * as TfModule from '@tensorflow/tfjs-core';
import type { GpuInfo } from '../../kernels/index.js';
import { installNavigatorGpu } from './dawn.js';
import { installedVersion, reason, type Opened, type Prepared, type Runner } from './runner.js';
import { BLOCK_PARAM_NAMES, type BlockParamName, type BlockWork, type Workload } from './workloads.js';

type Tf = typeof TfModule;
type T = TfModule.Tensor;

/** What `npm install -D @tensorflow/tfjs-node` said here (its install script fetches libtensorflow). */
const TFJS_NODE_MISSING =
  'not installed: `npm install -D @tensorflow/tfjs-node` fails here, its install script downloads libtensorflow 2.9.1 from storage.googleapis.com (getaddrinfo ENOTFOUND; only the npm registry is reachable)';

/** x: [S, in], w: [out, in] -> x wᵀ + b. */
const linear = (tf: Tf, x: T, w: T, b: T) => tf.add(tf.matMul(x, w, false, true), b);

function layerNorm(tf: Tf, x: T, w: T, b: T, eps = 1e-5): T {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), w), b);
}

/** GELU, tanh form (tfjs-core has no gelu op). */
function gelu(tf: Tf, x: T): T {
  const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
}

/** BlockWork's forward; x: [1, S, D] -> [1, S, D]. */
function blockForward(tf: Tf, w: BlockWork, x: T, p: Record<BlockParamName, T>): T {
  const [S, D, H] = [w.seq, w.dim, w.heads];
  const hd = D / H;
  const x2 = tf.reshape(x, [S, D]);
  const h = layerNorm(tf, x2, p['ln1.weight'], p['ln1.bias']);
  const heads = (t: T) => tf.transpose(tf.reshape(t, [S, H, hd]), [1, 0, 2]); // [H, S, hd]
  const q = heads(linear(tf, h, p['attn.q_proj.weight'], p['attn.q_proj.bias']));
  const k = heads(linear(tf, h, p['attn.k_proj.weight'], p['attn.k_proj.bias']));
  const v = heads(linear(tf, h, p['attn.v_proj.weight'], p['attn.v_proj.bias']));
  const probs = tf.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(hd)));
  const o = tf.reshape(tf.transpose(tf.matMul(probs, v), [1, 0, 2]), [S, D]);
  const a = tf.add(x2, linear(tf, o, p['attn.out_proj.weight'], p['attn.out_proj.bias']));
  const m = linear(tf, gelu(tf, linear(tf, layerNorm(tf, a, p['ln2.weight'], p['ln2.bias']), p['mlp.fc1.weight'], p['mlp.fc1.bias'])), p['mlp.fc2.weight'], p['mlp.fc2.bias']);
  return tf.reshape(tf.add(a, m), [1, S, D]);
}

/** Reads one element, so that queued GPU work is submitted and waited for. */
async function touch(tf: Tf, t: T): Promise<void> {
  const one = tf.slice(t, t.shape.map(() => 0), t.shape.map(() => 1));
  await one.data();
  one.dispose();
}

function runner(tf: Tf, backend: 'cpu' | 'webgpu'): Runner {
  const version = installedVersion('@tensorflow/tfjs-core');
  return {
    library: `tfjs ${version}`,
    backend,
    note: backend === 'cpu' ? 'pure JS, single-threaded'
      : "our Dawn adapter as navigator.gpu (bench/peers/dawn.ts); without asking for featureLevel 'compatibility' there is no adapter: \"Cannot read properties of null (reading 'features')\"",
    async prepare({ work: w }: Workload): Promise<Prepared> {
      if (!(await tf.setBackend(backend))) throw new Error(`tf.setBackend('${backend}') failed`);
      const inputs: T[] = [];
      const t = (data: Float32Array, shape: number[]) => {
        const x = tf.tensor(data, shape, 'float32');
        inputs.push(x);
        return x;
      };
      /** Outputs of one call (kept: the caller disposes them). */
      let call: () => T[];
      switch (w.kind) {
        case 'matmul': {
          const [a, b] = [t(w.a, [w.n, w.n]), t(w.b, [w.n, w.n])];
          call = () => [tf.matMul(a, b)];
          break;
        }
        case 'softmax': {
          const x = t(w.x, [w.rows, w.cols]);
          call = () => [tf.softmax(x)];
          break;
        }
        case 'layerNorm': {
          const [x, g, b] = [t(w.x, [w.rows, w.cols]), t(w.weight, [w.cols]), t(w.bias, [w.cols])];
          call = () => [tf.tidy(() => layerNorm(tf, x, g, b))];
          break;
        }
        case 'block': {
          const x = t(w.x, [1, w.seq, w.dim]);
          const params = w.params.map((p) => t(p.data, p.shape));
          const byName = (ps: T[]) => Object.fromEntries(BLOCK_PARAM_NAMES.map((n, i) => [n, ps[i]])) as Record<BlockParamName, T>;
          const forward = () => tf.tidy(() => blockForward(tf, w, x, byName(params)));
          if (!w.train) {
            call = () => [forward()];
          } else {
            const gradsOf = tf.grads((...ps: T[]) => tf.sum(blockForward(tf, w, x, byName(ps))));
            // Timed: the gradients (their computation includes the forward).
            call = () => tf.tidy(() => gradsOf(params));
            const check = () => [forward(), ...tf.tidy(() => gradsOf(params))];
            return prepared(tf, inputs, call, check);
          }
          break;
        }
      }
      return prepared(tf, inputs, call, call);
    },
  };
}

function prepared(tf: Tf, inputs: T[], call: () => T[], check: () => T[]): Prepared {
  return {
    async run() {
      const outs = call();
      await touch(tf, outs[outs.length - 1]);
      tf.dispose(outs);
    },
    async outputs() {
      const outs = check();
      const data: Float32Array[] = [];
      for (const o of outs) data.push(Float32Array.from(await o.data()));
      tf.dispose(outs);
      return data;
    },
    dispose() {
      tf.dispose(inputs);
    },
  };
}

/** The TF.js runners that start here, and why the others do not. */
export async function openTfjs(gpu: GpuInfo | null): Promise<Opened[]> {
  const out: Opened[] = [];
  let tf: Tf;
  try {
    tf = await import('@tensorflow/tfjs-core');
    await import('@tensorflow/tfjs-backend-cpu');
    // tfjs-core's Node build registers no gradient functions; the union package's does (into the
    // registry every tfjs-core copy shares), as when an app imports '@tensorflow/tfjs'.
    await import('@tensorflow/tfjs');
    if (!(await tf.setBackend('cpu'))) throw new Error("tf.setBackend('cpu') returned false");
    out.push(runner(tf, 'cpu'));
  } catch (e) {
    return [{ library: 'tfjs', backend: 'cpu', reason: reason(e) }, { library: 'tfjs', backend: 'webgpu', reason: 'tfjs-core did not load' }];
  }
  const version = installedVersion('@tensorflow/tfjs-backend-webgpu');
  if (!gpu) {
    out.push({ library: `tfjs ${version}`, backend: 'webgpu', reason: 'no WebGPU adapter here' });
  } else {
    try {
      installNavigatorGpu(gpu);
      await import('@tensorflow/tfjs-backend-webgpu');
      const factory = tf.findBackendFactory('webgpu');
      if (!factory) throw new Error('tfjs-backend-webgpu did not register (navigator.gpu missing?)');
      // setBackend only logs a failed start; calling the factory first surfaces the error.
      if (!(await tf.setBackend('webgpu'))) await factory();
      out.push(runner(tf, 'webgpu'));
    } catch (e) {
      out.push({ library: `tfjs ${version}`, backend: 'webgpu', reason: reason(e) });
    }
  }
  out.push(await openTfjsNode());
  return out;
}

/** tfjs-node is not a devDependency (it cannot install here); this says why, and checks. */
async function openTfjsNode(): Promise<Opened> {
  const pkg = '@tensorflow/tfjs-node';
  try {
    await import(pkg);
    return { library: 'tfjs-node', backend: 'cpu (libtensorflow)', reason: 'installed by hand: not measured by this suite' };
  } catch (e) {
    return { library: 'tfjs-node', backend: 'cpu (libtensorflow)', reason: `${TFJS_NODE_MISSING}; import: ${reason(e).replace(/ imported from .*/, '')}` };
  }
}
