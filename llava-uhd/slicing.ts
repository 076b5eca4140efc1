/**
 * The slicing policy (LLaVA-UHD-V4.md, "Slice-based encoding"): a W x H image becomes a
 * thumbnail plus, when it is larger than about S x S, a grid of at most M slices, each view
 * resized so that every side is a multiple of the alignment unit u = 56 (patch 14 x 4: the
 * patch grid divides by 4, so D's 2x2 merge and the connector's 2x2 unshuffle are exact).
 *
 * `sliceImage` is pure geometry (sizes, no pixels), so the FLOPs model and the token layout can
 * use it; `makeViews` applies it to pixels. All arithmetic is float64 exactly as the reference
 * Python computes it (`/` true division, `int()` truncation, `round()` half to even, `math.log`
 * correctly rounded as glibc's).
 */
import type { SliceConfig } from './config.js';
import { cropImage, resizeBicubic, type RgbImage } from './image.js';

/** A width x height in pixels. */
export interface Size {
  width: number;
  height: number;
}

/** Slices across (`cols`) and down (`rows`). */
export interface Grid {
  cols: number;
  rows: number;
}

/** Where each view of an image comes from; the slice fields are null for a single-view image. */
export interface SlicePlan {
  /** The thumbnail's size (the only view when `grid` is null). */
  thumbnail: Size;
  /** The slice grid, or null when the image is encoded as one view (m <= 1). */
  grid: Grid | null;
  /** One slice's size (sw x sh). */
  slice: Size | null;
  /** The size the original is resized to before cutting: (sw * cols, sh * rows). */
  refined: Size | null;
}

/** The views of one image: thumbnail first, then the slices row-major (the LLM's order). */
export interface ImageViews {
  thumbnail: RgbImage;
  /** Row-major: slices[r * cols + c]. */
  slices: RgbImage[];
  plan: SlicePlan;
}

/** The default alignment unit u: patch 14 x 4 ("Slice-based encoding"). */
export const ALIGN_UNIT = 56;

