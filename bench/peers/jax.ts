/**
 * jax-js on each device it starts in Node: 'cpu' (its interpreter, meant for debugging),
 * 'wasm' (its default) and 'webgpu' (on our Dawn adapter through navigator.gpu, which its
 * README lists as unsupported in Node). Arrays are reference counted and every function takes
 * ownership of its arguments, hence the `.ref`s. Every case but the lone matmul also runs under
 * jit (its idiomatic fast path: traced once, fused kernels). Timed calls end in blockUntilReady.
 */
import type * as JaxModule from '@jax-js/jax';
import type { GpuInfo } from '../../kernels/index.js';
import { installNavigatorGpu } from './dawn.js';
import { installWebWorker } from './web-worker.js';
import { installedVersion, reason, type Opened, type Prepared, type Runner } from './runner.js';
import { BLOCK_PARAM_NAMES, type BlockParamName, type BlockWork, type Workload } from './workloads.js';

type Jax = typeof JaxModule;
type A = JaxModule.Array;
type Params = Record<BlockParamName, A>;
type JaxDevice = 'cpu' | 'wasm' | 'webgpu';

/** Consumes x, w ([out, in]) and b: x wᵀ + b. */
const linear = (jax: Jax, x: A, w: A, b: A): A => jax.numpy.matmul(x, w.transpose()).add(b);

/** Consumes x, w and b. */
const layerNorm = (jax: Jax, x: A, w: A, b: A): A => jax.nn.standardize(x, -1, { epsilon: 1e-5 }).mul(w).add(b);

/** BlockWork's forward; consumes x [1, S, D] and every parameter. */
function blockForward(jax: Jax, w: BlockWork, x: A, p: Params): A {
  const [S, D, H] = [w.seq, w.dim, w.heads];
  const x2 = x.reshape([S, D]);
  const h = layerNorm(jax, x2.ref, p['ln1.weight'], p['ln1.bias']);
  // Attention from matmul and softmax: nn.dotProductAttention parses its einsum with iterator
  // helpers (Iterator.prototype.map), which Node 20 lacks.
  const hd = D / H;
  const heads = (t: A, perm: number[]) => t.reshape([S, H, hd]).transpose(perm);
  const q = heads(linear(jax, h.ref, p['attn.q_proj.weight'], p['attn.q_proj.bias']), [1, 0, 2]); // [H, S, hd]
  const kT = heads(linear(jax, h.ref, p['attn.k_proj.weight'], p['attn.k_proj.bias']), [1, 2, 0]); // [H, hd, S]
  const v = heads(linear(jax, h, p['attn.v_proj.weight'], p['attn.v_proj.bias']), [1, 0, 2]);
  const probs = jax.nn.softmax(jax.numpy.matmul(q, kT).mul(1 / Math.sqrt(hd)), -1);
  const o = jax.numpy.matmul(probs, v).transpose([1, 0, 2]).reshape([S, D]);
  const a = x2.add(linear(jax, o, p['attn.out_proj.weight'], p['attn.out_proj.bias']));
  const hidden = jax.nn.gelu(linear(jax, layerNorm(jax, a.ref, p['ln2.weight'], p['ln2.bias']), p['mlp.fc1.weight'], p['mlp.fc1.bias']));
  return a.add(linear(jax, hidden, p['mlp.fc2.weight'], p['mlp.fc2.bias'])).reshape([1, S, D]);
}

/** A new reference to every parameter (a call consumes the ones it is given). */
const refParams = (p: Params): Params => Object.fromEntries(BLOCK_PARAM_NAMES.map((n) => [n, p[n].ref])) as Params;

