/**
 * `uhd flops`: the analytic cost of one view (LLAVA-UHD-V4.md, "FLOPs model"), per module and per
 * layer, and for a config with the compressor D the post-ViT baseline beside it with the
 * reduction in percent. Counting conventions are in llava-uhd/flops.ts. Two conventions:
 * - default: one view (448x448 unless --view), the whole pipeline (ViT, D with its real 2x2
 *   windows, connector, LLM prefill of the view's tokens), matmul MACs + 4 per attention score;
 *   llava-uhd-v4 at k = 6: 241.7 vs 498.0 GMACs visual encoding, 51.5% fewer;
 * - --paper: the paper's Figure 2 / Table 5 accounting: one 980x980 view, the vision tower only,
 *   D's attention dense, plus the elementwise term: baseline 3555.1 G; k = 3, 6, 9, 15:
 *   1245.1, 1573.1, 1901.1, 2557.0 G (55.75% fewer at k = 6).
 * --image WxH counts a whole image after slicing (thumbnail + slices) in either convention.
 */
import { COMPRESSOR_NAMES, resolveConfig, type CompressorName, type LlavaUHDConfig } from '../llava-uhd/config.js';
import {
  compareWithBaseline, imageComparison, PAPER_COUNTING, PAPER_VIEW, paperComparison, patchGrid, type BaselineComparison, type FlopsGroup, type ImageComparison, type ModuleGmacs, type ViewSize,
} from '../llava-uhd/flops.js';

/** The options as commander hands them over (strings as typed). */
export interface FlopsCliOptions {
  config?: string;
  view?: string;
  insertLayer?: string;
  denseWindow?: boolean;
  context?: string;
  lmHead?: boolean;
  /** The paper's accounting (one 980x980 view unless --view, tower only, D dense, elementwise). */
  paper?: boolean;
  /** A whole W x H image after slicing, instead of one view. */
  image?: string;
  json?: boolean;
  /** A compressor variant (llava-uhd/compressors.ts) instead of the config's. */
  compressor?: string;
}

/** `448x448` -> { width: 448, height: 448 }; only the syntax is checked here. */
export function parseView(text: string, flag = '--view'): ViewSize {
  const m = /^(\d+)x(\d+)$/i.exec(text.trim());
  if (!m) throw new Error(`${flag}: expected <W>x<H> in pixels, e.g. ${flag === '--image' ? '1920x1080' : '448x448'}, got '${text}'`);
  const size = { width: Number(m[1]), height: Number(m[2]) };
  if (flag === '--image' && (size.width < 1 || size.height < 1 || size.width * size.height > 2 ** 28)) {
    throw new Error(`--image: ${text} must have both sides >= 1 and at most 2^28 pixels`);
  }
  return size;
}

/** `6` -> 6, `none` -> null (the baseline), undefined -> the config's own k. */
export function parseInsertLayer(text: string | undefined, config: LlavaUHDConfig): number | null {
  if (text === undefined) return config.insert_layer_id;
  if (text.trim().toLowerCase() === 'none') return null;
  const layers = config.vision_config.num_hidden_layers;
  const k = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!(k >= 0 && k < layers)) {
    throw new Error(`--insert-layer: must be a ViT layer index 0..${layers - 1} or 'none', got '${text}'`);
  }
  return k;
}

function parseContext(text: string | undefined): number {
  if (text === undefined) return 0;
  if (!/^\d+$/.test(text.trim())) throw new Error(`--context: must be a non-negative integer (tokens before the view's), got '${text}'`);
  return Number(text);
}

