/**
 * From an image to what the model eats: the views of the slicing policy, their normalised
 * pixels, and the number of LLM tokens each view becomes (its patch grid / 16: two 2x2 merges,
 * D + connector or the baseline's two connector rounds).
 */
import type { Device, Tensor } from '../tensor/index.js';
import type { LlavaUHDConfig } from './config.js';
import { normalize, type RgbImage } from './image.js';
import type { ViewTokens } from './layout.js';
import { makeViews, type SlicePlan } from './slicing.js';

export interface PreparedImage {
  /** Thumbnail first, then the slices row-major. */
  views: RgbImage[];
  plan: SlicePlan;
  tokens: ViewTokens;
}

/** LLM tokens of a view of w x h pixels. */
export function viewTokens(config: LlavaUHDConfig, width: number, height: number): number {
  const p = config.vision_config.patch_size;
  return (width / p) * (height / p) / 16;
}

/**
 * The widest aspect ratio (long side / short side) an image may have. Slicing keeps a view's area
 * near S² only while its short side can shrink with the ratio; past (S/u)² (64 for the paper's
 * S = 448, u = 56) the short side stays one unit and the long one, with the tokens, grows
 * without bound (a 1x100000 image would be one 56 x 141680 view, 40,480 patches). The release's
 * training drops images beyond 10 (itembuilder.py); its inference has no limit.
 */
export const MAX_ASPECT_RATIO = 64;

export interface PrepareOptions {
  /** Refuse images whose long side / short side exceeds this; default MAX_ASPECT_RATIO. */
  maxAspectRatio?: number;
}

/** Throws when `img`'s aspect ratio is beyond `max`, naming the size and the ratio. */
export function checkAspectRatio(width: number, height: number, max = MAX_ASPECT_RATIO, where = 'prepareImage'): void {
  if (!(max >= 1)) throw new Error(`${where}: maxAspectRatio must be >= 1, got ${max}`);
  const ratio = Math.max(width, height) / Math.min(width, height);
  if (ratio > max) throw new Error(`${where}: a ${width}x${height} image has aspect ratio ${ratio.toFixed(1)}, over the limit ${max} (its views would grow with the ratio instead of staying near S²)`);
}

/** Slices an image (at most `maxSlices`, default the config's) and counts its tokens. */
export function prepareImage(img: RgbImage, config: LlavaUHDConfig, maxSlices?: number, opts: PrepareOptions = {}): PreparedImage {
  checkAspectRatio(img.width, img.height, opts.maxAspectRatio);
  const cfg = { ...config.slice_config, max_slice_nums: maxSlices ?? config.slice_config.max_slice_nums };
  const v = makeViews(img, cfg);
  const thumbnailTokens = viewTokens(config, v.plan.thumbnail.width, v.plan.thumbnail.height);
  const slices = v.plan.grid && v.plan.slice
    ? { rows: v.plan.grid.rows, cols: v.plan.grid.cols, tokensPerSlice: viewTokens(config, v.plan.slice.width, v.plan.slice.height) }
    : null;
  return { views: [v.thumbnail, ...v.slices], plan: v.plan, tokens: { thumbnailTokens, slices } };
}

/** Normalised [3, H, W] tensors of views on `device`. */
export function viewPixels(views: readonly RgbImage[], device: Device): Tensor[] {
  // straight to the device: no CPU tensor in between (each view's pixels are copied once, not
  // three times; a training step's image arrays are most of what its garbage collector sees)
  return views.map((img) => normalize(img, device));
}