/** Python's `round(x)` to an integer: halves go to the even neighbour (banker's rounding). */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const frac = x - f; // exact for |x| < 2^52
  if (frac > 0.5) return f + 1;
  if (frac < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** `align(x, u) = max(roundHalfEven(x/u)·u, u)`: the nearest multiple of u, at least u. */
export function align(x: number, u: number): number {
  return Math.max(roundHalfEven(x / u) * u, u);
}

function alignUnit(cfg: SliceConfig): number {
  return cfg.align_unit ?? ALIGN_UNIT;
}

/**
 * `bestResize(w, h, upscale)`: if `w·h > S²` or `upscale`, keep the aspect ratio r = w/h at
 * about S² pixels (h' = trunc(S/√r), w' = trunc(h'·r)); then align both sides to u.
 */
export function bestResize(w: number, h: number, upscale: boolean, cfg: SliceConfig): Size {
  const S = cfg.scale_resolution;
  const u = alignUnit(cfg);
  if (w * h > S * S || upscale) {
    const r = w / h;
    h = Math.trunc(S / Math.sqrt(r));
    w = Math.trunc(h * r);
  }
  return { width: align(w, u), height: align(h, u) };
}

/** m = min(ceil(W·H/S²), M): how many slices the image is worth. */
export function sliceCount(W: number, H: number, cfg: SliceConfig): number {
  const S = cfg.scale_resolution;
  return Math.min(Math.ceil((W * H) / (S * S)), cfg.max_slice_nums);
}

/**
 * The candidate grids for an image worth m slices, in the spec's order: slice counts
 * c in {m−1, m, m+1} without 1 and without c > M, ascending; per c, each divisor a ascending
 * gives (cols a, rows c/a).
 */
export function candidateGrids(m: number, cfg: SliceConfig): Grid[] {
  const grids: Grid[] = [];
  for (const c of [m - 1, m, m + 1]) {
    if (c <= 1 || c > cfg.max_slice_nums) continue;
    for (let a = 1; a <= c; a++) if (c % a === 0) grids.push({ cols: a, rows: c / a });
  }
  return grids;
}

// --- ln as Python computes it --------------------------------------------------------------
// The grid choice compares |ln(W/H) − ln(cols/rows)| in float64, and where two grids tie exactly
// (W/H = √(g1·g2), e.g. a square image between 2x3 and 3x2, or W/H = 3 between 3x2 and 6x1) the
// last bit of each log decides, as in the reference Python. Python's math.log (glibc) rounds
// these arguments (small rationals) correctly; V8's Math.log is one ulp off for some (ln 3),
// which flips such ties. So `chooseGrid` takes logs in double-double (about 106 bits) and rounds
// once. Non-exact near-ties differ by far more than an ulp (W²·b1·b2 ≠ H²·a1·a2 in integers),
// so only exact ties depend on this.

/** A double-double: the unevaluated sum hi + lo with |lo| <= ulp(hi)/2. */
interface DD {
  hi: number;
  lo: number;
}

const LN2: DD = { hi: 0.6931471805599453, lo: 2.3190468138462996e-17 };

function quickTwoSum(a: number, b: number): DD {
  const hi = a + b;
  return { hi, lo: b - (hi - a) };
}

function twoSum(a: number, b: number): DD {
  const hi = a + b;
  const bb = hi - a;
  return { hi, lo: a - (hi - bb) + (b - bb) };
}

/** a·b exactly as hi + lo (Dekker's product with Veltkamp splitting). */
function twoProd(a: number, b: number): DD {
  const p = a * b;
  const split = (x: number) => {
    const t = 134217729 * x; // 2^27 + 1
    const hi = t - (t - x);
    return [hi, x - hi];
  };
  const [ah, al] = split(a);
  const [bh, bl] = split(b);
  return { hi: p, lo: ah * bh - p + ah * bl + al * bh + al * bl };
}

function ddAdd(a: DD, b: DD): DD {
  const s = twoSum(a.hi, b.hi);
  const t = twoSum(a.lo, b.lo);
  const u = quickTwoSum(s.hi, s.lo + t.hi);
  return quickTwoSum(u.hi, u.lo + t.lo);
}

function ddMul(a: DD, b: DD): DD {
  const p = twoProd(a.hi, b.hi);
  return quickTwoSum(p.hi, p.lo + (a.hi * b.lo + a.lo * b.hi));
}

function ddDiv(a: DD, b: DD): DD {
  const q1 = a.hi / b.hi;
  let r = ddAdd(a, ddMul(b, { hi: -q1, lo: 0 }));
  const q2 = r.hi / b.hi;
  r = ddAdd(r, ddMul(b, { hi: -q2, lo: 0 }));
  const q3 = r.hi / b.hi;
  return ddAdd(quickTwoSum(q1, q2), { hi: q3, lo: 0 });
}

/**
 * ln x correctly rounded (as Python's math.log on glibc), for finite x > 0 (normal range):
 * x = m·2^e with m in [√½, √2), ln x = e·ln 2 + 2·atanh((m − 1)/(m + 1)), summed in
 * double-double.
 */
export function logCorrectlyRounded(x: number): number {
  if (!(x > 0) || !Number.isFinite(x)) return Math.log(x);
  let e = Math.round(Math.log2(x));
  let m = x / 2 ** e;
  while (m >= Math.SQRT2) {
    m /= 2;
    e++;
  }
  while (m < Math.SQRT1_2) {
    m *= 2;
    e--;
  }
  const s = ddDiv({ hi: m - 1, lo: 0 }, twoSum(m, 1)); // m − 1 is exact (Sterbenz)
  const s2 = ddMul(s, s);
  let term = s;
  let atanh: DD = { hi: 0, lo: 0 };
  // terms shrink by s² <= 0.03 each; stop once they are below 2^-110 of the sum
  for (let k = 0; k < 40 && Math.abs(term.hi) > 2 ** -110 * Math.abs(atanh.hi) * (2 * k + 1); k++) {
    atanh = ddAdd(atanh, ddDiv(term, { hi: 2 * k + 1, lo: 0 }));
    term = ddMul(term, s2);
  }
  const eLn2 = ddMul(LN2, { hi: e, lo: 0 });
  const sum = ddAdd(eLn2, { hi: 2 * atanh.hi, lo: 2 * atanh.lo });
  return sum.hi + sum.lo;
}

/**
 * The grid for a W x H image with m >= 2: the candidate minimising |ln(W/H) − ln(cols/rows)|,
 * the first minimum winning; null when the image is one view (m <= 1).
 */
export function chooseGrid(W: number, H: number, cfg: SliceConfig): Grid | null {
  const m = sliceCount(W, H, cfg);
  if (m <= 1) return null;
  const logRatio = logCorrectlyRounded(W / H);
  let best: Grid | null = null;
  let minError = Infinity;
  for (const g of candidateGrids(m, cfg)) {
    const error = Math.abs(logRatio - logCorrectlyRounded(g.cols / g.rows));
    if (error < minError) {
      best = g;
      minError = error;
    }
  }
  return best;
}

function checkConfig(cfg: SliceConfig): void {
  const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  if (!posInt(cfg.scale_resolution)) throw new Error(`slicing: scale_resolution must be a positive integer, got ${cfg.scale_resolution}`);
  if (!posInt(cfg.max_slice_nums)) throw new Error(`slicing: max_slice_nums must be a positive integer, got ${cfg.max_slice_nums}`);
  if (cfg.align_unit !== undefined && !posInt(cfg.align_unit)) throw new Error(`slicing: align_unit must be a positive integer, got ${cfg.align_unit}`);
}

/**
 * The views of a W x H image ("Slice-based encoding"): one view `bestResize(W, H, true)` when
 * m <= 1; otherwise the thumbnail `bestResize(W, H, false)` and a grid of slices, each
 * (sw, sh) = `bestResize(rw/cols, rh/rows, true)` with rw = align(W, cols), rh = align(H, rows).
 */
export function sliceImage(W: number, H: number, cfg: SliceConfig): SlicePlan {
  checkConfig(cfg);
  if (!Number.isInteger(W) || !Number.isInteger(H) || W <= 0 || H <= 0) {
    throw new Error(`slicing: image size must be positive integers, got ${W}x${H}`);
  }
  const grid = chooseGrid(W, H, cfg);
  if (grid === null) return { thumbnail: bestResize(W, H, true, cfg), grid: null, slice: null, refined: null };
  const thumbnail = bestResize(W, H, false, cfg);
  const rw = align(W, grid.cols);
  const rh = align(H, grid.rows);
  const slice = bestResize(rw / grid.cols, rh / grid.rows, true, cfg);
  const refined = { width: slice.width * grid.cols, height: slice.height * grid.rows };
  return { thumbnail, grid, slice, refined };
}

/**
 * Applies `sliceImage` to pixels: the thumbnail is the original resized (bicubic, antialiased);
 * the slices are sw x sh tiles, row-major, of the original resized to (sw·cols, sh·rows).
 */
export function makeViews(img: RgbImage, cfg: SliceConfig): ImageViews {
  const plan = sliceImage(img.width, img.height, cfg);
  const thumbnail = resizeBicubic(img, plan.thumbnail.width, plan.thumbnail.height);
  const slices: RgbImage[] = [];
  if (plan.grid && plan.slice && plan.refined) {
    const refined = resizeBicubic(img, plan.refined.width, plan.refined.height);
    const { width: sw, height: sh } = plan.slice;
    for (let r = 0; r < plan.grid.rows; r++) {
      for (let c = 0; c < plan.grid.cols; c++) slices.push(cropImage(refined, c * sw, r * sh, sw, sh));
    }
  }
  return { thumbnail, slices, plan };
}
