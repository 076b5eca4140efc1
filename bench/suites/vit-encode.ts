/**
 * ViT encode of one image view: LLaVA-UHD v4 with the compressor D against the post-ViT
 * baseline, same width and depth, on the CPU and WebGPU, next to the FLOPs model's predicted
 * ratio, so one sees whether the FLOPs saving becomes a time saving.
 */
import * as ag from '../../autograd/index.js';
import { CONFIGS, type LlavaUHDConfig } from '../../llava-uhd/config.js';
import { viewFlops } from '../../llava-uhd/flops.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import * as uhd from '../../tensor/index.js';
import type { Device } from '../../tensor/index.js';
import { BENCH_DEVICES, type BenchCase, type BenchRow } from '../harness.js';

export const name = 'vit-encode';

/** A mid-size tower: width 384, 12 layers (k = 3, a quarter of the depth as the paper's 6 of 27). */
const MID: LlavaUHDConfig = {
  ...CONFIGS.tiny,
  vision_config: { hidden_size: 384, intermediate_size: 1536, num_hidden_layers: 12, num_attention_heads: 6, patch_size: 14, num_channels: 3, layer_norm_eps: 1e-6, position_embedding_side: 32 },
  insert_layer_id: 3,
};
const TINY: LlavaUHDConfig = { ...CONFIGS.tiny, insert_layer_id: 1 };

const SETTINGS: { label: string; config: LlavaUHDConfig; side: number }[] = [
  { label: 'tiny d=32 L=4 k=1', config: TINY, side: 224 },
  { label: 'mid d=384 L=12 k=3', config: MID, side: 448 },
];

function encodeCase(label: string, config: LlavaUHDConfig, side: number, device: Device): BenchCase {
  const flops = 2 * viewFlops(config, { width: side, height: side }).visualEncoding;
  return {
    name: `${label} ${config.insert_layer_id === null ? 'baseline' : 'D'} ${side}x${side}`,
    device,
    flops,
    setup: () => {
      uhd.manualSeed(0);
      const model = new LlavaUHD(structuredClone(config), { device });
      const px = uhd.randn([3, side, side], { device });
      return () => ag.noGrad(() => model.encodeViews([px]).features);
    },
  };
}

export function cases(): BenchCase[] {
  const out: BenchCase[] = [];
  for (const device of BENCH_DEVICES) {
    for (const s of SETTINGS) {
      out.push(encodeCase(s.label, s.config, s.side, device));
      out.push(encodeCase(s.label, { ...s.config, insert_layer_id: null }, s.side, device));
    }
  }
  return out;
}

/** Baseline/D time ratios next to the FLOPs model's. */
export function summarize(rows: BenchRow[]): string {
  const lines = ['| setting | device | FLOPs ratio baseline/D | measured time ratio baseline/D |', '|---|---|---:|---:|'];
  for (const device of BENCH_DEVICES) {
    for (const s of SETTINGS) {
      const d = rows.find((r) => r.device === device && r.name.startsWith(s.label) && r.name.includes(' D '));
      const b = rows.find((r) => r.device === device && r.name.startsWith(s.label) && r.name.includes(' baseline '));
      if (!d || !b) continue;
      const view = { width: s.side, height: s.side };
      const predicted = viewFlops({ ...s.config, insert_layer_id: null }, view).visualEncoding / viewFlops(s.config, view).visualEncoding;
      lines.push(`| ${s.label} ${s.side}x${s.side} | ${device} | ${predicted.toFixed(2)} | ${(b.medianMs / d.medianMs).toFixed(2)} |`);
    }
  }
  return lines.join('\n');
}
