/**
 * The FLOPs model (LLAVA-UHD-V4.md, "FLOPs model"): hand-computed MACs for the tiny config on a
 * 112x112 view, the baseline's shape (no D, two connector rounds), the properties the paper's
 * argument rests on (saving at k = 6, less saving for later k, windows cheaper than dense), and
 * the `uhd flops` command.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { flopsReport, formatFlops, parseView } from '../../cli/flops.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { compareWithBaseline, PAPER_COUNTING, paperComparison, viewFlops, type ImageComparison, type ModuleFlops } from '../../llava-uhd/flops.js';

const tiny = CONFIGS.tiny;
const paper = CONFIGS['llava-uhd-v4'];
const view112 = { width: 112, height: 112 };

// Tiny config by hand: ViT d = 32, f = 64, 2 heads of 16, 4 layers, D after layer 1; LLM width
// 48, MLP 96, 4 q heads / 2 kv heads of 12, 2 layers, vocab 384. A 112x112 view is 8x8 = 64
// patch tokens; after D 16; after the connector 4 LLM tokens.
const d = 32, f = 64, heads = 2, hd = 16, N = 64;
const linear = (t: number, i: number, o: number) => t * i * o;
/** A full ViT layer on T tokens of one view: 4 projections, QK^T + AV per head, 4 ops/score/head, MLP. */
const vitLayer = (t: number) => 4 * linear(t, d, d) + 2 * heads * t * t * hd + 4 * heads * t * t + linear(t, d, f) + linear(t, f, d);
const patchEmbedding = linear(N, 3 * 14 * 14, d); // 1_204_224
/** D on N tokens: projections at N, attention with `keys` keys per query, MLP on N/4 merged tokens. */
const compressorMacs = (keys: number) =>
  4 * linear(N, d, d) + 2 * heads * N * keys * hd + 4 * heads * N * keys + linear(N / 4, 4 * d, 4 * f) + linear(N / 4, 4 * f, d);
/** One connector round producing `out` tokens of width `width`. */
const round = (out: number, width: number) => linear(out, 4 * d, 4 * d) + linear(out, 4 * d, width);
/** A Qwen3 layer on T = 4 tokens, context c: GQA projections, causal scores, SwiGLU. */
const llmLayer = (t: number, c: number) => {
  const scores = t * c + (t * (t + 1)) / 2;
  return linear(t, 48, 48) + 2 * linear(t, 48, 24) + linear(t, 48, 48) + 2 * 4 * scores * 12 + 4 * 4 * scores + 3 * linear(t, 48, 96);
};

const sum = (rows: ModuleFlops[]) => rows.reduce((s, m) => s + m.macs, 0);

