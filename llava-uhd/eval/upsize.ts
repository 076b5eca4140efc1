/**
 * The release wrapper's up-scaling of small images (`MiniCPM_4_V.generate_inner` in
 * `vlmevalkit/vlmeval/vlm/minicpm_v.py`, for the benchmarks `use_upsize_func` names): an image
 * of fewer than 1344 x 1344 pixels is resized, keeping its aspect ratio, to a random width
 * between its own and the width that would give 1344^2 pixels:
 *
 *   ratio = sqrt(1344^2 / (w h)); w' = randint(w, int(w ratio)); h' = int(w' / w * h)
 *
 * with Python's `random` seeded 0 once (`MiniCPM_4_V.__init__`) and PIL's default resize filter
 * (bicubic). One generator serves the whole run, one draw per image in the order the images are
 * given to the model, so a single-process VLMEvalKit run over the same rows in the same order
 * draws the same sizes (its multi-GPU runs split the rows, and so the draws, across processes).
 */
import { resizeBicubic, type RgbImage } from '../image.js';
import type { PythonRandom } from './python-random.js';

export const UPSIZE_PIXELS = 1344 * 1344;

/** The size an image of w x h is up-scaled to, drawing from `rng`; null when it is large enough (no draw). */
export function upsizeSize(width: number, height: number, rng: PythonRandom): { width: number; height: number } | null {
  if (width * height >= UPSIZE_PIXELS) return null;
  const ratio = Math.sqrt(UPSIZE_PIXELS / (width * height));
  const maxWidth = Math.trunc(width * ratio);
  const w = rng.randint(width, maxWidth);
  const h = Math.trunc((w / width) * height);
  return { width: w, height: h };
}

/** The up-scaled image (the input itself when it is large enough). */
export function upsize(img: RgbImage, rng: PythonRandom): RgbImage {
  const size = upsizeSize(img.width, img.height, rng);
  if (!size || (size.width === img.width && size.height === img.height)) return img;
  return resizeBicubic(img, size.width, size.height);
}
