/**
 * The compressor variants (llava-uhd/compressors.ts): shapes over grids and multi-view batches,
 * views kept apart, the reuse property where it applies, gradcheck of every variant's parameters,
 * and a whole tiny model per variant forward and backward. All on the CPU (float64).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { saveCheckpointFolder } from '../../llava-uhd/checkpoint-folder.js';
import { loadModel } from '../../llava-uhd/load.js';
import * as ag from '../../autograd/index.js';
import type { Module } from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { COMPRESSOR_NAMES, COMPRESSORS, compressorVariant, type VisionCompressor } from '../../llava-uhd/compressors.js';
import { CONFIGS, parseConfigJson, toMiniCPMVConfig, validateConfig, type LlavaUHDConfig, type VisionConfig } from '../../llava-uhd/config.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { EncoderLayer, type ViewGrid } from '../../llava-uhd/vision.js';
import { expectClose } from '../support.js';

const f64 = { dtype: 'float64' as const };
const TINY = CONFIGS.tiny.vision_config;
const SMALL: VisionConfig = { ...TINY, hidden_size: 4, intermediate_size: 8, num_attention_heads: 2 };

/** Random LayerNorm affines (around 1 and 0) so norms are not the identity. */
function randomiseNorms(m: Module): void {
  ag.noGrad(() => {
    for (const [n, p] of m.namedParameters()) {
      if (/norm\d?\.(weight|bias)$/.test(n)) uhd.assign(p, uhd.randn(p.shape, f64).mul(0.3).add(n.endsWith('weight') ? 1 : 0));
    }
  });
}

function build(name: string, vision: VisionConfig, seed = 3): { c: VisionCompressor; layer: EncoderLayer } {
  uhd.manualSeed(seed);
  const layer = new EncoderLayer(vision, f64);
  randomiseNorms(layer);
  const c = compressorVariant(name).create(vision, f64);
  randomiseNorms(c);
  if (COMPRESSORS[compressorVariant(name).name].reuse !== 'none') c.initFromLayer!(layer);
  return { c, layer };
}

const tokens = (grids: ViewGrid[]) => grids.reduce((n, g) => n + g.h * g.w, 0);

