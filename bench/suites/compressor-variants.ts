/**
 * The compressor variants (llava-uhd/compressors.ts) alone: one 32x32-token view at the vit-encode
 * suite's mid width (d 384, f 1536, 6 heads), forward under no-grad, on each bench device, next
 * to the FLOPs model's MACs (flops.ts): is the cheaper variant also the faster one here?
 */
import * as ag from '../../autograd/index.js';
import { COMPRESSOR_NAMES, compressorVariant } from '../../llava-uhd/compressors.js';
import { CONFIGS, type VisionConfig } from '../../llava-uhd/config.js';
import { viewFlops } from '../../llava-uhd/flops.js';
import * as uhd from '../../tensor/index.js';
import { BENCH_DEVICES, type BenchCase, type BenchRow } from '../harness.js';

export const name = 'compressor-variants';

const VISION: VisionConfig = { hidden_size: 384, intermediate_size: 1536, num_hidden_layers: 4, num_attention_heads: 6, patch_size: 14, num_channels: 3, layer_norm_eps: 1e-6, position_embedding_side: 32 };
const SIDE = 32; // tokens per side: a 448x448 view
const grids = [{ h: SIDE, w: SIDE }];

/** The variant's MACs on this view, from the FLOPs model. */
function macs(variant: string): number {
  const config = { ...CONFIGS.tiny, vision_config: VISION, insert_layer_id: 0, compressor: variant as never };
  const r = viewFlops(config, { width: SIDE * 14, height: SIDE * 14 }, { scope: 'tower' });
  return r.byGroup.compressor;
}

export function cases(): BenchCase[] {
  const out: BenchCase[] = [];
  for (const device of BENCH_DEVICES) {
    for (const v of COMPRESSOR_NAMES) {
      out.push({
        name: `${v} ${SIDE}x${SIDE} tok d 384`,
        device,
        ...(v !== 'avg-pool' && { flops: 2 * macs(v) }),
        setup: () => {
          uhd.manualSeed(0);
          const c = compressorVariant(v).create(VISION, { device });
          const x = uhd.randn([1, SIDE * SIDE, VISION.hidden_size], { device });
          return () => ag.noGrad(() => c.forward(x, grids));
        },
      });
    }
  }
  return out;
}

/** Time of each variant relative to D's, next to the MACs ratio. */
export function summarize(rows: BenchRow[]): string {
  const lines = ['| variant | device | MACs (M) | MACs / D | time / D |', '|---|---|---:|---:|---:|'];
  const dMacs = macs('win-attn-reused');
  for (const device of BENCH_DEVICES) {
    const d = rows.find((r) => r.device === device && r.name.startsWith('win-attn-reused '));
    if (!d) continue;
    for (const v of COMPRESSOR_NAMES) {
      const r = rows.find((x) => x.device === device && x.name.startsWith(`${v} `));
      if (!r) continue;
      lines.push(`| ${v} | ${device} | ${(macs(v) / 1e6).toFixed(1)} | ${(macs(v) / dMacs).toFixed(2)} | ${(r.medianMs / d.medianMs).toFixed(2)} |`);
    }
  }
  return lines.join('\n');
}
