/**
 * The analytic FLOPs model (LLAVA-UHD-V4.md, "FLOPs model"): multiply-accumulates per module and
 * per layer for one view (a thumbnail or one slice) of W x H pixels, for any config, with the
 * compressor D or as the post-ViT baseline, and the two side by side.
 *
 * Counting conventions (the same everywhere in this file):
 * - A linear layer [in -> out] applied to T tokens costs T·in·out MACs. Dense weights are
 *   counted dense, even where the initialisation makes them block-diagonal (D's `linear_1`).
 * - Attention, per head, costs Tq·Tk·head_dim MACs for the scores (QK^T) and as many for the
 *   weighted values (AV). On top of the MACs, each attention score of each head costs 4
 *   operations (the 1/sqrt(head_dim) scale and the softmax's max, exp and normalise), added to
 *   `macs` 1:1 as "MAC-equivalents" and also reported alone as `scoreOps`; so for every row
 *   `macs = matmulMacs + scoreOps`.
 * - Not counted, because they are elementwise and cost O(T·d) against the matmuls' O(T·d²)
 *   (under 0.1% for so400m): LayerNorm/RMSNorm (LN1/LN2, D's LN1 and `pre_norm`,
 *   `post_layernorm`, the connector's LayerNorm, Qwen3's norms incl. q/k-norm), GELU/SiLU and
 *   the SwiGLU product, biases, residual adds, D's window-mean residual, position embeddings,
 *   RoPE, the token embedding lookup, and the pixel-unshuffles (pure layout).
 *
 * The view is encoded alone: its N = (W/14)·(H/14) patch tokens attend only to each other
 * (LLAVA-UHD-V4.md, "Pipeline": attention only within each view), so per-view costs simply add
 * up over the views of an image.
 *
 * What it gives for the paper's config on one 448x448 slice (32x32 patches) at k = 6: visual
 * encoding 241.7 against the baseline's 498.0 GMACs, 51.5% fewer (51.0% counting D's attention
 * dense), where the paper reports 55.8% (3555G -> 1573G FLOPs). The ViT layers alone are 57.4%
 * cheaper; D itself costs 30.8 GMACs (6.2% of the baseline), two thirds of it `linear_1` counted
 * as the dense [4f, 4d] matmul it is (4x layer k's fc1), offset only in part by the baseline's
 * extra connector round (6.8 GMACs). The saving grows with the view, since attention is
 * quadratic in its tokens (54.1% at 672x672, 56.7% at 896x896), and the paper's 3555G baseline is
 * about 3.6x one slice's 996 GFLOPs, so it was measured on more pixels than one 448 slice.
 *
 * The paper's own convention (`paperComparison`, `uhd flops --paper`), reconstructed from its
 * Figure 2 / Table 5 numbers: one 980x980 view (70x70 = 4900 patches: the position table's
 * full size), the vision tower only (patch embedding, the 27 layers, D; no connector, no LLM),
 * D's attention dense over the view, and an elementwise term of 12d + f operations per token per
 * layer, D included at its input tokens: per layer two LayerNorms at ~5 ops per element (mean,
 * centre, variance, normalise, affine: 10d), the two residual adds (2d) and the GELU, one op per
 * MLP activation (f); D has the same at its N tokens (LN1 5d, residual d, `pre_norm` over 4d at
 * N/4 tokens = 5d, GELU over 4f at N/4 = f, the window mean ~d). The term is 0.07% of the
 * baseline, but it is what lands all five numbers: with it the model gives 3555.07, 1245.14,
 * 1573.10, 1901.06, 2556.98 G for the baseline and k = 3, 6, 9, 15 against the paper's 3555.1,
 * 1245.1, 1573.1, 1901.1, 2557.0 (55.75% fewer at k = 6). Any per-token-per-layer constant in
 * 18048..18384 (15.67d..15.96d) puts all five within the paper's rounding (±0.05 G); 12d + f =
 * 18128 is the natural count inside it, while none (0) or 16d miss. The paper says "FLOPs" for
 * what are these MACs.
 */
