/**
 * Pictures of what the model sees: an image with the slice grid that slicing.ts really cuts it
 * into (the thumbnail is the whole image resized; the slices tile the refined resize), and which
 * patches D merges: over one slice, every 2x2 window of the patch grid at the layer D follows,
 * shaded by how alike its four tokens are there (mean pairwise cosine; alike tokens lose little
 * when merged, LLaVA-UHD v4 §3.2's motivation for merging after a few layers).
 */
import { noGrad } from '../../autograd/index.js';
import { tidy } from '../../tensor/index.js';
import { encodePngBytes, type RgbImage } from '../image.js';
import type { LlavaUHD } from '../model.js';
import { prepareImage, viewPixels } from '../preprocess.js';
import { segmentIdsFor } from '../vision.js';
import { escapeXml } from './chart.js';

/** The image as a PNG data URI (for self-contained SVG and HTML). */
export function pngDataUri(img: RgbImage): string {
  return `data:image/png;base64,${Buffer.from(encodePngBytes(img)).toString('base64')}`;
}

/** The image with its slice grid (as the model's config cuts it) drawn over it, as SVG. */
export function sliceGridSvg(img: RgbImage, model: LlavaUHD, maxSlices?: number, displayWidth = 480): string {
  const prepared = prepareImage(img, model.config, maxSlices);
  const { grid } = prepared.plan;
  const scale = Math.min(displayWidth / img.width, displayWidth / img.height); // fits a square
  const w = Math.round(img.width * scale);
  const h = Math.round(img.height * scale);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h + 22}" viewBox="0 0 ${w} ${h + 22}" font-family="sans-serif" font-size="12">`,
    `<image href="${pngDataUri(img)}" x="0" y="0" width="${w}" height="${h}" preserveAspectRatio="none"/>`,
  ];
  if (grid) {
    for (let c = 1; c < grid.cols; c++) out.push(`<line x1="${((c * w) / grid.cols).toFixed(1)}" y1="0" x2="${((c * w) / grid.cols).toFixed(1)}" y2="${h}" stroke="#ff00ff" stroke-width="2"/>`);
    for (let r = 1; r < grid.rows; r++) out.push(`<line x1="0" y1="${((r * h) / grid.rows).toFixed(1)}" x2="${w}" y2="${((r * h) / grid.rows).toFixed(1)}" stroke="#ff00ff" stroke-width="2"/>`);
  }
  out.push(`<rect x="1" y="1" width="${w - 2}" height="${h - 2}" fill="none" stroke="#ff00ff" stroke-width="2"/>`);
  const t = prepared.plan.thumbnail;
  const caption = grid
    ? `${grid.cols}x${grid.rows} slices of ${prepared.plan.slice!.width}x${prepared.plan.slice!.height} px + a ${t.width}x${t.height} thumbnail (image ${img.width}x${img.height})`
    : `one view: the image resized to ${t.width}x${t.height} (no slices)`;
  out.push(`<text x="0" y="${h + 16}">${escapeXml(caption)}</text>`, '</svg>');
  return out.join('\n');
}

export interface MergeMap {
  /** The layer whose output D would merge (the config's insert_layer_id, or the one asked for). */
  layer: number;
  /** The view shown: 0 the thumbnail, 1.. the slices row-major. */
  view: number;
  /** The view's patch grid; windows are (h/2) x (w/2). */
  grid: { h: number; w: number };
  /** Mean pairwise cosine of each window's 4 tokens, row-major over windows. */
  similarity: Float64Array;
  /** The view's pixels. */
  image: RgbImage;
}

/**
 * How alike the 4 tokens of each 2x2 window are after ViT layer `layer` (default: the model's D
 * position, else layer 0), for one view of `img` (default: the first slice, else the thumbnail).
 */