describe('tiny config, 112x112 view, hand-computed', () => {
  it('the formulas above give the numbers worked out on paper', () => {
    expect(patchEmbedding).toBe(1_204_224);
    expect(vitLayer(64)).toBe(819_200); // 262144 proj + 262144 QK/AV + 32768 softmax + 262144 MLP
    expect(vitLayer(16)).toBe(149_504);
    expect(compressorMacs(4)).toBe(935_936);
    expect(compressorMacs(64)).toBe(1_212_416);
    expect(round(4, 48)).toBe(90_112);
    expect(llmLayer(4, 0)).toBe(84_064);
  });

  it('with D at k = 1: every row, in order, at its token count', () => {
    const r = viewFlops(tiny, view112);
    expect(r.patches).toEqual({ h: 8, w: 8, n: 64 });
    expect(r.insertLayer).toBe(1);
    expect(r.llmTokens).toBe(4);
    const rows = r.modules.map((m) => [m.name, m.layer ?? null, m.tokens, m.macs]);
    expect(rows).toEqual([
      ['embeddings.patch_embedding', null, 64, patchEmbedding],
      ['encoder.layers', 0, 64, vitLayer(64)],
      ['encoder.layers', 1, 64, vitLayer(64)],
      ['vit_merger', null, 64, compressorMacs(4)],
      ['encoder.layers', 2, 16, vitLayer(16)],
      ['encoder.layers', 3, 16, vitLayer(16)],
      ['resampler', 0, 16, round(4, 48)],
      ['llm.layers', 0, 4, llmLayer(4, 0)],
      ['llm.layers', 1, 4, llmLayer(4, 0)],
    ]);
    expect(r.byGroup).toEqual({
      vit: patchEmbedding + 2 * vitLayer(64) + 2 * vitLayer(16),
      compressor: compressorMacs(4),
      connector: round(4, 48),
      llm: 2 * llmLayer(4, 0),
    });
    expect(r.visualEncoding).toBe(4_167_680);
    expect(r.total).toBe(4_167_680 + 168_128);
  });

  it('D parts: linear_1 [4f, 4d] and linear_2 [d, 4f] run on the N/4 merged tokens, attention on 4 keys', () => {
    const D = viewFlops(tiny, view112).modules.find((m) => m.name === 'vit_merger')!;
    expect(D.tokensOut).toBe(16);
    expect(D.parts).toEqual({
      q_proj: 65_536, k_proj: 65_536, v_proj: 65_536, out_proj: 65_536,
      attn_qk: 8_192, attn_av: 8_192, attn_softmax: 2_048,
      linear_1: 524_288, linear_2: 131_072,
    });
    expect(D.scoreOps).toBe(2_048);
    expect(D.matmulMacs).toBe(D.macs - 2_048);
  });

  it('dense-window counting changes only D\'s attention terms', () => {
    const w = viewFlops(tiny, view112);
    const dn = viewFlops(tiny, view112, { denseWindow: true });
    const Dd = dn.modules.find((m) => m.group === 'compressor')!;
    expect(Dd.macs).toBe(compressorMacs(N));
    expect(Dd.parts.attn_qk).toBe(heads * N * N * hd);
    expect(dn.visualEncoding - w.visualEncoding).toBe(compressorMacs(N) - compressorMacs(4));
    expect(dn.byGroup.vit).toBe(w.byGroup.vit);
  });

  it('the baseline has no compressor rows, all layers at N, and two connector merge rounds', () => {
    const r = viewFlops(tiny, view112, { insertLayer: null });
    expect(r.modules.filter((m) => m.group === 'compressor')).toEqual([]);
    expect(r.modules.filter((m) => m.name === 'encoder.layers').map((m) => m.tokens)).toEqual([64, 64, 64, 64]);
    const conn = r.modules.filter((m) => m.group === 'connector');
    expect(conn.map((m) => [m.layer, m.tokens, m.tokensOut, m.macs])).toEqual([
      [0, 64, 16, round(16, d)], // 2x2 merge, back to width d
      [1, 16, 4, round(4, 48)], //  2x2 merge again, to the LLM width
    ]);
    expect(r.llmTokens).toBe(4);
    expect(r.visualEncoding).toBe(patchEmbedding + 4 * vitLayer(64) + round(16, d) + round(4, 48));
    expect(r.visualEncoding).toBe(4_898_816);
    // The same as the named baseline config.
    expect(viewFlops(CONFIGS['tiny-baseline'], view112).modules).toEqual(r.modules);
  });

  it('compareWithBaseline: visual-encoding headline and with-LLM totals, in GMACs', () => {
    const c = compareWithBaseline(tiny, view112);
    expect(c.total_gmacs).toBeCloseTo(4_167_680 / 1e9, 15);
    expect(c.baseline_gmacs).toBeCloseTo(4_898_816 / 1e9, 15);
    expect(c.reduction_pct).toBeCloseTo((100 * (4_898_816 - 4_167_680)) / 4_898_816, 10);
    expect(c.total_with_llm_gmacs).toBeCloseTo((4_167_680 + 168_128) / 1e9, 15);
    expect(c.baseline_with_llm_gmacs).toBeCloseTo((4_898_816 + 168_128) / 1e9, 15);
    expect(c.reduction_with_llm_pct).toBeLessThan(c.reduction_pct);
    expect(c.by_group_gmacs.llm).toBe(c.baseline_by_group_gmacs.llm);
    expect(c.modules.every((m) => m.gmacs === m.macs / 1e9)).toBe(true);
    expect(c.baseline_modules.some((m) => m.group === 'compressor')).toBe(false);
  });

  it('LLM: context tokens add causal scores, the LM head is optional', () => {
    const base = viewFlops(tiny, view112);
    const ctx = viewFlops(tiny, view112, { contextTokens: 10 });
    expect(ctx.byGroup.llm).toBe(2 * llmLayer(4, 10));
    expect(ctx.modules.find((m) => m.name === 'llm.layers')!.parts.attn_softmax).toBe(4 * 4 * (4 * 10 + 10));
    const head = viewFlops(tiny, view112, { lmHead: true });
    expect(head.byGroup.llm - base.byGroup.llm).toBe(linear(4, 48, 384));
    expect(head.visualEncoding).toBe(base.visualEncoding);
  });

  it('a non-square view: 168x112 is 8 rows x 12 cols of patches', () => {
    const r = viewFlops(tiny, { width: 168, height: 112 });
    expect(r.patches).toEqual({ h: 8, w: 12, n: 96 });
    expect(r.llmTokens).toBe(6);
  });
});

