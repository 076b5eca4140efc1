/**
 * `uhd demo`: a tour of the runtime on LLaVA-UHD v4's own modules. One synthetic image is
 * sliced into a thumbnail and slices, and the tiny model's vision tower (with the compressor
 * D after layer 1) and connector encode all views in one sequence, on the CPU and on WebGPU;
 * the two are compared and timed.
 */
import * as ag from '../autograd/index.js';
import { closeDevice as shutdown, openDevice } from '../backends/index.js';
import { initWebGPU } from '../kernels/index.js';
import { CONFIGS } from '../llava-uhd/config.js';
import { generateSample } from '../llava-uhd/data/synthetic.js';
import { LlavaUHD } from '../llava-uhd/model.js';
import { prepareImage, viewPixels } from '../llava-uhd/preprocess.js';
import * as uhd from '../tensor/index.js';
import type { Device } from '../tensor/index.js';

export async function demoCommand(): Promise<void> {
  const sample = generateSample(0, 'test');
  const config = structuredClone(CONFIGS.tiny);
  const prepared = prepareImage(sample.image, config);
  const p = prepared.plan;
  console.log(
    `uhd demo: a ${sample.image.width}x${sample.image.height} image -> thumbnail ${p.thumbnail.width}x${p.thumbnail.height}` +
      (p.grid ? ` + ${p.grid.cols}x${p.grid.rows} slices of ${p.slice!.width}x${p.slice!.height}` : '') +
      `, ${prepared.views.length} views through the tiny tower (D after layer ${config.insert_layer_id}) and connector`,
  );
  const devices: Device[] = ['cpu', 'wasm', 'webgpu'];
  await openDevice('wasm');
  try {
    const info = await initWebGPU();
    console.log(`webgpu: ${info.backend} (${info.description})`);
  } catch (e) {
    devices.pop();
    console.log(`webgpu unavailable: ${(e as Error).message.split('\n')[0]}`);
  }
  try {
    const results: Float32Array[] = [];
    for (const device of devices) {
      uhd.manualSeed(0);
      const model = new LlavaUHD(structuredClone(config), { device });
      const pixels = viewPixels(prepared.views, device);
      // tidy frees the intermediates, keeping what is returned
      const encode = () => ag.noGrad(() => uhd.tidy(() => model.encodeViews(pixels)));
      encode().features.dispose(); // warm-up: compiles pipelines
      const t0 = performance.now();
      const v = encode();
      const data = Float32Array.from(await v.features.data());
      const ms = performance.now() - t0;
      results.push(data);
      console.log(`${device.padEnd(6)} encode: ${ms.toFixed(1)} ms; LLM tokens per view ${v.tokensPerView.join('/')} (from ${prepared.views.map((x) => (x.width / 14) * (x.height / 14)).join('/')} patches)`);
      v.features.dispose();
      for (const t of pixels) t.dispose();
      model.dispose();
    }
    for (let d = 1; d < results.length; d++) {
      let maxDiff = 0;
      results[0].forEach((a, i) => (maxDiff = Math.max(maxDiff, Math.abs(a - results[d][i]))));
      console.log(`cpu vs ${devices[d]}: max |difference| ${maxDiff.toExponential(2)} ${maxDiff < 1e-3 ? '(agree)' : '(DISAGREE)'}`);
      if (maxDiff >= 1e-3) process.exitCode = 1;
    }
    console.log(`live tensors after the run: ${devices.map((d) => `${d} ${uhd.memory(d).tensors}`).join(', ')}`);
  } finally {
    shutdown();
  }
}