export async function mergeMap(model: LlavaUHD, img: RgbImage, opts: { layer?: number; view?: number; maxSlices?: number } = {}): Promise<MergeMap> {
  const layers = model.vpm.encoder.layers;
  const layer = opts.layer ?? model.config.insert_layer_id ?? 0;
  if (!Number.isInteger(layer) || layer < 0 || layer >= layers.length) throw new Error(`mergeMap: layer ${layer} is not a ViT layer (0..${layers.length - 1})`);
  const prepared = prepareImage(img, model.config, opts.maxSlices);
  const view = opts.view ?? (prepared.views.length > 1 ? 1 : 0);
  if (!Number.isInteger(view) || view < 0 || view >= prepared.views.length) throw new Error(`mergeMap: view ${view} is not one of the image's ${prepared.views.length} views`);
  const device = model.vpm.post_layernorm.weight.device;
  const [pixels] = viewPixels([prepared.views[view]], device);
  const tokens = noGrad(() =>
    tidy(() => {
      const { x: x0, grids } = model.vpm.embed([pixels]);
      const seg = segmentIdsFor(grids, device);
      let x = x0;
      for (let i = 0; i <= layer; i++) x = layers[i].forward(x, seg);
      return x;
    }),
  );
  pixels.dispose();
  const data = await tokens.data();
  const d = tokens.shape[2];
  tokens.dispose();
  const p = model.config.vision_config.patch_size;
  const grid = { h: prepared.views[view].height / p, w: prepared.views[view].width / p };
  const wh = Math.floor(grid.h / 2);
  const ww = Math.floor(grid.w / 2);
  const similarity = new Float64Array(wh * ww);
  const row = (i: number) => data.subarray(i * d, (i + 1) * d);
  const cosine = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    let ab = 0, aa = 0, bb = 0;
    for (let j = 0; j < d; j++) {
      ab += a[j] * b[j];
      aa += a[j] * a[j];
      bb += b[j] * b[j];
    }
    return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 1;
  };
  for (let r = 0; r < wh; r++) {
    for (let c = 0; c < ww; c++) {
      const ids = [2 * r * grid.w + 2 * c, 2 * r * grid.w + 2 * c + 1, (2 * r + 1) * grid.w + 2 * c, (2 * r + 1) * grid.w + 2 * c + 1].map(row);
      let s = 0;
      for (let a = 0; a < 4; a++) for (let b = a + 1; b < 4; b++) s += cosine(ids[a], ids[b]);
      similarity[r * ww + c] = s / 6;
    }
  }
  return { layer, view, grid, similarity, image: prepared.views[view] };
}

/** The merge map drawn over its view: each 2x2 window tinted, redder where its tokens differ more. */
export function mergeMapSvg(m: MergeMap, displayWidth = 480): string {
  const scale = Math.min(displayWidth / m.image.width, displayWidth / m.image.height);
  const w = Math.round(m.image.width * scale);
  const h = Math.round(m.image.height * scale);
  const ww = Math.floor(m.grid.w / 2);
  const wh = Math.floor(m.grid.h / 2);
  const cw = w / (m.grid.w / 2);
  const ch = h / (m.grid.h / 2);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h + 22}" viewBox="0 0 ${w} ${h + 22}" font-family="sans-serif" font-size="12">`,
    `<image href="${pngDataUri(m.image)}" x="0" y="0" width="${w}" height="${h}" preserveAspectRatio="none"/>`,
  ];
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of m.similarity) {
    lo = Math.min(lo, s);
    hi = Math.max(hi, s);
  }
  for (let r = 0; r < wh; r++) {
    for (let c = 0; c < ww; c++) {
      const s = m.similarity[r * ww + c];
      // 0: the most alike window of the view, 1: the least alike
      const t = hi > lo ? (hi - s) / (hi - lo) : 0;
      out.push(`<rect x="${(c * cw).toFixed(1)}" y="${(r * ch).toFixed(1)}" width="${cw.toFixed(1)}" height="${ch.toFixed(1)}" fill="rgb(255,${Math.round(255 * (1 - t))},0)" fill-opacity="${(0.15 + 0.45 * t).toFixed(2)}" stroke="#000" stroke-opacity="0.15"/>`);
    }
  }
  const caption = `2x2 windows after layer ${m.layer}, view ${m.view}: token cosine ${lo.toFixed(2)} (red) .. ${hi.toFixed(2)} (pale)`;
  out.push(`<text x="0" y="${h + 16}">${escapeXml(caption)}</text>`, '</svg>');
  return out.join('\n');
}