describe('compressor variants', () => {
  it('the registry lists every config name and refuses others naming the allowed ones', () => {
    expect(Object.keys(COMPRESSORS).sort()).toEqual([...COMPRESSOR_NAMES].sort());
    expect(() => compressorVariant('max-pool')).toThrow(/unknown compressor "max-pool"; allowed: avg-pool, .*win-attn-reused/);
    expect(() => validateConfig({ ...CONFIGS.tiny, compressor: 'max-pool' })).toThrow(/compressor: must be one of "avg-pool", .*"win-attn-reused", got "max-pool"/);
  });

  it('the config key round-trips through config.json only when not the default', () => {
    const c: LlavaUHDConfig = { ...structuredClone(CONFIGS.tiny), compressor: 'cross-attn-mean' };
    const j = toMiniCPMVConfig(c);
    expect(j.compressor).toBe('cross-attn-mean');
    expect(parseConfigJson(j, 'config.json').config.compressor).toBe('cross-attn-mean');
    const d = toMiniCPMVConfig({ ...structuredClone(CONFIGS.tiny), compressor: 'win-attn-reused' });
    expect('compressor' in d).toBe(false);
    expect(parseConfigJson({ ...d, compressor: 'win-attn-reused' }, 'config.json').config.compressor).toBeUndefined();
  });

  const gridSets: ViewGrid[][] = [
    [{ h: 2, w: 2 }],
    [{ h: 4, w: 6 }],
    [{ h: 6, w: 4 }, { h: 4, w: 4 }, { h: 4, w: 4 }, { h: 2, w: 8 }],
  ];
  for (const name of COMPRESSOR_NAMES) {
    it(`${name}: quarters every view, keeps views apart`, async () => {
      const { c } = build(name, TINY);
      const d = TINY.hidden_size;
      for (const grids of gridSets) {
        uhd.manualSeed(5);
        const x = uhd.randn([1, tokens(grids), d], f64);
        const y = c.forward(x, grids);
        expect(y.shape).toEqual([1, tokens(grids) / 4, d]);
        if (grids.length < 2) continue;
        // change the second view's tokens only: every other view's outputs stay bit for bit
        const n0 = grids[0].h * grids[0].w;
        const n1 = grids[1].h * grids[1].w;
        const bump = uhd.zeros([1, tokens(grids), d], f64);
        ag.noGrad(() => uhd.assign(bump.narrow(1, n0, n1), uhd.randn([1, n1, d], f64)));
        const y2 = c.forward(x.add(bump), grids);
        const [a, b] = [await y.data(), await y2.data()];
        const lo = (n0 / 4) * d;
        const hi = ((n0 + n1) / 4) * d;
        expect(Array.from(b.slice(0, lo))).toEqual(Array.from(a.slice(0, lo)));
        expect(Array.from(b.slice(hi))).toEqual(Array.from(a.slice(hi)));
        expect(Array.from(b.slice(lo, hi))).not.toEqual(Array.from(a.slice(lo, hi)));
      }
    });
  }

  it('avg-pool is the 2x2 mean and has no parameters', async () => {
    const { c } = build('avg-pool', TINY);
    expect(c.parameters()).toHaveLength(0);
    const x = uhd.tensor([[[1], [2], [3], [4]]], f64); // one 2x2 view, d = 1
    expect(Array.from(await c.forward(x, [{ h: 2, w: 2 }]).data())).toEqual([2.5]);
  });

  for (const name of COMPRESSOR_NAMES.filter((n) => COMPRESSORS[n].reuse === 'layer' || COMPRESSORS[n].reuse === 'mlp')) {
    const kind = COMPRESSORS[name].reuse;
    it(`${name}: reuse-init maps a window of 4 copies of t to ${kind === 'layer' ? 'layer k' : "layer k's MLP block"} on t`, async () => {
      const { c, layer } = build(name, TINY);
      const d = TINY.hidden_size;
      const t4 = uhd.randn([4, d], f64);
      const win = [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3];
      const x = ag.indexSelect(t4, 0, uhd.tensor(win, { dtype: 'int32' })).reshape(1, 16, d);
      const out = await c.forward(x, [{ h: 4, w: 4 }]).data();
      for (let w = 0; w < 4; w++) {
        const t = t4.narrow(0, w, 1).reshape(1, 1, d);
        const expected = await (kind === 'layer' ? layer.forward(t, uhd.zeros([1, 1], { dtype: 'int32' })) : layer.mlpBlock(t)).data();
        expectClose(out.slice(w * d, (w + 1) * d), expected, { atol: 1e-10, rtol: 1e-10 }, `window ${w}`);
      }
    });
  }

  it('win-attn-mlp: reuse copies layer k attention only', async () => {
    const { c, layer } = build('win-attn-mlp', TINY);
    const sd = c.stateDict();
    expect(Array.from(await sd.get('self_attn.q_proj.weight')!.data())).toEqual(Array.from(await layer.self_attn.q_proj.weight.data()));
    expect([...sd.keys()].filter((k) => k.startsWith('merger.'))).toEqual(['merger.pre_norm.weight', 'merger.pre_norm.bias', 'merger.linear_1.weight', 'merger.linear_1.bias', 'merger.linear_2.weight', 'merger.linear_2.bias']);
  });

  for (const name of COMPRESSOR_NAMES.filter((n) => n !== 'avg-pool')) {
    it(`${name}: gradcheck of every parameter (d 4, two views)`, () => {
      const { c } = build(name, SMALL, 9);
      const grids: ViewGrid[] = [{ h: 2, w: 4 }, { h: 2, w: 2 }];
      const x = uhd.randn([1, tokens(grids), SMALL.hidden_size], f64);
      // the module's fields that hold its parameters, to swap in gradcheck's copies
      const params = new Set(c.parameters());
      const slots: [Record<string, Tensor>, string][] = [];
      for (const [, m] of c.namedModules()) {
        const fields = m as unknown as Record<string, Tensor>;
        for (const k of Object.keys(fields)) if (params.has(fields[k])) slots.push([fields, k]);
      }
      expect(slots).toHaveLength(params.size);
      const r = ag.gradcheck((...ws: Tensor[]) => {
        const saved = slots.map(([o, k]) => o[k]);
        slots.forEach(([o, k], i) => (o[k] = ws[i]));
        try {
          return c.forward(x, grids);
        } finally {
          slots.forEach(([o, k], i) => (o[k] = saved[i]));
        }
      }, slots.map(([o, k]) => o[k]));
      expect(r.checked).toBe([...params].reduce((n, p) => n + p.size, 0));
    });
  }

  for (const name of COMPRESSOR_NAMES) {
    it(`${name}: a whole tiny model runs forward and backward`, async () => {
      uhd.manualSeed(1);
      const m = new LlavaUHD({ ...structuredClone(CONFIGS.tiny), compressor: name }, f64);
      const views = [uhd.randn([3, 112, 112], f64), uhd.randn([3, 56, 112], f64)];
      const v = m.encodeViews(views);
      expect(v.tokensPerView).toEqual([4, 2]);
      const loss = ag.sum(ag.mul(v.features, v.features));
      loss.backward();
      const withGrad = m.parameters().filter((p) => p.grad).length;
      expect(withGrad).toBeGreaterThan(0);
      // D's layer_norm2 / mlp are the release's unused copies of layer k's: they get no gradient
      const used = [...m.vit_merger!.namedParameters()].filter(([n]) => name !== 'win-attn-reused' || !/^(layer_norm2|mlp)\./.test(n));
      expect(used.length > 0).toBe(name !== 'avg-pool');
      for (const [n, p] of used) expect(p.grad, n).toBeTruthy();
      expect(m.vpm.embeddings.patch_embedding.parameters().every((p) => p.grad)).toBe(true);
    });
  }

  for (const name of ['avg-pool', 'cross-attn-mean', 'win-attn-mlp'] as const) {
    it(`${name}: a checkpoint folder keeps the variant and its weights`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'uhd-variant-'));
      try {
        uhd.manualSeed(2);
        const m = new LlavaUHD({ ...structuredClone(CONFIGS.tiny), compressor: name });
        randomiseNorms(m);
        await saveCheckpointFolder(m, dir);
        const { model } = await loadModel({ weights: dir, device: 'cpu' });
        expect(model.config.compressor).toBe(name);
        expect([...model.stateDict().keys()]).toEqual([...m.stateDict().keys()]);
        uhd.manualSeed(3);
        const view = uhd.randn([3, 112, 112]);
        expect(Array.from(await model.encodeViews([view]).features.data())).toEqual(Array.from(await m.encodeViews([view]).features.data()));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