import { connectorMergeRounds, type LlavaUHDConfig } from './config.js';
import { sliceImage } from './slicing.js';

/** A view in pixels; both sides a multiple of 4 patches (56 px for patch 14). */
export interface ViewSize {
  width: number;
  height: number;
}

export type FlopsGroup = 'vit' | 'compressor' | 'connector' | 'llm';

/** One row: a module, or one layer of a stack of modules. */
export interface ModuleFlops {
  group: FlopsGroup;
  /** The module's name in the release's parameter names: `encoder.layers`, `vit_merger`, ... */
  name: string;
  /** Layer index within the stack (ViT and LLM layers), or merge round (connector). */
  layer?: number;
  /** Tokens the module receives (for this view). */
  tokens: number;
  /** Tokens it hands on, where it merges (D: tokens/4; a connector round: tokens/4). */
  tokensOut?: number;
  /** matmulMacs + scoreOps. */
  macs: number;
  matmulMacs: number;
  /** 4 per attention score per head (scale + softmax); 0 for modules without attention. */
  scoreOps: number;
  /** The terms that make up `macs`, by sub-module (`q_proj`, `attn_qk`, `fc1`, ...). */
  parts: Record<string, number>;
}

export interface FlopsOptions {
  /**
   * Overrides the config's k (`insert_layer_id`): a 0-based layer index, or null for the
   * post-ViT baseline. Undefined keeps the config's.
   */
  insertLayer?: number | null;
  /**
   * Count D's attention as dense over the whole view (each query against all N keys), as the
   * paper's profiler did, instead of the real 2x2 windows (each query against 4 keys).
   */
  denseWindow?: boolean;
  /**
   * LLM prefill of this view's N/16 visual tokens. Each visual token attends causally to
   * `contextTokens` earlier tokens (text, earlier views; default 0 = the visual tokens only),
   * to the visual tokens before it and to itself. `lmHead` adds logits for every visual token
   * (default false: prefill needs logits only at the last position, not at image tokens).
   */
  contextTokens?: number;
  lmHead?: boolean;
  /**
   * 'pipeline' (default): ViT, D, connector and LLM. 'tower': patch embedding, ViT layers and D
   * only, as the paper counts; the view then needs only D's 2x2 merge (sides a multiple of 2
   * patches), so the paper's 980x980 view (70x70 patches) is accepted.
   */
  scope?: 'pipeline' | 'tower';
  /** Add the elementwise work per token per layer, 12d + f, as the paper's counts include. */
  elementwise?: boolean;
}

export interface FlopsReport {
  view: ViewSize;
  /** The view's patch grid: rows x cols = h x w, n = h·w tokens entering the ViT. */
  patches: { h: number; w: number; n: number };
  /** k in effect, null for the baseline. */
  insertLayer: number | null;
  denseWindow: boolean;
  /** Tokens the LLM receives for this view: n/16 with D and for the baseline alike (0 in the tower scope). */
  llmTokens: number;
  modules: ModuleFlops[];
  /** Sum of every row, LLM included. */
  total: number;
  /** The paper's headline quantity: ViT (patch embedding, layers) + D + connector. */
  visualEncoding: number;
  byGroup: Record<FlopsGroup, number>;
}

/** T·in·out MACs of a Linear(in -> out) on T tokens. */
function linear(tokens: number, inFeatures: number, outFeatures: number): number {
  return tokens * inFeatures * outFeatures;
}

/**
 * Attention cost given the number of scores per head (sum over queries of the keys each sees):
 * QK^T and AV at head_dim MACs per score each, and 4 ops per score, all per head.
 */
function attentionScores(scoresPerHead: number, heads: number, headDim: number): Record<string, number> {
  return {
    attn_qk: heads * scoresPerHead * headDim,
    attn_av: heads * scoresPerHead * headDim,
    attn_softmax: 4 * heads * scoresPerHead,
  };
}

function row(group: FlopsGroup, name: string, tokens: number, parts: Record<string, number>, extra: Partial<ModuleFlops> = {}): ModuleFlops {
  let macs = 0;
  for (const v of Object.values(parts)) macs += v;
  const scoreOps = parts.attn_softmax ?? 0;
  return { group, name, ...extra, tokens, macs, matmulMacs: macs - scoreOps, scoreOps, parts };
}

