/** The memory estimate's arithmetic (llava-uhd/memory-estimate.ts), and its parameter counts against real models. */
import { describe, expect, it, vi } from 'vitest';
import { infoCommand } from '../../cli/info.js';
import { CONFIGS, type LlavaUHDConfig } from '../../llava-uhd/config.js';
import { countParameters, estimateMemory, parseGpuMemory, savedPerTokenLlm, stageTokens } from '../../llava-uhd/memory-estimate.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { MODULES, type ModuleName, type Recipe } from '../../llava-uhd/train.js';

/** Elements per module group of a real model (vit without the position embedding, as the estimate splits them). */
function realCounts(config: LlavaUHDConfig): Record<ModuleName, number> {
  const model = new LlavaUHD(structuredClone(config));
  const out = { vit: 0, vit_position_embedding: 0, compressor: 0, connector: 0, llm: 0 };
  const seen = new Set();
  for (const [name, p] of model.namedParameters()) {
    if (seen.has(p)) continue;
    seen.add(p);
    const m = MODULES.vit_position_embedding(name) ? 'vit_position_embedding' : (Object.keys(MODULES) as ModuleName[]).find((k) => k !== 'vit_position_embedding' && MODULES[k](name));
    expect(m, name).toBeDefined();
    out[m!] += p.size;
  }
  for (const p of model.parameters()) p.dispose();
  return out;
}

const WIDER: LlavaUHDConfig = {
  ...CONFIGS.tiny,
  vision_config: { ...CONFIGS.tiny.vision_config, hidden_size: 40, intermediate_size: 72, num_hidden_layers: 3, position_embedding_side: 9 },
  text_config: { ...CONFIGS.tiny.text_config, hidden_size: 64, intermediate_size: 80, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 1, head_dim: 16, tie_word_embeddings: false },
  insert_layer_id: 0,
};

describe('memory estimate', () => {
  for (const [name, config] of [['tiny', CONFIGS.tiny], ['tiny-baseline', CONFIGS['tiny-baseline']], ['wider, untied LM head, D after layer 0', WIDER]] as const) {
    it(`counts exactly the parameters a real model has, per module: ${name}`, () => {
      const p = countParameters(config);
      const real = realCounts(config);
      for (const m of Object.keys(real) as ModuleName[]) expect(p.matrices[m] + p.vectors[m], m).toBe(real[m]);
      expect(p.total).toBe(Object.values(real).reduce((a, b) => a + b, 0));
    });
  }

  it('weights, optimizer state and activations follow the stated byte counts', () => {
    const recipe: Recipe = { name: 'r', stages: [
      { name: 'a', trainable: ['connector'], lr: 1, min_lr: 0, warmup_steps: 0, steps: 1, max_slices: 1, batch_size: 2 },
      { name: 'b', trainable: ['vit', 'llm'], lr: 1, min_lr: 0, warmup_steps: 0, steps: 1, max_slices: 4, batch_size: 1 },
    ] };
    const c = WIDER;
    const p = countParameters(c);
    const e = estimateMemory(c, { dtype: 'bfloat16', recipe, textTokens: 10 });
    const line = (s: { lines: { what: string; bytes: number }[] }, prefix: string) => s.lines.find((l) => l.what.startsWith(prefix))!.bytes;
    // inference: matrices 2 bytes, vectors 4
    expect(line(e.inference, 'weights: llm')).toBe(p.matrices.llm * 2 + p.vectors.llm * 4);
    // stage a: the connector trains in float32 with grad and two moments; the rest is frozen in bf16
    const [a, b] = e.stages;
    expect(line(a, 'trainable parameters')).toBe(16 * (p.matrices.connector + p.vectors.connector));
    expect(line(a, 'frozen: vit')).toBe(p.matrices.vit * 2 + p.vectors.vit * 4);
    // stage b: 'vit' trains the position embedding too
    expect(line(b, 'trainable parameters')).toBe(16 * (p.matrices.vit + p.vectors.vit + p.matrices.vit_position_embedding + p.matrices.llm + p.vectors.llm));
    expect(b.lines.some((l) => l.what.startsWith('frozen: vit_position_embedding'))).toBe(false);
    // tokens: views x (S/14)^2 patches, 16x fewer for the LLM, plus the text
    const tok = stageTokens(c, recipe.stages[1], 10);
    const patches = (c.slice_config.scale_resolution / 14) ** 2;
    expect(tok).toEqual({ vit: 5 * patches, llm: 5 * patches / 16 + 10 });
    expect(line(b, 'LLM activations')).toBe(tok.llm * c.text_config.num_hidden_layers * savedPerTokenLlm(c.text_config) * 4);
    // checkpointing keeps less, and totals add their lines
    expect(b.checkpointed!.total).toBeLessThan(b.total);
    expect(b.total).toBe(b.lines.reduce((n, l) => n + l.bytes, 0));
  });

  it('says whether each scenario fits a GPU, with a 10% margin', () => {
    const recipe = { name: 'r', stages: [{ name: 's', trainable: ['llm'], lr: 1, min_lr: 0, warmup_steps: 0, steps: 1, max_slices: 1, batch_size: 1 }] } as Recipe;
    const e0 = estimateMemory(CONFIGS.tiny, { dtype: 'float32', recipe });
    const need = e0.stages[0].total;
    const fits = estimateMemory(CONFIGS.tiny, { dtype: 'float32', recipe, gpuBytes: need * 1.1 });
    const tight = estimateMemory(CONFIGS.tiny, { dtype: 'float32', recipe, gpuBytes: need * 1.05 });
    expect(fits.gpu!.stages[0].fits).toBe(true);
    expect(tight.gpu!.stages[0].fits).toBe(false);
  });

  it('parses GPU sizes and names, and names the flag on nonsense', () => {
    expect(parseGpuMemory('80GiB')).toBe(80 * 2 ** 30);
    expect(parseGpuMemory('141GB')).toBe(141e9);
    expect(parseGpuMemory('H200')).toBe(139 * 2 ** 30);
    expect(() => parseGpuMemory('lots')).toThrow(/--gpu-memory: 'lots' is neither a size .* nor a known card/);
  });

  it('uhd info --model prints the estimate (the paper model: ~8.75B parameters, bf16 inference fits an H200)', async () => {
    const out: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((s: string) => void out.push(s));
    try {
      await infoCommand({ model: 'llava-uhd-v4', dtype: 'bf16', gpuMemory: 'h200', json: true });
    } finally {
      log.mockRestore();
    }
    const e = JSON.parse(out.join('\n'));
    expect(e.parameters.total / 1e9).toBeCloseTo(8.75, 1);
    expect(e.gpu.inference).toBe(true);
    expect(e.stages.map((s: { name: string }) => s.name.split(' ')[1])).toEqual(["'alignment'", "'knowledge'", "'interleaved'", "'instruction'"]);
  });
});