/** Computes the comparison for the CLI's options; errors name the flag at fault. */
export async function flopsReport(opts: FlopsCliOptions): Promise<BaselineComparison | ImageComparison> {
  const name = opts.config ?? 'llava-uhd-v4';
  let config: LlavaUHDConfig;
  try {
    config = await resolveConfig(name);
  } catch (e) {
    throw new Error(`--config: ${(e as Error).message}`);
  }
  if (opts.compressor !== undefined) {
    if (!(COMPRESSOR_NAMES as readonly string[]).includes(opts.compressor)) throw new Error(`--compressor: '${opts.compressor}' is not a compressor; allowed: ${COMPRESSOR_NAMES.join(', ')}`);
    config = { ...config, compressor: opts.compressor as CompressorName };
  }
  const insertLayer = parseInsertLayer(opts.insertLayer, config);
  const contextTokens = parseContext(opts.context);
  if (opts.paper && (contextTokens || opts.lmHead)) throw new Error('--paper counts the vision tower only: --context and --lm-head (the LLM) do not apply');
  const counting = opts.paper ? PAPER_COUNTING : { denseWindow: opts.denseWindow ?? false, contextTokens, lmHead: opts.lmHead ?? false };
  if (opts.image !== undefined) {
    if (opts.view !== undefined) throw new Error('--image and --view: give one (a whole image, or one view)');
    return imageComparison(config, parseView(opts.image, '--image'), { ...counting, insertLayer });
  }
  const view = opts.view !== undefined ? parseView(opts.view) : opts.paper ? PAPER_VIEW : parseView('448x448');
  try {
    patchGrid(config, view, !opts.paper ? 2 : insertLayer === null ? 0 : 1);
  } catch (e) {
    throw new Error(`--view: ${(e as Error).message}`);
  }
  return opts.paper ? paperComparison(config, { insertLayer, view }) : compareWithBaseline(config, view, { ...counting, insertLayer });
}

/** A unit that keeps the largest number readable: G, M or K MACs. */
function unitFor(maxMacs: number): { name: string; scale: number } {
  if (maxMacs >= 1e10) return { name: 'GMACs', scale: 1e9 };
  if (maxMacs >= 1e7) return { name: 'MMACs', scale: 1e6 };
  return { name: 'KMACs', scale: 1e3 };
}