/** The patch grid of a view, checking that both 2x2 merges (D's and the connector's, or the
 * baseline's two) are exact: each side a multiple of 4 patches (LLAVA-UHD-V4.md, alignment u);
 * fewer `merges` when the tower is counted alone: 1 with D (a multiple of 2 patches), 0 without. */
export function patchGrid(config: LlavaUHDConfig, view: ViewSize, merges: 0 | 1 | 2 = 2): { h: number; w: number; n: number } {
  const p = config.vision_config.patch_size;
  const unit = 2 ** merges * p;
  const { width, height } = view;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0 || width % unit !== 0 || height % unit !== 0) {
    throw new Error(`flops: view ${width}x${height}: each side must be a positive multiple of ${unit} px (patch ${p} x ${2 ** merges})`);
  }
  const h = height / p;
  const w = width / p;
  return { h, w, n: h * w };
}

/** The paper's elementwise operations per token per ViT layer: 2 LayerNorms (5d each), 2 residual adds, GELU over f. */
export function elementwisePerToken(config: LlavaUHDConfig): number {
  const v = config.vision_config;
  return 12 * v.hidden_size + v.intermediate_size;
}

/** One pre-norm SigLIP layer on T tokens of one view (LLAVA-UHD-V4.md, "Vision tower"). */
function vitLayer(config: LlavaUHDConfig, layer: number, tokens: number, elementwise: boolean): ModuleFlops {
  const v = config.vision_config;
  const d = v.hidden_size;
  const f = v.intermediate_size;
  const heads = v.num_attention_heads;
  return row('vit', 'encoder.layers', tokens, {
    q_proj: linear(tokens, d, d),
    k_proj: linear(tokens, d, d),
    v_proj: linear(tokens, d, d),
    out_proj: linear(tokens, d, d),
    ...attentionScores(tokens * tokens, heads, d / heads),
    fc1: linear(tokens, d, f),
    fc2: linear(tokens, f, d),
    ...(elementwise ? { elementwise: tokens * elementwisePerToken(config) } : {}),
  }, { layer });
}

/**
 * The compressor on N tokens of one view: by default the paper's D (LLAVA-UHD-V4.md, "The
 * intra-ViT compressor D"): window attention with layer k's attention shapes at N tokens, then the
 * MLP branch on the N/4 merged tokens: `linear_1` [4f, 4d] and `linear_2` [d, 4f]; or the variant
 * `config.compressor` names (llava-uhd/compressors.ts): avg-pool has no MACs; unshuffle-mlp
 * [4d, 4d] and [d, 4d] on N/4; reused-mlp D's MLP alone; cross-attn-* q and out at N/4, k and v
 * at N, 4 keys per query, layer k's MLP at N/4; win-attn-mlp D's attention then unshuffle-mlp.
 * Elementwise ops are counted for D only (the paper's accounting).
 */
function compressor(config: LlavaUHDConfig, tokens: number, denseWindow: boolean, elementwise: boolean): ModuleFlops {
  const v = config.vision_config;
  const d = v.hidden_size;
  const f = v.intermediate_size;
  const heads = v.num_attention_heads;
  const merged = tokens / 4;
  const keysPerQuery = denseWindow ? tokens : 4;
  const windowAttention = {
    q_proj: linear(tokens, d, d),
    k_proj: linear(tokens, d, d),
    v_proj: linear(tokens, d, d),
    out_proj: linear(tokens, d, d),
    ...attentionScores(tokens * keysPerQuery, heads, d / heads),
  };
  const unshuffleMlp = { linear_1: linear(merged, 4 * d, 4 * d), linear_2: linear(merged, 4 * d, d) };
  const reusedMlp = { linear_1: linear(merged, 4 * d, 4 * f), linear_2: linear(merged, 4 * f, d) };
  const variant = config.compressor ?? 'win-attn-reused';
  const parts: Record<string, number> = (() => {
    switch (variant) {
      case 'avg-pool':
        return {};
      case 'unshuffle-mlp':
        return unshuffleMlp;
      case 'reused-mlp':
        return reusedMlp;
      case 'cross-attn-topleft':
      case 'cross-attn-mean':
        return {
          q_proj: linear(merged, d, d),
          k_proj: linear(tokens, d, d),
          v_proj: linear(tokens, d, d),
          out_proj: linear(merged, d, d),
          ...attentionScores(merged * 4, heads, d / heads),
          fc1: linear(merged, d, f),
          fc2: linear(merged, f, d),
        };
      case 'win-attn-mlp':
        return { ...windowAttention, ...unshuffleMlp };
      case 'win-attn-reused':
        return { ...windowAttention, ...reusedMlp, ...(elementwise ? { elementwise: tokens * elementwisePerToken(config) } : {}) };
    }
  })();
  return row('compressor', 'vit_merger', tokens, parts, { tokensOut: merged });
}

