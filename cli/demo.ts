/**
 * `uhd demo`: a tour of the runtime on the shapes LLaVA-UHD v4 uses, until the model exists.
 * One image becomes a thumbnail and two slices (three views of patch tokens in one sequence);
 * a pre-norm ViT block attends within each view (segment ids), then the intra-ViT compressor's
 * core (2x2 window attention, pixel-unshuffle, LayerNorm over 4d, MLP, window-mean residual)
 * cuts the tokens 4x. Runs on the CPU and on WebGPU, checks they agree, and times both.
 */
import { initWebGPU, shutdown } from '../kernels/index.js';
import * as uhd from '../tensor/index.js';
import type { Device, Tensor } from '../tensor/index.js';

const D = 64; // width
const HEADS = 4;
const VIEWS = [
  { name: 'thumbnail', h: 8, w: 12 },
  { name: 'slice 1', h: 8, w: 8 },
  { name: 'slice 2', h: 8, w: 8 },
];

interface Weights {
  [name: string]: Tensor;
}

function makeWeights(device: Device): Weights {
  uhd.manualSeed(0);
  const w = (shape: number[], scale: number) => uhd.tidy(() => uhd.randn(shape, { device }).mul(scale));
  return {
    ln1: uhd.ones([D], { device }),
    qkv: w([D, 3 * D], 1 / Math.sqrt(D)),
    proj: w([D, D], 1 / Math.sqrt(D)),
    ln2: uhd.ones([D], { device }),
    fc1: w([D, 4 * D], 1 / Math.sqrt(D)),
    fc2: w([4 * D, D], 1 / Math.sqrt(4 * D)),
    preNorm: uhd.ones([4 * D], { device }),
    lin1: w([4 * D, 4 * D], 1 / Math.sqrt(4 * D)),
    lin2: w([4 * D, D], 1 / Math.sqrt(4 * D)),
  };
}

/** x: [1, S, D] -> heads [1, H, S, D/H] (a view). */
function heads(x: Tensor): Tensor {
  const [, S] = x.shape;
  return x.reshape(1, S, HEADS, D / HEADS).permute(0, 2, 1, 3);
}

function selfAttention(x: Tensor, w: Weights, opts: uhd.AttentionOptions): Tensor {
  const [, S] = x.shape;
  const qkv = x.matmul(w.qkv); // [1, S, 3D]
  const [q, k, v] = [0, 1, 2].map((i) => heads(qkv.narrow(2, i * D, D)));
  const o = uhd.attention(q, k, v, opts).permute(0, 2, 1, 3).reshape(1, S, D);
  return o.matmul(w.proj);
}

/** One ViT block over all views, attention restricted to each view. x: [1, S, D]. */
function vitBlock(x: Tensor, w: Weights, segmentIds: Tensor): Tensor {
  const y = x.add(selfAttention(uhd.layerNorm(x, w.ln1, null, 1e-6), w, { segmentIds }));
  return y.add(uhd.layerNorm(y, w.ln2, null, 1e-6).matmul(w.fc1).gelu('tanh').matmul(w.fc2));
}

/** The compressor's core for one view: [1, h*w, D] -> [1, h*w/4, D]. */
function compress(x: Tensor, h: number, wd: number, w: Weights): Tensor {
  const y = x.add(selfAttention(uhd.layerNorm(x, w.ln1, null, 1e-6), w, { window: { h, w: wd } }));
  const z = uhd.pixelUnshuffle(y, h, wd, 2); // [1, hw/4, 4D]
  const mlp = uhd.layerNorm(z, w.preNorm, null, 1e-6).matmul(w.lin1).gelu('tanh').matmul(w.lin2);
  return uhd.avgPool2x2(y, h, wd).add(mlp);
}

function forward(device: Device, w: Weights, tokens: Tensor): Tensor[] {
  return uhd.tidy(() => {
    const ids = VIEWS.flatMap((v, i) => new Array<number>(v.h * v.w).fill(i));
    const segmentIds = uhd.tensor([ids], { dtype: 'int32', device });
    const x = vitBlock(tokens, w, segmentIds);
    let at = 0;
    return VIEWS.map((v) => {
      const view = x.narrow(1, at, v.h * v.w);
      at += v.h * v.w;
      return compress(view, v.h, v.w, w);
    });
  });
}

export async function demoCommand(): Promise<void> {
  const total = VIEWS.reduce((n, v) => n + v.h * v.w, 0);
  console.log(`uhd demo: ${VIEWS.length} views (${VIEWS.map((v) => `${v.name} ${v.h}x${v.w}`).join(', ')}), ${total} tokens, width ${D}, ${HEADS} heads`);
  let gpuOk = true;
  try {
    const info = await initWebGPU();
    console.log(`webgpu: ${info.backend} (${info.description})`);
  } catch (e) {
    gpuOk = false;
    console.log(`webgpu unavailable, CPU only: ${(e as Error).message.split('\n')[0]}`);
  }
  try {
    const results: Record<string, Float32Array[]> = {};
    for (const device of gpuOk ? (['cpu', 'webgpu'] as const) : (['cpu'] as const)) {
      const w = makeWeights(device);
      uhd.manualSeed(1);
      const tokens = uhd.randn([1, total, D], { device });
      forward(device, w, tokens).forEach((t) => t.dispose()); // warm-up: compiles pipelines
      const t0 = performance.now();
      const outs = forward(device, w, tokens);
      const data = await Promise.all(outs.map(async (t) => Float32Array.from(await t.data())));
      const ms = performance.now() - t0;
      results[device] = data;
      console.log(`${device.padEnd(6)} ViT block + compressor: ${ms.toFixed(1)} ms; tokens per view ${VIEWS.map((v) => v.h * v.w).join('/')} -> ${outs.map((t) => t.shape[1]).join('/')}`);
      for (const t of [...outs, tokens, ...Object.values(w)]) t.dispose();
    }
    if (results.webgpu) {
      let maxDiff = 0;
      results.cpu.forEach((a, i) => a.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - results.webgpu[i][j])))));
      console.log(`cpu vs webgpu: max |difference| ${maxDiff.toExponential(2)} ${maxDiff < 1e-3 ? '(agree)' : '(DISAGREE)'}`);
      if (maxDiff >= 1e-3) process.exitCode = 1;
    }
    console.log(`live tensors after the run: cpu ${uhd.memory().cpu.tensors}, webgpu ${uhd.memory().webgpu.tensors}`);
  } finally {
    shutdown();
  }
}