/** The per-module table and the side-by-side totals, as text. */
export function formatFlops(r: BaselineComparison | ImageComparison, configName: string): string {
  const G = 1e9;
  const withD = r.insert_layer !== null;
  const totalMacs = r.baseline_with_llm_gmacs * G;
  const unit = unitFor(Math.max(totalMacs, r.total_with_llm_gmacs * G));
  const fmt = (macs: number) => (macs / unit.scale).toFixed(3);
  const lines: string[] = [];
  const att = r.dense_window ? 'dense over the view (as the paper\'s profiler)' : '2x2 windows (exact)';
  const tower = r.by_group_gmacs.connector === 0 && r.by_group_gmacs.llm === 0;
  const image = 'image' in r ? r : null;
  if (image) {
    const slices = image.views.filter((v) => v.role === 'slice');
    const t = image.views[0].view;
    lines.push(`config ${configName}, image ${image.image.width}x${image.image.height} px: thumbnail ${t.width}x${t.height}` +
      (slices.length ? ` + ${slices.length} slices of ${slices[0].view.width}x${slices[0].view.height}` : '') + ` = ${r.patches.n} patch tokens in ${image.views.length} views (rows: summed over the views)`);
  } else {
    lines.push(`config ${configName}, view ${r.view.width}x${r.view.height} px = ${r.patches.h}x${r.patches.w} patches (${r.patches.n} tokens)`);
  }
  lines.push(withD ? `D after ViT layer k = ${r.insert_layer}; D's attention counted ${att}` : 'post-ViT baseline (no D, two 2x2 merges in the connector)');
  if (tower) lines.push("the paper's accounting (Figure 2, Table 5): vision tower only (patch embedding, ViT layers, D), elementwise 12d + f per token per layer included");
  else lines.push(`LLM: prefill of the ${image ? "image's" : "view's"} ${r.llm_tokens} visual tokens, context ${r.context_tokens} tokens, LM head ${r.lm_head ? 'on' : 'off'}`);
  lines.push('');
  const header = `${'group'.padEnd(11)}${'module'.padEnd(28)}${'layer'.padStart(6)}${'tokens'.padStart(13)}${unit.name.padStart(14)}${'share'.padStart(8)}`;
  lines.push(header, '-'.repeat(header.length));
  const own = r.total_with_llm_gmacs * G;
  const rowLine = (m: ModuleGmacs) => {
    const tokens = m.tokensOut === undefined ? String(m.tokens) : `${m.tokens}->${m.tokensOut}`;
    const share = `${((100 * m.macs) / own).toFixed(1)}%`;
    return `${m.group.padEnd(11)}${m.name.padEnd(28)}${(m.layer === undefined ? '-' : String(m.layer)).padStart(6)}${tokens.padStart(13)}${fmt(m.macs).padStart(14)}${share.padStart(8)}`;
  };
  for (const m of r.modules) lines.push(rowLine(m));
  lines.push('');

  const groups: [FlopsGroup, string][] = [['vit', 'ViT (embedding + layers)'], ['compressor', 'compressor D'], ['connector', 'connector']];
  const col = (s: string) => s.padStart(16);
  const pct = (base: number, other: number) => (base === 0 ? '-' : `${((100 * (base - other)) / base).toFixed(1)}%`);
  if (withD) {
    lines.push(`${`totals (${unit.name})`.padEnd(34)}${col(`k = ${r.insert_layer}`)}${col('baseline')}${col('reduction')}`);
    for (const [g, label] of groups) {
      const a = r.by_group_gmacs[g] * G;
      const b = r.baseline_by_group_gmacs[g] * G;
      lines.push(`${label.padEnd(34)}${col(fmt(a))}${col(fmt(b))}${col(b === 0 ? '-' : pct(b, a))}`);
    }
    lines.push(`${(tower ? 'vision tower (ViT + D)' : 'visual encoding (ViT + D + conn.)').padEnd(34)}${col(fmt(r.total_gmacs * G))}${col(fmt(r.baseline_gmacs * G))}${col(`${r.reduction_pct.toFixed(tower ? 2 : 1)}%`)}`);
    if (!tower) {
      lines.push(`${'LLM'.padEnd(34)}${col(fmt(r.by_group_gmacs.llm * G))}${col(fmt(r.baseline_by_group_gmacs.llm * G))}${col(pct(r.baseline_by_group_gmacs.llm, r.by_group_gmacs.llm))}`);
      lines.push(`${'total with LLM'.padEnd(34)}${col(fmt(r.total_with_llm_gmacs * G))}${col(fmt(r.baseline_with_llm_gmacs * G))}${col(`${r.reduction_with_llm_pct.toFixed(1)}%`)}`);
    }
  } else {
    lines.push(`${`totals (${unit.name})`.padEnd(34)}${col('baseline')}`);
    for (const [g, label] of groups) lines.push(`${label.padEnd(34)}${col(fmt(r.by_group_gmacs[g] * G))}`);
    lines.push(`${'visual encoding (ViT + conn.)'.padEnd(34)}${col(fmt(r.total_gmacs * G))}`);
    lines.push(`${'LLM'.padEnd(34)}${col(fmt(r.by_group_gmacs.llm * G))}`);
    lines.push(`${'total with LLM'.padEnd(34)}${col(fmt(r.total_with_llm_gmacs * G))}`);
  }
  lines.push('');
  if (tower) {
    lines.push('MACs of the matmuls + 4 ops per attention score per head + 12d + f elementwise ops per token per layer,');
    lines.push('as the paper counts them (it calls them FLOPs). share: of this config\'s total.');
  } else {
    lines.push('MACs of the matmuls + 4 ops per attention score per head (scale, softmax); norms, activations,');
    lines.push('biases and residuals are not counted. FLOPs ~ 2 x MACs. share: of this config\'s total with the LLM.');
    lines.push("(--paper: the paper's own accounting, which reproduces its Figure 2 / Table 5.)");
  }
  return lines.join('\n');
}

/** The command's action: prints the table (or one JSON object); on bad input, the message and exit code 1. */
export async function flopsCommand(opts: FlopsCliOptions): Promise<void> {
  try {
    const report = await flopsReport(opts);
    console.log(opts.json ? JSON.stringify(report, null, 2) : formatFlops(report, opts.config ?? 'llava-uhd-v4'));
  } catch (e) {
    console.error(`uhd flops: ${(e as Error).message}`);
    process.exitCode = 1;
  }
}