/**
 * The connector's merge rounds on T tokens (LLAVA-UHD-V4.md, "Connector"): each round is a 2x2
 * pixel-unshuffle, LayerNorm(4d), Linear(4d -> 4d), GELU, Linear(4d -> out), with out = d
 * between rounds and the LLM width after the last (the release's `Merger` with `times` rounds).
 * With D there is one round; the baseline has two.
 */
function connector(config: LlavaUHDConfig, tokens: number, rounds: number): ModuleFlops[] {
  const d = config.vision_config.hidden_size;
  const llmWidth = config.text_config.hidden_size;
  const rows: ModuleFlops[] = [];
  let t = tokens;
  for (let r = 0; r < rounds; r++) {
    const out = t / 4;
    const width = r === rounds - 1 ? llmWidth : d;
    rows.push(row('connector', 'resampler', t, {
      linear_1: linear(out, 4 * d, 4 * d),
      linear_2: linear(out, 4 * d, width),
    }, { layer: r, tokensOut: out }));
    t = out;
  }
  return rows;
}

/**
 * One Qwen3 decoder layer in prefill for T visual tokens after `context` earlier tokens
 * (LLAVA-UHD-V4.md, "Qwen3-style LLM"): grouped-query projections (q and o at heads·head_dim,
 * k and v at kv_heads·head_dim), causal attention, SwiGLU gate/up/down.
 */
function llmLayer(config: LlavaUHDConfig, layer: number, tokens: number, context: number): ModuleFlops {
  const t = config.text_config;
  const hidden = t.hidden_size;
  const headDim = t.head_dim ?? hidden / t.num_attention_heads;
  const qWidth = t.num_attention_heads * headDim;
  const kvWidth = t.num_key_value_heads * headDim;
  // Query i (0-based) sees the context, visual tokens 0..i: context + i + 1 keys.
  const scores = tokens * context + (tokens * (tokens + 1)) / 2;
  return row('llm', 'llm.layers', tokens, {
    q_proj: linear(tokens, hidden, qWidth),
    k_proj: linear(tokens, hidden, kvWidth),
    v_proj: linear(tokens, hidden, kvWidth),
    o_proj: linear(tokens, qWidth, hidden),
    ...attentionScores(scores, t.num_attention_heads, headDim),
    gate_proj: linear(tokens, hidden, t.intermediate_size),
    up_proj: linear(tokens, hidden, t.intermediate_size),
    down_proj: linear(tokens, t.intermediate_size, hidden),
  }, { layer });
}

/**
 * MACs per module and per layer of one view through the whole pipeline (LLAVA-UHD-V4.md,
 * "Pipeline"): patch embedding, ViT layers 0..k at N tokens, D, layers k+1..L-1 at N/4 (all at N
 * for the baseline), the connector down to N/16 tokens, and the LLM prefill of those tokens.
 */
