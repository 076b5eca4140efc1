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
 */
import { connectorMergeRounds, type LlavaUHDConfig } from './config.js';

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
}

export interface FlopsReport {
  view: ViewSize;
  /** The view's patch grid: rows x cols = h x w, n = h·w tokens entering the ViT. */
  patches: { h: number; w: number; n: number };
  /** k in effect, null for the baseline. */
  insertLayer: number | null;
  denseWindow: boolean;
  /** Tokens the LLM receives for this view: n/16 with D and for the baseline alike. */
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
 * baseline's two) are exact: each side a multiple of 4 patches (LLAVA-UHD-V4.md, alignment u). */
export function patchGrid(config: LlavaUHDConfig, view: ViewSize): { h: number; w: number; n: number } {
  const p = config.vision_config.patch_size;
  const unit = 4 * p;
  const { width, height } = view;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0 || width % unit !== 0 || height % unit !== 0) {
    throw new Error(`flops: view ${width}x${height}: each side must be a positive multiple of ${unit} px (patch ${p} x 4)`);
  }
  const h = height / p;
  const w = width / p;
  return { h, w, n: h * w };
}

/** One pre-norm SigLIP layer on T tokens of one view (LLAVA-UHD-V4.md, "Vision tower"). */
function vitLayer(config: LlavaUHDConfig, layer: number, tokens: number): ModuleFlops {
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
  }, { layer });
}

/**
 * The compressor D on N tokens of one view (LLAVA-UHD-V4.md, "The intra-ViT compressor D"):
 * window attention with layer k's attention shapes at N tokens, then the MLP branch on the N/4
 * merged tokens: `linear_1` [4f, 4d] and `linear_2` [d, 4f].
 */
function compressor(config: LlavaUHDConfig, tokens: number, denseWindow: boolean): ModuleFlops {
  const v = config.vision_config;
  const d = v.hidden_size;
  const f = v.intermediate_size;
  const heads = v.num_attention_heads;
  const merged = tokens / 4;
  const keysPerQuery = denseWindow ? tokens : 4;
  return row('compressor', 'vit_merger', tokens, {
    q_proj: linear(tokens, d, d),
    k_proj: linear(tokens, d, d),
    v_proj: linear(tokens, d, d),
    out_proj: linear(tokens, d, d),
    ...attentionScores(tokens * keysPerQuery, heads, d / heads),
    linear_1: linear(merged, 4 * d, 4 * f),
    linear_2: linear(merged, 4 * f, d),
  }, { tokensOut: merged });
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
  const grid = patchGrid(config, view);
  const n = grid.n;
  const channels = v.num_channels ?? 3;
  const p = v.patch_size;

  const modules: ModuleFlops[] = [];
  // Patch embedding: a stride-p conv, i.e. a matmul of each patch's C·p·p pixels to d.
  modules.push(row('vit', 'embeddings.patch_embedding', n, { patch_embedding: linear(n, channels * p * p, v.hidden_size) }));
  let tokens = n;
  for (let i = 0; i < layers; i++) {
    modules.push(vitLayer(config, i, tokens));
    if (i === k) {
      modules.push(compressor(config, tokens, denseWindow));
      tokens /= 4;
    }
  }
  const rounds = connectorMergeRounds({ ...config, insert_layer_id: k });
  modules.push(...connector(config, tokens, rounds));
  const llmTokens = tokens / 4 ** rounds;
  for (let i = 0; i < config.text_config.num_hidden_layers; i++) modules.push(llmLayer(config, i, llmTokens, context));
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
    scope: 'one view; total_gmacs/baseline_gmacs/reduction_pct = visual encoding (ViT + D + connector); *_with_llm_* add the LLM prefill of the view\'s visual tokens',
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
