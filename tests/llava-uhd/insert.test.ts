/**
 * Inserting a compressor into a pretrained baseline (llava-uhd/insert.ts) and the step-0 feature
 * agreement. CPU, float32, the tiny baseline.
 */
import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import type { RgbImage } from '../../llava-uhd/image.js';
import { featureAgreement, insertCompressor } from '../../llava-uhd/insert.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import type { StageSpec } from '../../llava-uhd/recipe.js';
import { ByteTokenizer } from '../../llava-uhd/tokenizer.js';
import type { Dataset } from '../../llava-uhd/train.js';

const f32 = { dtype: 'float32' as const }; // train.ts's loss runs in float32
const tok = new ByteTokenizer();
const stage: StageSpec = { name: 'ft', trainable: ['vit', 'compressor', 'connector', 'llm'], lr: 1e-3, steps: 1, max_slices: 1, batch_size: 1 } as StageSpec;

function baseline(): LlavaUHD {
  uhd.manualSeed(7);
  const m = new LlavaUHD(structuredClone(CONFIGS['tiny-baseline']), f32);
  // random LayerNorm affines, so no norm is the identity
  ag.noGrad(() => {
    for (const [n, p] of m.namedParameters()) {
      if (/norm\d?\.(weight|bias)$/.test(n)) uhd.assign(p, uhd.randn(p.shape, f32).mul(0.3).add(n.endsWith('weight') ? 1 : 0));
    }
  });
  return m;
}

/** Images of 112 x 112 px; with `blocks`, every 28 x 28 block (a 2x2 window of patches) one colour. */
function images(n: number, blocks: boolean): Dataset {
  return {
    size: n,
    get(i: number) {
      let s = 1 + i * 7919;
      const rnd = () => ((s = (s * 48271) % 2147483647) % 256);
      const side = 112;
      const data = new Uint8Array(side * side * 3);
      const cell = blocks ? 28 : 1;
      const colours = new Map<number, number[]>();
      for (let y = 0; y < side; y++) {
        for (let x = 0; x < side; x++) {
          const key = Math.floor(y / cell) * side + Math.floor(x / cell);
          if (!colours.has(key)) colours.set(key, [rnd(), rnd(), rnd()]);
          data.set(colours.get(key)!, (y * side + x) * 3);
        }
      }
      const image = { width: side, height: side, data } as RgbImage;
      return { images: [image], turns: [{ role: 'user', content: '<image>\nColour?' }, { role: 'assistant', content: 'red' }], answer: 'red', type: 'colour' };
    },
  } as Dataset;
}

async function snapshot(m: LlavaUHD): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (const [n, t] of m.stateDict()) out.set(n, Array.from(await t.data()));
  return out;
}

describe('insertCompressor', () => {
  it('returns a new model: tower and LLM copied, the connector from the last round, the baseline untouched', async () => {
    const base = baseline();
    const before = await snapshot(base);
    const m = insertCompressor(base, { variant: 'win-attn-reused', layer: 2, init: 'random', seed: 3 });
    expect(m.config.insert_layer_id).toBe(2);
    expect(m.config.compressor).toBeUndefined(); // the default is not written
    expect(m.resampler.rounds).toHaveLength(1);
    expect(await snapshot(base)).toEqual(before);
    const sd = await snapshot(m);
    expect(sd.get('vpm.encoder.layers.3.mlp.fc1.weight')).toEqual(before.get('vpm.encoder.layers.3.mlp.fc1.weight'));
    expect(sd.get('llm.model.embed_tokens.weight')).toEqual(before.get('llm.model.embed_tokens.weight'));
    expect(sd.get('resampler.mlp.0.mlp.2.weight')).toEqual(before.get('resampler.mlp.1.mlp.2.weight'));
    expect(sd.get('resampler.mlp.0.pre_norm.bias')).toEqual(before.get('resampler.mlp.1.pre_norm.bias'));
    // random: D's attention is not layer k's; same seed, same D; another seed, another D
    expect(sd.get('vit_merger.self_attn.q_proj.weight')).not.toEqual(before.get('vpm.encoder.layers.2.self_attn.q_proj.weight'));
    const again = await snapshot(insertCompressor(base, { variant: 'win-attn-reused', layer: 2, init: 'random', seed: 3 }));
    expect(again.get('vit_merger.linear_1.weight')).toEqual(sd.get('vit_merger.linear_1.weight'));
    const other = await snapshot(insertCompressor(base, { variant: 'win-attn-reused', layer: 2, init: 'random', seed: 4 }));
    expect(other.get('vit_merger.linear_1.weight')).not.toEqual(sd.get('vit_merger.linear_1.weight'));
    // reuse: D's attention is layer k's
    const r = await snapshot(insertCompressor(base, { variant: 'win-attn-reused', layer: 2, init: 'reuse' }));
    expect(r.get('vit_merger.self_attn.q_proj.weight')).toEqual(before.get('vpm.encoder.layers.2.self_attn.q_proj.weight'));
  });

  it('refuses bad requests naming the bad value', () => {
    const base = baseline();
    expect(() => insertCompressor(base, { variant: 'avg-pool', layer: 1, init: 'reuse' })).toThrow(/avg-pool has no parameter-reuse/);
    expect(() => insertCompressor(base, { variant: 'win-attn-reused', layer: 9, init: 'reuse' })).toThrow(/layer 9 is not a ViT layer index 0..3/);
    const withD = insertCompressor(base, { variant: 'win-attn-reused', layer: 1, init: 'reuse' });
    expect(() => insertCompressor(withD, { variant: 'avg-pool', layer: 1, init: 'random' })).toThrow(/already has a compressor/);
  });
});

describe('featureAgreement', () => {
  it('avg-pool on windows of identical tokens (no position embedding) gives cosine 1 at every layer', async () => {
    const base = baseline();
    ag.noGrad(() => uhd.assign(base.vpm.embeddings.position_embedding.weight, uhd.zeros(base.vpm.embeddings.position_embedding.weight.shape, f32)));
    for (const layer of [0, 2, 3]) {
      const m = insertCompressor(base, { variant: 'avg-pool', layer, init: 'random' });
      const a = await featureAgreement(base, m, images(2, true), { tok, device: 'cpu', stage });
      expect(a.images).toBe(2);
      expect(a.minCosine).toBeGreaterThan(1 - 1e-5);
      expect(Number.isFinite(a.loss) && a.loss > 0).toBe(true);
      // unless the windows differ
      const b = await featureAgreement(base, m, images(2, false), { tok, device: 'cpu', stage });
      expect(b.minCosine).toBeLessThan(1 - 1e-3);
    }
  });

  it('D by reuse stays closer to the baseline than D at random', async () => {
    const base = baseline();
    const data = images(2, false);
    const reuse = await featureAgreement(base, insertCompressor(base, { variant: 'win-attn-reused', layer: 1, init: 'reuse' }), data, { tok, device: 'cpu', stage });
    const random = await featureAgreement(base, insertCompressor(base, { variant: 'win-attn-reused', layer: 1, init: 'random', seed: 1 }), data, { tok, device: 'cpu', stage });
    expect(reuse.cosine).toBeLessThan(1);
    expect(random.cosine).toBeLessThan(reuse.cosine);
    expect(random.minCosine).toBeLessThanOrEqual(reuse.cosine);
  });
});