export function viewFlops(config: LlavaUHDConfig, view: ViewSize, opts: FlopsOptions = {}): FlopsReport {
  const v = config.vision_config;
  const layers = v.num_hidden_layers;
  const k = opts.insertLayer === undefined ? config.insert_layer_id : opts.insertLayer;
  if (k !== null && !(Number.isInteger(k) && k >= 0 && k < layers)) {
    throw new Error(`flops: insertLayer must be null or a layer index 0..${layers - 1}, got ${JSON.stringify(k)}`);
  }
  const context = opts.contextTokens ?? 0;
  if (!(Number.isInteger(context) && context >= 0)) {
    throw new Error(`flops: contextTokens must be a non-negative integer, got ${JSON.stringify(opts.contextTokens)}`);
  }
  const denseWindow = opts.denseWindow ?? false;
  const tower = (opts.scope ?? 'pipeline') === 'tower';
  if (opts.scope !== undefined && opts.scope !== 'pipeline' && opts.scope !== 'tower') throw new Error(`flops: scope must be 'pipeline' or 'tower', got ${JSON.stringify(opts.scope)}`);
  if (tower && (opts.contextTokens || opts.lmHead)) throw new Error('flops: contextTokens and lmHead count the LLM, which the tower scope leaves out');
  const elementwise = opts.elementwise ?? false;
  const grid = patchGrid(config, view, !tower ? 2 : k === null ? 0 : 1);
  const n = grid.n;
  const channels = v.num_channels ?? 3;
  const p = v.patch_size;

  const modules: ModuleFlops[] = [];
  // Patch embedding: a stride-p conv, i.e. a matmul of each patch's C·p·p pixels to d.
  modules.push(row('vit', 'embeddings.patch_embedding', n, { patch_embedding: linear(n, channels * p * p, v.hidden_size) }));
  let tokens = n;
  for (let i = 0; i < layers; i++) {
    modules.push(vitLayer(config, i, tokens, elementwise));
    if (i === k) {
      modules.push(compressor(config, tokens, denseWindow, elementwise));
      tokens /= 4;
    }
  }
  const rounds = connectorMergeRounds({ ...config, insert_layer_id: k });
  const llmTokens = tower ? 0 : tokens / 4 ** rounds;
  if (!tower) {
    modules.push(...connector(config, tokens, rounds));
    for (let i = 0; i < config.text_config.num_hidden_layers; i++) modules.push(llmLayer(config, i, llmTokens, context));
  }
  if (opts.lmHead) {
    modules.push(row('llm', 'llm.lm_head', llmTokens, { lm_head: linear(llmTokens, config.text_config.hidden_size, config.text_config.vocab_size) }));
  }

  const byGroup: Record<FlopsGroup, number> = { vit: 0, compressor: 0, connector: 0, llm: 0 };
  for (const m of modules) byGroup[m.group] += m.macs;
  const visualEncoding = byGroup.vit + byGroup.compressor + byGroup.connector;
  return {
    view: { width: view.width, height: view.height },
    patches: grid,
    insertLayer: k,
    denseWindow,
    llmTokens,
    modules,
    total: visualEncoding + byGroup.llm,
    visualEncoding,
    byGroup,
  };
}

/** A row in the comparison's JSON: the row with its cost also in GMACs. */
export interface ModuleGmacs extends ModuleFlops {
  gmacs: number;
}

/**
 * D against the post-ViT baseline for one view. The headline numbers (`total_gmacs`,
 * `baseline_gmacs`, `reduction_pct`) are *visual encoding*: ViT + D + connector, the quantity the
 * paper reports (about 56% fewer at k = 6). The `*_with_llm_*` fields add the LLM prefill of the
 * view's visual tokens, which is the same for both (both give the LLM N/16 tokens).
 */
export interface BaselineComparison {
  scope: string;
  view: ViewSize;
  patches: { h: number; w: number; n: number };
  insert_layer: number | null;
  dense_window: boolean;
  llm_tokens: number;
  context_tokens: number;
  lm_head: boolean;
  /** Visual encoding (ViT + D + connector) of the config at k, in GMACs. */
  total_gmacs: number;
  /** Visual encoding of the baseline (no D, two connector rounds), in GMACs. */
  baseline_gmacs: number;
  /** 100·(baseline − total)/baseline, visual encoding. */
  reduction_pct: number;
  total_with_llm_gmacs: number;
  baseline_with_llm_gmacs: number;
  reduction_with_llm_pct: number;
  by_group_gmacs: Record<FlopsGroup, number>;
  baseline_by_group_gmacs: Record<FlopsGroup, number>;
  modules: ModuleGmacs[];
  baseline_modules: ModuleGmacs[];
}