describe('properties', () => {
  const views = [{ width: 448, height: 448 }, { width: 616, height: 336 }, { width: 112, height: 56 * 9 }];

  it('every row: macs = matmulMacs + scoreOps = sum of parts; the rows sum to the total', () => {
    for (const cfg of [tiny, paper]) {
      for (const insertLayer of [null, 0, 3]) {
        const r = viewFlops(cfg, { width: 448, height: 336 }, { insertLayer, contextTokens: 7, lmHead: true });
        for (const m of r.modules) {
          expect(m.macs).toBe(m.matmulMacs + m.scoreOps);
          expect(m.macs).toBe(Object.values(m.parts).reduce((a, b) => a + b, 0));
          expect(Number.isSafeInteger(m.macs)).toBe(true);
        }
        expect(r.total).toBe(sum(r.modules));
        expect(r.visualEncoding).toBe(r.byGroup.vit + r.byGroup.compressor + r.byGroup.connector);
      }
    }
  });

  it('layers 0..k see all tokens, k+1..L-1 a quarter; the LLM sees 1/16 with D and for the baseline', () => {
    for (const k of [0, 6, 26]) {
      const r = viewFlops(paper, { width: 448, height: 448 }, { insertLayer: k });
      const tokens = r.modules.filter((m) => m.name === 'encoder.layers').map((m) => m.tokens);
      expect(tokens).toEqual(Array.from({ length: 27 }, (_, i) => (i <= k ? 1024 : 256)));
      expect(r.llmTokens).toBe(64);
    }
    expect(viewFlops(paper, { width: 448, height: 448 }, { insertLayer: null }).llmTokens).toBe(64);
  });

  it('the paper\'s config saves visual-encoding MACs at k = 6 (448x448 slice), window-exact and dense', () => {
    const w = compareWithBaseline(paper, { width: 448, height: 448 });
    const dn = compareWithBaseline(paper, { width: 448, height: 448 }, { denseWindow: true });
    expect(w.insert_layer).toBe(6);
    expect(w.reduction_pct).toBeGreaterThan(0);
    expect(dn.reduction_pct).toBeGreaterThan(0);
    // Regression guard for the numbers quoted in the docs (see llava-uhd/flops.ts for why not 56%).
    expect(w.reduction_pct).toBeCloseTo(51.48, 1);
    expect(dn.reduction_pct).toBeCloseTo(50.98, 1);
  });

  it('later insertion saves less: the reduction falls strictly as k grows, for every view and both countings', () => {
    for (const view of views) {
      for (const denseWindow of [false, true]) {
        const red = Array.from({ length: 27 }, (_, k) => compareWithBaseline(paper, view, { insertLayer: k, denseWindow }).reduction_pct);
        for (let k = 0; k + 1 < red.length; k++) expect(red[k + 1], `k ${k} -> ${k + 1}`).toBeLessThan(red[k]);
      }
    }
  });

  it('D\'s windowed attention costs less than dense attention over the view, at every k', () => {
    for (const view of views) {
      for (let k = 0; k < 27; k++) {
        const w = viewFlops(paper, view, { insertLayer: k });
        const dn = viewFlops(paper, view, { insertLayer: k, denseWindow: true });
        expect(w.byGroup.compressor).toBeLessThan(dn.byGroup.compressor);
        expect(w.byGroup.vit).toBe(dn.byGroup.vit);
      }
    }
  });

  it('the baseline compared with itself: reduction 0', () => {
    const c = compareWithBaseline(paper, { width: 448, height: 448 }, { insertLayer: null });
    expect(c.insert_layer).toBe(null);
    expect(c.reduction_pct).toBe(0);
    expect(c.total_gmacs).toBe(c.baseline_gmacs);
  });
});