function runner(jax: Jax, device: JaxDevice, jitted: boolean, workers: number): Runner {
  const np = jax.numpy;
  return {
    library: `jax-js ${installedVersion('@jax-js/jax')}`,
    backend: jitted ? `${device}, jit` : device,
    note: jitted ? 'jax.jit of the same function: traced once, ops fused into fewer kernels'
      : device === 'cpu' ? 'interpreted JS (its debug device)'
      : device === 'wasm' ? (workers ? `its kernels on ${workers} Web Workers (bench/peers/web-worker.ts: a worker_threads shim; Node has no Worker), relaxed SIMD where our backend enabled V8's flag` : 'no Web Worker in Node, so one thread')
      : "our Dawn adapter as navigator.gpu (bench/peers/dawn.ts), which its README lists as unsupported in Node; without featureLevel 'compatibility' init() finds no adapter",
    // jit fuses chains of ops; a lone matmul is one kernel either way.
    covers: (w) => !jitted || w.work.kind !== 'matmul',
    async prepare({ work: w }: Workload): Promise<Prepared> {
      const inputs: A[] = [];
      const t = (data: Float32Array, shape: number[]) => {
        const x = np.array(new Float32Array(data), { shape, device });
        inputs.push(x);
        return x;
      };
      /** Outputs of one call, owned by the caller. */
      let call: () => A[];
      let check: (() => A[]) | null = null;
      switch (w.kind) {
        case 'matmul': {
          const [a, b] = [t(w.a, [w.n, w.n]), t(w.b, [w.n, w.n])];
          call = () => [np.matmul(a.ref, b.ref)];
          break;
        }
        case 'softmax': {
          const x = t(w.x, [w.rows, w.cols]);
          const f = (x: A) => jax.nn.softmax(x, -1);
          const fn = jitted ? jax.jit(f) : f;
          call = () => [fn(x.ref)];
          break;
        }
        case 'layerNorm': {
          const [x, g, b] = [t(w.x, [w.rows, w.cols]), t(w.weight, [w.cols]), t(w.bias, [w.cols])];
          const f = (x: A, g: A, b: A) => layerNorm(jax, x, g, b);
          const fn = jitted ? jax.jit(f) : f;
          call = () => [fn(x.ref, g.ref, b.ref)];
          break;
        }
        case 'block': {
          const x = t(w.x, [1, w.seq, w.dim]);
          const params = Object.fromEntries(w.params.map((p) => [p.name, t(p.data, p.shape)])) as Params;
          const fwd = (p: Params, x: A) => blockForward(jax, w, x, p);
          const forward = jitted ? jax.jit(fwd) : fwd;
          if (!w.train) {
            call = () => [forward(refParams(params), x.ref)];
          } else {
            const g = jax.grad((p: Params, x: A) => blockForward(jax, w, x, p).sum());
            const gradsOf = jitted ? jax.jit(g) : g;
            const ordered = (gs: Params) => BLOCK_PARAM_NAMES.map((n) => gs[n]);
            call = () => ordered(gradsOf(refParams(params), x.ref));
            check = () => [forward(refParams(params), x.ref), ...call()];
          }
          break;
        }
      }
      const checkCall = check ?? call;
      return {
        async run() {
          const outs = call();
          await jax.blockUntilReady(outs);
          for (const o of outs) o.dispose();
        },
        async outputs() {
          const data: Float32Array[] = [];
          for (const o of checkCall()) data.push(Float32Array.from(await o.data())); // data() consumes o
          return data;
        },
        dispose() {
          for (const a of inputs) a.dispose();
        },
      };
    },
  };
}

/** jax-js runners, eager and jit, per device that starts; the others with why. */
export async function openJax(gpu: GpuInfo | null): Promise<Opened[]> {
  const library = `jax-js ${installedVersion('@jax-js/jax')}`;
  let jax: Jax;
  let workers = 0;
  try {
    if (gpu) installNavigatorGpu(gpu);
    // its wasm kernels on Web Workers (a worker_threads shim): its fastest configuration here
    workers = process.env.UHD_PEERS_JAX_WORKERS === '0' ? 0 : installWebWorker();
    jax = await import('@jax-js/jax');
  } catch (e) {
    return [{ library, backend: 'all', reason: reason(e) }];
  }
  const out: Opened[] = [];
  for (const device of ['cpu', 'wasm', 'webgpu'] as const) {
    try {
      if (device === 'webgpu' && !gpu) throw new Error('no WebGPU adapter here');
      const started = await jax.init(device);
      if (!started.includes(device)) throw new Error(`init('${device}') did not start it`);
      out.push(runner(jax, device, false, workers));
      if (device !== 'cpu') out.push(runner(jax, device, true, workers));
    } catch (e) {
      out.push({ library, backend: device, reason: reason(e) });
    }
  }
  return out;
}