const G = 1e9;

function inGmacs(byGroup: Record<FlopsGroup, number>): Record<FlopsGroup, number> {
  return { vit: byGroup.vit / G, compressor: byGroup.compressor / G, connector: byGroup.connector / G, llm: byGroup.llm / G };
}

function reduction(baseline: number, other: number): number {
  return (100 * (baseline - other)) / baseline;
}

/**
 * The config (at `opts.insertLayer` if given, else its own k) and the baseline on the same view,
 * with the same counting options. With k = null the two coincide and the reduction is 0.
 */
export function compareWithBaseline(config: LlavaUHDConfig, view: ViewSize, opts: FlopsOptions = {}): BaselineComparison {
  const withD = viewFlops(config, view, opts);
  const base = viewFlops(config, view, { ...opts, insertLayer: null });
  const gm = (rows: ModuleFlops[]): ModuleGmacs[] => rows.map((m) => ({ ...m, gmacs: m.macs / G }));
  return {
    scope: opts.scope === 'tower'
      ? `one view; the vision tower only (patch embedding, ViT layers, D)${opts.denseWindow ? ", D's attention dense" : ''}${opts.elementwise ? ', elementwise 12d + f per token per layer' : ''}`
      : 'one view; total_gmacs/baseline_gmacs/reduction_pct = visual encoding (ViT + D + connector); *_with_llm_* add the LLM prefill of the view\'s visual tokens',
    view: withD.view,
    patches: withD.patches,
    insert_layer: withD.insertLayer,
    dense_window: withD.denseWindow,
    llm_tokens: withD.llmTokens,
    context_tokens: opts.contextTokens ?? 0,
    lm_head: opts.lmHead ?? false,
    total_gmacs: withD.visualEncoding / G,
    baseline_gmacs: base.visualEncoding / G,
    reduction_pct: reduction(base.visualEncoding, withD.visualEncoding),
    total_with_llm_gmacs: withD.total / G,
    baseline_with_llm_gmacs: base.total / G,
    reduction_with_llm_pct: reduction(base.total, withD.total),
    by_group_gmacs: inGmacs(withD.byGroup),
    baseline_by_group_gmacs: inGmacs(base.byGroup),
    modules: gm(withD.modules),
    baseline_modules: gm(base.modules),
  };
}

/** The paper's view for its FLOPs figures: the position table's full 980x980 (70x70 patches). */
export const PAPER_VIEW: ViewSize = { width: 980, height: 980 };

/** The paper's counting (see the file's comment): the tower alone, D's attention dense, the elementwise term. */
export const PAPER_COUNTING: FlopsOptions = { scope: 'tower', denseWindow: true, elementwise: true };

/**
 * The paper's Figure 2 / Table 5 accounting: one 980x980 view by default, D after layer k
 * against the baseline. The llava-uhd-v4 config gives baseline 3555.07 G and k = 6 1573.10 G.
 */
export function paperComparison(config: LlavaUHDConfig, opts: { insertLayer?: number | null; view?: ViewSize } = {}): BaselineComparison {
  const r = compareWithBaseline(config, opts.view ?? PAPER_VIEW, { ...PAPER_COUNTING, insertLayer: opts.insertLayer });
  return { ...r, scope: "the paper's accounting (Figure 2, Table 5): one view, vision tower only (patch embedding, ViT layers, D), D's attention dense, elementwise 12d + f per token per layer; GMACs, which the paper calls FLOPs" };
}

/** A whole image after slicing: the comparison summed over its views, and each view's share. */
export interface ImageComparison extends BaselineComparison {
  image: ViewSize;
  views: { view: ViewSize; role: 'thumbnail' | 'slice'; total_gmacs: number; baseline_gmacs: number }[];
}

