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

/** Slices an image (at most `maxSlices`, default the config's) and counts its tokens. */
export function prepareImage(img: RgbImage, config: LlavaUHDConfig, maxSlices?: number): PreparedImage {
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
  return views.map((img) => {
    const t = normalize(img);
    if (t.device === device) return t;
    const g = t.to(device);
    t.dispose();
    return g;
  });
}