describe('input errors name what is wrong', () => {
  it.each([
    ['100x100', { width: 100, height: 100 }],
    ['448x100', { width: 448, height: 100 }],
    ['0x56', { width: 0, height: 56 }],
    ['56.5x56', { width: 56.5, height: 56 }],
  ])('view %s is not a multiple of 56', (name, view) => {
    expect(() => viewFlops(paper, view)).toThrow(`flops: view ${name}: each side must be a positive multiple of 56 px (patch 14 x 4)`);
  });
  it('insertLayer out of range', () => {
    expect(() => viewFlops(paper, { width: 448, height: 448 }, { insertLayer: 27 })).toThrow('flops: insertLayer must be null or a layer index 0..26, got 27');
    expect(() => viewFlops(paper, { width: 448, height: 448 }, { insertLayer: -1 })).toThrow('0..26, got -1');
  });
  it('contextTokens negative', () => {
    expect(() => viewFlops(paper, { width: 448, height: 448 }, { contextTokens: -3 })).toThrow('flops: contextTokens must be a non-negative integer, got -3');
  });
});

describe('uhd flops', () => {
  it.each([
    [{ view: 'abc' }, "--view: expected <W>x<H> in pixels, e.g. 448x448, got 'abc'"],
    [{ view: '100x100' }, '--view: flops: view 100x100: each side must be a positive multiple of 56 px'],
    [{ config: 'no-such-model' }, "--config: config: 'no-such-model' is neither a named config"],
    [{ insertLayer: '27' }, "--insert-layer: must be a ViT layer index 0..26 or 'none', got '27'"],
    [{ insertLayer: 'six' }, "--insert-layer: must be a ViT layer index 0..26 or 'none', got 'six'"],
    [{ context: '-1' }, "--context: must be a non-negative integer"],
  ])('%o is rejected', async (opts, message) => {
    await expect(flopsReport(opts)).rejects.toThrow(message);
  });

  it('parses views and overrides k, none giving the baseline', async () => {
    expect(parseView('616x336')).toEqual({ width: 616, height: 336 });
    expect((await flopsReport({ insertLayer: '3' })).insert_layer).toBe(3);
    const none = await flopsReport({ insertLayer: 'none' });
    expect(none.insert_layer).toBe(null);
    expect(none.modules.some((m) => m.group === 'compressor')).toBe(false);
  });

  it('the table has per-layer rows and, with D, the baseline and the reduction', async () => {
    const r = await flopsReport({ config: 'llava-uhd-v4', view: '448x448' });
    const text = formatFlops(r, 'llava-uhd-v4');
    expect(text.split('\n').filter((l) => l.includes('encoder.layers'))).toHaveLength(27);
    expect(text.split('\n').filter((l) => l.includes('llm.layers'))).toHaveLength(36);
    expect(text).toMatch(/vit_merger\s+-\s+1024->256/);
    expect(text).toMatch(/visual encoding \(ViT \+ D \+ conn\.\)\s+241\.660\s+498\.033\s+51\.5%/);
    expect(formatFlops(await flopsReport({ insertLayer: 'none' }), 'llava-uhd-v4')).not.toContain('reduction');
  });

  const dir = mkdtempSync(join(tmpdir(), 'uhd-flops-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const run = promisify(execFile);
  const tsx = join(process.cwd(), 'node_modules', '.bin', 'tsx');

  it('--json prints one object; a config file works like a name', async () => {
    const path = join(dir, 'tiny.json');
    writeFileSync(path, JSON.stringify(tiny));
    const { stdout } = await run(tsx, ['cli/main.ts', 'flops', '--config', path, '--view', '112x112', '--json']);
    const out = JSON.parse(stdout) as Record<string, unknown>;
    expect(out.total_gmacs).toBeCloseTo(4_167_680 / 1e9, 15);
    expect(out.baseline_gmacs).toBeCloseTo(4_898_816 / 1e9, 15);
    expect(typeof out.reduction_pct).toBe('number');
    expect(Array.isArray(out.modules)).toBe(true);
  });

  it('a bad flag exits non-zero with the flag named on stderr', async () => {
    const err = await run(tsx, ['cli/main.ts', 'flops', '--view', '100x100']).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err).not.toBe(null);
    expect(err!.code).not.toBe(0);
    expect(err!.stderr).toContain('uhd flops: --view: flops: view 100x100');
  });
});

describe("the paper's accounting (Figure 2, Table 5)", () => {
  // The paper's numbers, in G (it calls them FLOPs): one 980x980 view, the vision tower alone.
  const PAPER: [number | null, number][] = [[null, 3555.1], [3, 1245.1], [6, 1573.1], [9, 1901.1], [15, 2557.0]];

  it.each(PAPER)('k = %s: %f G within 0.1%, and within the paper\'s rounding (0.05 G)', (k, want) => {
    const r = paperComparison(paper, { insertLayer: k });
    const got = k === null ? r.baseline_gmacs : r.total_gmacs;
    expect(Math.abs(got - want) / want).toBeLessThan(0.001);
    expect(Math.abs(got - want)).toBeLessThanOrEqual(0.05);
    expect(r.baseline_gmacs).toBeCloseTo(3555.07, 2);
  });

  it('55.75% fewer at k = 6; the same JSON keys as the per-view report', async () => {
    const r = await flopsReport({ paper: true, insertLayer: '6' });
    expect(r.reduction_pct).toBeCloseTo(55.75, 2);
    const perView = await flopsReport({});
    expect(Object.keys(r)).toEqual(Object.keys(perView));
    expect(r.patches).toEqual({ h: 70, w: 70, n: 4900 });
    expect(r.modules.filter((m) => m.group === 'connector' || m.group === 'llm')).toHaveLength(0);
    expect(r.dense_window).toBe(true);
  });

  it('the elementwise term is 12d + f per token per layer, D counted at its input tokens; without it the numbers miss the rounding', () => {
    const e = 12 * 1152 + 4304;
    const withIt = viewFlops(paper, { width: 980, height: 980 }, { ...PAPER_COUNTING, insertLayer: 6 });
    const without = viewFlops(paper, { width: 980, height: 980 }, { ...PAPER_COUNTING, elementwise: false, insertLayer: 6 });
    const layers = withIt.modules.filter((m) => m.name === 'encoder.layers' || m.name === 'vit_merger');
    for (const m of layers) expect(m.parts.elementwise).toBe(m.tokens * e);
    expect(withIt.total - without.total).toBe((7 * 4900 + 4900 + 20 * 1225) * e);
    const base = viewFlops(paper, { width: 980, height: 980 }, { ...PAPER_COUNTING, elementwise: false, insertLayer: null });
    expect(Math.abs(base.total / 1e9 - 3555.1)).toBeGreaterThan(0.05);
  });

  it('--image: the whole image after slicing is the sum of its views, in either convention', async () => {
    for (const paperCounting of [false, true]) {
      const r = await flopsReport({ image: '1920x1080', paper: paperCounting }) as ImageComparison;
      expect(r.views.map((v) => `${v.role} ${v.view.width}x${v.view.height}`)).toEqual(['thumbnail 616x336', ...new Array(8).fill('slice 448x448')]);
      const opts = paperCounting ? PAPER_COUNTING : {};
      const each = r.views.map((v) => compareWithBaseline(paper, v.view, opts));
      expect(r.total_gmacs).toBeCloseTo(each.reduce((s, c) => s + c.total_gmacs, 0), 9);
      expect(r.baseline_gmacs).toBeCloseTo(each.reduce((s, c) => s + c.baseline_gmacs, 0), 9);
      expect(r.modules.reduce((s, m) => s + m.gmacs, 0)).toBeCloseTo(r.total_with_llm_gmacs, 6);
      expect(r.patches.n).toBe(each.reduce((s, c) => s + c.patches.n, 0));
    }
    await expect(flopsReport({ image: '1920x1080', view: '448x448' })).rejects.toThrow('--image and --view: give one');
    await expect(flopsReport({ image: 'big' })).rejects.toThrow("--image: expected <W>x<H> in pixels, e.g. 1920x1080, got 'big'");
    await expect(flopsReport({ paper: true, context: '5' })).rejects.toThrow('--paper counts the vision tower only');
  });

  it('the table says which convention it uses', async () => {
    const text = formatFlops(await flopsReport({ paper: true }), 'llava-uhd-v4');
    expect(text).toContain("the paper's accounting (Figure 2, Table 5)");
    expect(text).toMatch(/vision tower \(ViT \+ D\)\s+1573\.096\s+3555\.066\s+55\.75%/);
    expect(formatFlops(await flopsReport({}), 'llava-uhd-v4')).toContain('--paper');
  });
});

describe('compressor variants (--compressor)', () => {
  it("win-attn-reused keeps the paper's numbers; avg-pool adds no MACs; every variant is counted", async () => {
    const d = await flopsReport({ paper: true, compressor: 'win-attn-reused' });
    expect(d.total_gmacs).toBeCloseTo(1573.1, 1);
    expect(d.total_gmacs).toBe((await flopsReport({ paper: true })).total_gmacs);
    const pool = await flopsReport({ paper: true, compressor: 'avg-pool' });
    expect(pool.by_group_gmacs.compressor).toBe(0);
    expect(pool.total_gmacs).toBeCloseTo(d.total_gmacs - d.by_group_gmacs.compressor, 9);
    expect(pool.by_group_gmacs.vit).toBe(d.by_group_gmacs.vit);
    const c = CONFIGS['llava-uhd-v4'].vision_config;
    const [dd, f, n] = [c.hidden_size, c.intermediate_size, 4900];
    // reused-mlp: D's MLP alone on N/4 merged tokens, [4f, 4d] and [d, 4f]
    const mlp = await flopsReport({ paper: true, compressor: 'reused-mlp' });
    expect(mlp.by_group_gmacs.compressor * 1e9).toBeCloseTo((n / 4) * (4 * dd * 4 * f + 4 * f * dd), -3);
    const unshuffle = await flopsReport({ paper: true, compressor: 'unshuffle-mlp' });
    expect(unshuffle.by_group_gmacs.compressor * 1e9).toBeCloseTo((n / 4) * (4 * dd * 4 * dd + 4 * dd * dd), -3);
    for (const name of ['cross-attn-topleft', 'cross-attn-mean', 'win-attn-mlp']) {
      const r = await flopsReport({ paper: true, compressor: name });
      expect(r.by_group_gmacs.compressor).toBeGreaterThan(0);
      expect(r.by_group_gmacs.compressor).toBeLessThan(d.by_group_gmacs.compressor);
    }
    await expect(flopsReport({ compressor: 'max-pool' })).rejects.toThrow("--compressor: 'max-pool' is not a compressor; allowed: avg-pool");
  });
});