/** Sums comparisons of the same config (rows line up one to one). */
function sumComparisons(parts: BaselineComparison[]): BaselineComparison {
  const [first] = parts;
  const add = (a: number, b: number) => a + b;
  const sumRows = (rows: ModuleGmacs[][]): ModuleGmacs[] =>
    rows[0].map((m, i) => {
      const all = rows.map((r) => r[i]);
      const parts: Record<string, number> = {};
      for (const r of all) for (const [k, v] of Object.entries(r.parts)) parts[k] = (parts[k] ?? 0) + v;
      const total = (f: (x: ModuleGmacs) => number) => all.map(f).reduce(add, 0);
      return {
        ...m, parts, tokens: total((x) => x.tokens), macs: total((x) => x.macs), matmulMacs: total((x) => x.matmulMacs), scoreOps: total((x) => x.scoreOps), gmacs: total((x) => x.gmacs),
        ...(m.tokensOut === undefined ? {} : { tokensOut: total((x) => x.tokensOut ?? 0) }),
      };
    });
  const groups = (f: (c: BaselineComparison) => Record<FlopsGroup, number>) => {
    const out: Record<FlopsGroup, number> = { vit: 0, compressor: 0, connector: 0, llm: 0 };
    for (const c of parts) for (const g of Object.keys(out) as FlopsGroup[]) out[g] += f(c)[g];
    return out;
  };
  const total = (f: (c: BaselineComparison) => number) => parts.map(f).reduce(add, 0);
  const t = total((c) => c.total_gmacs);
  const b = total((c) => c.baseline_gmacs);
  const tl = total((c) => c.total_with_llm_gmacs);
  const bl = total((c) => c.baseline_with_llm_gmacs);
  return {
    ...first,
    patches: { h: 0, w: 0, n: total((c) => c.patches.n) },
    llm_tokens: total((c) => c.llm_tokens),
    total_gmacs: t,
    baseline_gmacs: b,
    reduction_pct: b === 0 ? 0 : reduction(b, t),
    total_with_llm_gmacs: tl,
    baseline_with_llm_gmacs: bl,
    reduction_with_llm_pct: bl === 0 ? 0 : reduction(bl, tl),
    by_group_gmacs: groups((c) => c.by_group_gmacs),
    baseline_by_group_gmacs: groups((c) => c.baseline_by_group_gmacs),
    modules: sumRows(parts.map((c) => c.modules)),
    baseline_modules: sumRows(parts.map((c) => c.baseline_modules)),
  };
}

/**
 * A W x H image as the model encodes it (LLAVA-UHD-V4.md, "Slice-based encoding"): the
 * thumbnail and every slice, each a view counted with `opts` (per-view default, or
 * PAPER_COUNTING), summed. Views are encoded apart, so their costs add up.
 */
export function imageComparison(config: LlavaUHDConfig, image: ViewSize, opts: FlopsOptions = {}, maxSlices?: number): ImageComparison {
  const cfg = maxSlices === undefined ? config.slice_config : { ...config.slice_config, max_slice_nums: maxSlices };
  const plan = sliceImage(image.width, image.height, cfg);
  const views: { view: ViewSize; role: 'thumbnail' | 'slice' }[] = [{ view: plan.thumbnail, role: 'thumbnail' }];
  if (plan.grid && plan.slice) for (let i = 0; i < plan.grid.cols * plan.grid.rows; i++) views.push({ view: plan.slice, role: 'slice' });
  const each = views.map((v) => compareWithBaseline(config, v.view, opts));
  const sum = sumComparisons(each);
  return {
    ...sum,
    scope: `a ${image.width}x${image.height} image: ${views.length} views (thumbnail${plan.grid ? ` + ${plan.grid.cols}x${plan.grid.rows} slices` : ''}), each as: ${each[0].scope}`,
    view: { width: image.width, height: image.height },
    image: { width: image.width, height: image.height },
    views: views.map((v, i) => ({ view: v.view, role: v.role, total_gmacs: each[i].total_gmacs, baseline_gmacs: each[i].baseline_gmacs })),
  };
}
