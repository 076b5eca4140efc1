/**
 * Synthetic image Q/A whose answers need fine detail: the training and evaluation data of the
 * demo that shows slicing matters (LLaVA-UHD-V4.md, "Slice-based encoding": a thumbnail alone is
 * a 2-3x downscale; the slices keep full resolution).
 *
 * Three question types with few answer classes, so a tiny model trained from scratch can learn
 * them:
 * - `count`: "How many dots are there?" -> 1..4. Dots are `detail` x `detail` ink squares on a
 *   textured background, among larger squares of the same ink (not counted).
 * - `colour`: "What colour is the small square?" -> red, green, blue or yellow; one small square
 *   among larger shapes of random palette colours.
 * - `read`: "What digit is written in the box?" -> 0..9, drawn with the 5 x 7 bitmap font at
 *   scale 1 (1 px strokes) in a small framed box, among loose capital letters.
 * - `stripes`: "What colour is the top stripe?" -> red, green, blue or yellow. A square of 1 px
 *   stripes alternating the answer's colour (top row) and its complement, on a uniform grey of
 *   the stripes' mean: the thumbnail's antialiased resize turns it into that grey, so the
 *   thumbnail is a blank image, while the slices show the stripes. Unlike the marks above, the
 *   detail covers a large area and is drawn only on image sizes whose slices are exact crops of
 *   the image, at even rows, so every slice patch sees the stripes at the same phase and a fixed
 *   linear filter of the patch embedding finds them. That is what a tiny model trained from
 *   scratch for a few minutes can learn (the main job's task); the other three types need far
 *   more training than that (they stayed at chance in 400-step runs).
 *
 * What the thumbnail loses: every size kept shrinks by at least `minThumbnailFactor` (2) on each
 * side in the thumbnail, so 1 px strokes merge. Marks of `detail` px still leave a smudge, so
 * each count and colour image also holds "ghosts": soft, fainter marks of (detail+1)^2 px with
 * the same total ink, which the downscale turns into the same smudge as a real mark. Ghosts are
 * chosen so the thumbnail's smudges carry no answer: dots + ghosts = 5 always, and the colour
 * ghosts are the three palette colours the small square is not. At full resolution a real mark
 * is crisp and has nearly twice the contrast of a ghost.
 *
 * Determinism: everything derives from (options.seed, split, index) through a small counter-based
 * PRNG (below), never the tensor library's global RNG. Samples are built on demand from their
 * index; a split holds no pixels. Classes are balanced in shuffled blocks: every run of
 * `types.length` consecutive indices has each type once, and every C consecutive samples of a type
 * (C its class count) have each answer once.
 */
import type { SliceConfig } from '../config.js';
import type { RgbImage } from '../image.js';
import type { Turn } from '../layout.js';
import { sliceImage } from '../slicing.js';
import { drawText, textSize, type Rgb } from './font.js';

export type { Rgb } from './font.js';

export type QuestionType = 'count' | 'colour' | 'read' | 'stripes';
export const QUESTION_TYPES: readonly QuestionType[] = ['count', 'colour', 'read', 'stripes'];
/** The presets' types: the small marks and digits (`stripes` is asked for by name). */
export const DETAIL_TYPES: readonly QuestionType[] = ['count', 'colour', 'read'];

export type Split = 'train' | 'val' | 'test';
export const SPLITS: readonly Split[] = ['train', 'val', 'test'];

/** One fixed phrasing per type (a tiny model should not have to learn paraphrases). */
export const QUESTIONS: Readonly<Record<QuestionType, string>> = {
  count: 'How many dots are there?',
  colour: 'What colour is the small square?',
  read: 'What digit is written in the box?',
  stripes: 'What colour is the top stripe?',
};

/** The colour names `colour` and `stripes` answer with (the keys of PALETTE). */
const COLOUR_NAMES: readonly string[] = ['red', 'green', 'blue', 'yellow'];

/** The answer classes of each type. */
export const ANSWERS: Readonly<Record<QuestionType, readonly string[]>> = {
  count: ['1', '2', '3', '4'],
  colour: COLOUR_NAMES,
  read: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
  stripes: COLOUR_NAMES,
};

/** The colours the `colour` answers name (the small square and the larger shapes use them). */
export const PALETTE: Readonly<Record<string, Rgb>> = {
  red: [215, 35, 35],
  green: [30, 160, 55],
  blue: [40, 80, 220],
  yellow: [235, 200, 30],
};

/** Dots plus ghosts in a `count` image: fixed, so the thumbnail's smudge count says nothing. */
export const COUNT_MARKS = 5;

export interface SyntheticOptions {
  /** Image sides are the multiples of `step` in minSide..maxSide (then filtered, see below). */
  minSide: number;
  maxSide: number;
  step: number;
  /** Side in px of the fine marks (dots, the small square); the digit's font scale is ceil(detail / 2). */
  detail: number;
  /** The slicing the model will use: it decides each size's thumbnail. */
  slice: SliceConfig;
  /** Only sizes whose thumbnail shrinks both sides by at least this factor are drawn. */
  minThumbnailFactor: number;
  /** Add ghost marks (see the module comment); without them the thumbnail keeps a blurred hint. */
  ghosts: boolean;
  /** The question types to draw, in shuffled blocks. */
  types: readonly QuestionType[];
  /** Mixed into every split's seed: another value gives another dataset. */
  seed: number;
}

export type PresetName = 'tiny' | 'paper';

/**
 * `tiny`: sides 112..336 px for scale_resolution 112 (thumbnails of 56..168 px, 2-3x smaller),
 * the CPU demo's setting. `paper`: sides 448..1344 px for the release's S = 448.
 */
export const PRESETS: Readonly<Record<PresetName, Readonly<SyntheticOptions>>> = {
  tiny: {
    minSide: 112, maxSide: 336, step: 56, detail: 2,
    slice: { scale_resolution: 112, max_slice_nums: 9, align_unit: 56 },
    minThumbnailFactor: 2, ghosts: true, types: DETAIL_TYPES, seed: 0,
  },
  paper: {
    minSide: 448, maxSide: 1344, step: 56, detail: 2,
    slice: { scale_resolution: 448, max_slice_nums: 9, align_unit: 56 },
    minThumbnailFactor: 2, ghosts: true, types: DETAIL_TYPES, seed: 0,
  },
};

/** A preset by name, with some fields replaced. */
export function syntheticOptions(preset: PresetName = 'tiny', overrides: Partial<SyntheticOptions> = {}): SyntheticOptions {
  const base = PRESETS[preset];
  if (!base) throw new Error(`synthetic: unknown preset '${String(preset)}', expected ${Object.keys(PRESETS).join(' or ')}`);
  return { ...base, ...overrides };
}

// ---------------------------------------------------------------------------------------------
// PRNG: a 32-bit counter passed through MurmurHash3's finaliser (a bijection with good
// avalanche), so a stream is fixed by its seed alone and streams for different seeds are unrelated.

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A 32-bit seed from several integers (order matters). */
export function hashSeed(...parts: number[]): number {
  let h = 0x3c6ef372;
  for (const p of parts) h = fmix32((h ^ fmix32((p >>> 0) + 0x9e3779b9)) >>> 0);
  return h;
}

/** A seeded stream of uniform numbers with the few helpers the scenes need. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    return fmix32(this.state) / 4294967296;
  }
  /** Uniform integer in lo..hi inclusive. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + this.next() * (hi - lo);
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
  /** A new array: `items` in a uniformly random order (Fisher-Yates). */
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }
}

const SPLIT_SEEDS: Readonly<Record<Split, number>> = { train: 0x7a41_0001, val: 0x7a41_0002, test: 0x7a41_0003 };
const STREAM = { type: 1, answer: 2, scene: 3 } as const;

// ---------------------------------------------------------------------------------------------
// Scenes: a plain description of what is drawn, rendered in order onto a textured background.

/** What a shape is for: tests remove roles (e.g. the dots) to measure what they contribute. */
export type Role = 'dot' | 'ghost' | 'distractor' | 'target' | 'box' | 'digit' | 'clutter';

export type Shape =
  /** A filled rectangle, alpha-blended over what is below. */
  | { kind: 'rect'; role: Role; x: number; y: number; w: number; h: number; colour: Rgb; alpha: number }
  /** A soft mark: a size x size square at `alpha` whose four corner pixels get alpha / 2. */
  | { kind: 'smudge'; role: Role; x: number; y: number; size: number; colour: Rgb; alpha: number }
  /** A disc of radius r centred at (cx, cy) in pixel-edge coordinates. */
  | { kind: 'disc'; role: Role; cx: number; cy: number; r: number; colour: Rgb }
  /** A box: a 1 px border of `colour` around an interior filled with `fill`. */
  | { kind: 'frame'; role: Role; x: number; y: number; w: number; h: number; colour: Rgb; fill: Rgb }
  /** Horizontal 1 px stripes: image rows with an even y get `colour`, odd ones `other`. */
  | { kind: 'stripes'; role: Role; x: number; y: number; w: number; h: number; colour: Rgb; other: Rgb }
  /** Bitmap-font text (llava-uhd/data/font.ts). */
  | { kind: 'text'; role: Role; x: number; y: number; text: string; scale: number; colour: Rgb };

export interface Background {
  seed: number;
  /** The mean colour. */
  base: Rgb;
  /** Amplitude (grey levels) of smooth value noise on a lattice of `cell` px. */
  texture: number;
  cell: number;
  /** Amplitude of independent per-pixel noise. */
  grain: number;
}

export interface Scene {
  width: number;
  height: number;
  background: Background;
  shapes: Shape[];
}

/** A sample without its pixels (cheap: for baselines and listings). */
export interface SampleSpec {
  index: number;
  split: Split;
  type: QuestionType;
  question: string;
  answer: string;
  width: number;
  height: number;
  scene: Scene;
}

/** A sample with its image and conversation (the shape the trainer's `Dataset.get` returns). */
export interface SyntheticSample extends SampleSpec {
  image: RgbImage;
  /** `[image]`: the trainer's Sample holds a list of images. */
  images: RgbImage[];
  /** `<image>\n` + the question, then the answer. */
  turns: Turn[];
}

const clampByte = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

/** Smooth value noise plus grain around the base colour. */
function drawBackground(width: number, height: number, bg: Background): Uint8Array {
  const rng = new Rng(bg.seed);
  const cols = Math.ceil(width / bg.cell) + 2;
  const rows = Math.ceil(height / bg.cell) + 2;
  const lattice = new Float32Array(cols * rows);
  for (let i = 0; i < lattice.length; i++) lattice[i] = rng.uniform(-1, 1);
  const smooth = (t: number) => t * t * (3 - 2 * t);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const gy = y / bg.cell;
    const y0 = Math.floor(gy);
    const ty = smooth(gy - y0);
    for (let x = 0; x < width; x++) {
      const gx = x / bg.cell;
      const x0 = Math.floor(gx);
      const tx = smooth(gx - x0);
      const a = lattice[y0 * cols + x0];
      const b = lattice[y0 * cols + x0 + 1];
      const c = lattice[(y0 + 1) * cols + x0];
      const d = lattice[(y0 + 1) * cols + x0 + 1];
      const noise = (a + (b - a) * tx) * (1 - ty) + (c + (d - c) * tx) * ty;
      const v = noise * bg.texture + rng.uniform(-bg.grain, bg.grain);
      const o = (y * width + x) * 3;
      data[o] = clampByte(bg.base[0] + v);
      data[o + 1] = clampByte(bg.base[1] + v);
      data[o + 2] = clampByte(bg.base[2] + v);
    }
  }
  return data;
}

function blend(img: RgbImage, x: number, y: number, colour: Rgb, alpha: number): void {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  const o = (y * img.width + x) * 3;
  for (let c = 0; c < 3; c++) img.data[o + c] = clampByte(img.data[o + c] + (colour[c] - img.data[o + c]) * alpha);
}

function drawShape(img: RgbImage, s: Shape): void {
  switch (s.kind) {
    case 'rect':
      for (let y = s.y; y < s.y + s.h; y++) for (let x = s.x; x < s.x + s.w; x++) blend(img, x, y, s.colour, s.alpha);
      return;
    case 'smudge':
      for (let j = 0; j < s.size; j++) {
        for (let i = 0; i < s.size; i++) {
          const corner = (i === 0 || i === s.size - 1) && (j === 0 || j === s.size - 1);
          blend(img, s.x + i, s.y + j, s.colour, corner ? s.alpha / 2 : s.alpha);
        }
      }
      return;
    case 'disc':
      for (let y = Math.floor(s.cy - s.r); y <= Math.ceil(s.cy + s.r); y++) {
        for (let x = Math.floor(s.cx - s.r); x <= Math.ceil(s.cx + s.r); x++) {
          if ((x + 0.5 - s.cx) ** 2 + (y + 0.5 - s.cy) ** 2 <= s.r * s.r) blend(img, x, y, s.colour, 1);
        }
      }
      return;
    case 'frame':
      for (let y = s.y; y < s.y + s.h; y++) {
        for (let x = s.x; x < s.x + s.w; x++) {
          const edge = x === s.x || y === s.y || x === s.x + s.w - 1 || y === s.y + s.h - 1;
          blend(img, x, y, edge ? s.colour : s.fill, 1);
        }
      }
      return;
    case 'stripes':
      for (let y = s.y; y < s.y + s.h; y++) for (let x = s.x; x < s.x + s.w; x++) blend(img, x, y, y % 2 === 0 ? s.colour : s.other, 1);
      return;
    case 'text':
      drawText(img, s.text, s.x, s.y, s.scale, s.colour);
      return;
  }
}

/** The pixels of a scene: the background, then the shapes in order. */
export function renderScene(scene: Scene): RgbImage {
  const img: RgbImage = { width: scene.width, height: scene.height, data: drawBackground(scene.width, scene.height, scene.background) };
  for (const s of scene.shapes) drawShape(img, s);
  return img;
}

/** The bounding box of a shape in pixels. */
export function shapeBounds(s: Shape): { x: number; y: number; w: number; h: number } {
  switch (s.kind) {
    case 'rect':
    case 'frame':
    case 'stripes':
      return { x: s.x, y: s.y, w: s.w, h: s.h };
    case 'smudge':
      return { x: s.x, y: s.y, w: s.size, h: s.size };
    case 'disc':
      return { x: Math.floor(s.cx - s.r), y: Math.floor(s.cy - s.r), w: Math.ceil(2 * s.r) + 1, h: Math.ceil(2 * s.r) + 1 };
    case 'text': {
      const { width, height } = textSize(s.text, s.scale);
      return { x: s.x, y: s.y, w: width, h: height };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Sizes, types and answers.

function checkOptions(o: SyntheticOptions): void {
  const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  const fail = (what: string): never => {
    throw new Error(`synthetic: ${what}`);
  };
  for (const k of ['minSide', 'maxSide', 'step', 'detail'] as const) if (!posInt(o[k])) fail(`${k} must be a positive integer, got ${o[k]}`);
  if (o.minSide > o.maxSide) fail(`minSide ${o.minSide} is larger than maxSide ${o.maxSide}`);
  if (!(o.minThumbnailFactor > 0)) fail(`minThumbnailFactor must be positive, got ${o.minThumbnailFactor}`);
  if (!Number.isInteger(o.seed)) fail(`seed must be an integer, got ${o.seed}`);
  if (!Array.isArray(o.types) || o.types.length === 0) fail('types must list at least one question type');
  for (const t of o.types) if (!QUESTION_TYPES.includes(t)) fail(`unknown question type '${String(t)}', expected ${QUESTION_TYPES.join(', ')}`);
  if (new Set(o.types).size !== o.types.length) fail(`types lists a type twice: ${o.types.join(', ')}`);
}

const sizeCache = new WeakMap<SyntheticOptions, { width: number; height: number }[]>();

/**
 * The image sizes a sample may have: both sides multiples of `step` in minSide..maxSide whose
 * thumbnail (`sliceImage` with `slice`) is at least `minThumbnailFactor` times smaller on each
 * side. For `tiny` (S = 112) that leaves 13 of 25 sizes, 112x336 to 336x336.
 */
export function imageSizes(o: SyntheticOptions): { width: number; height: number }[] {
  const cached = sizeCache.get(o);
  if (cached) return cached;
  checkOptions(o);
  const sizes: { width: number; height: number }[] = [];
  const first = Math.ceil(o.minSide / o.step) * o.step;
  for (let w = first; w <= o.maxSide; w += o.step) {
    for (let h = first; h <= o.maxSide; h += o.step) {
      const t = sliceImage(w, h, o.slice).thumbnail;
      if (w / t.width >= o.minThumbnailFactor && h / t.height >= o.minThumbnailFactor) sizes.push({ width: w, height: h });
    }
  }
  if (sizes.length === 0) {
    throw new Error(`synthetic: no size in ${o.minSide}..${o.maxSide} (step ${o.step}) shrinks ${o.minThumbnailFactor}x in the thumbnail at scale_resolution ${o.slice.scale_resolution}`);
  }
  sizeCache.set(o, sizes);
  return sizes;
}

const exactCache = new WeakMap<SyntheticOptions, { width: number; height: number }[]>();

/**
 * The sizes of `imageSizes` whose slices are exact crops (the slicing's refined image is the image
 * itself, not a resampling): where `stripes` images are drawn, so 1 px rows reach the ViT intact.
 * For `tiny`: 112x336, 224x224, 224x336, 336x112, 336x224, 336x336.
 */
export function exactSliceSizes(o: SyntheticOptions): { width: number; height: number }[] {
  const cached = exactCache.get(o);
  if (cached) return cached;
  const sizes = imageSizes(o).filter(({ width, height }) => {
    const r = sliceImage(width, height, o.slice).refined;
    return r !== null && r.width === width && r.height === height;
  });
  if (sizes.length === 0) throw new Error(`synthetic: no size in ${o.minSide}..${o.maxSide} slices into exact crops at scale_resolution ${o.slice.scale_resolution}`);
  exactCache.set(o, sizes);
  return sizes;
}

function splitSeed(split: Split, o: SyntheticOptions): number {
  const s = SPLIT_SEEDS[split];
  if (s === undefined) throw new Error(`synthetic: unknown split '${String(split)}', expected ${SPLITS.join(', ')}`);
  return hashSeed(s, o.seed);
}

function checkIndex(index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= 2 ** 32) throw new Error(`synthetic: index must be an integer in 0..2^32-1, got ${index}`);
}

/** The type and answer of sample `index` (block-balanced, see the module comment). */
export function questionOf(index: number, split: Split, o: SyntheticOptions): { type: QuestionType; answer: string } {
  checkIndex(index);
  checkOptions(o);
  const seed = splitSeed(split, o);
  const T = o.types.length;
  const block = Math.floor(index / T);
  const type = new Rng(hashSeed(seed, STREAM.type, block)).shuffle(o.types)[index % T];
  // Each block of T indices has each type once, so this is the block number: the sample's rank among its type.
  const rank = block;
  const classes = ANSWERS[type];
  const C = classes.length;
  const order = new Rng(hashSeed(seed, STREAM.answer, QUESTION_TYPES.indexOf(type), Math.floor(rank / C))).shuffle(classes);
  return { type, answer: order[rank % C] };
}

/** Places rectangles without overlap (with a margin), inside a border of 2 px. */
class Placer {
  private readonly taken: { x: number; y: number; w: number; h: number }[] = [];
  constructor(private readonly rng: Rng, private readonly width: number, private readonly height: number, private readonly margin: number) {}
  place(w: number, h: number, what: string): { x: number; y: number } {
    for (let attempt = 0; attempt < 1000; attempt++) {
      const x = this.rng.int(2, this.width - w - 2);
      const y = this.rng.int(2, this.height - h - 2);
      const m = this.margin;
      const clash = this.taken.some((r) => x < r.x + r.w + m && r.x < x + w + m && y < r.y + r.h + m && r.y < y + h + m);
      if (!clash) {
        this.taken.push({ x, y, w, h });
        return { x, y };
      }
    }
    throw new Error(`synthetic: no room for ${what} (${w}x${h}) in a ${this.width}x${this.height} image`);
  }
}

/** A dark ink: each channel in lo..hi. */
const ink = (rng: Rng, lo: number, hi: number): Rgb => [rng.int(lo, hi), rng.int(lo, hi), rng.int(lo, hi)];

/** Ghost alpha so that a (d+1)^2 smudge (corners at half) holds the ink of a d x d mark. */
export function ghostAlpha(detail: number): number {
  return (detail * detail) / ((detail + 1) ** 2 - 2);
}

/** The colour opposite `c`: stripes of both average to mid grey. */
export function complement(c: Rgb): Rgb {
  return [255 - c[0], 255 - c[1], 255 - c[2]];
}

/** The background of `stripes` images: the stripes' mean, so the thumbnail sees a blank image. */
export const STRIPES_GREY = 128;

/**
 * `stripes`: one square, side half the shorter image side, at even coordinates (so the answer
 * colour lands on even rows, the top one included), striped in the answer's colour and its
 * complement, on a uniform background of the stripes' mean grey.
 */
function stripesShapes(rng: Rng, width: number, height: number, answer: string): Shape[] {
  const even = (v: number) => 2 * Math.floor(v / 2);
  const side = even(0.5 * Math.min(width, height));
  const x = 2 * rng.int(1, (width - side) / 2 - 1);
  const y = 2 * rng.int(1, (height - side) / 2 - 1);
  return [{ kind: 'stripes', role: 'target', x, y, w: side, h: side, colour: PALETTE[answer], other: complement(PALETTE[answer]) }];
}

/** The scene of sample `index` of `split`: size, background and shapes, no pixels. */
export function sampleSpec(index: number, split: Split, o: SyntheticOptions = PRESETS.tiny): SampleSpec {
  const { type, answer } = questionOf(index, split, o);
  const rng = new Rng(hashSeed(splitSeed(split, o), STREAM.scene, index));
  const { width, height } = rng.pick(type === 'stripes' ? exactSliceSizes(o) : imageSizes(o));
  const d = o.detail;
  const lum = rng.int(175, 215);
  const background: Background = type === 'stripes'
    ? { seed: 0, base: [STRIPES_GREY, STRIPES_GREY, STRIPES_GREY], texture: 0, cell: 8, grain: 0 }
    : {
      seed: hashSeed(rng.int(0, 2 ** 31 - 1), index),
      base: [lum + rng.int(-12, 12), lum + rng.int(-12, 12), lum + rng.int(-12, 12)],
      texture: rng.uniform(10, 22),
      cell: rng.int(4, 8),
      grain: 6,
    };
  const shapes: Shape[] = [];
  const placer = new Placer(rng, width, height, 2 * d + 2);
  const big = () => rng.int(4 * d + 4, 8 * d + 6);
  const ghost = (colour: Rgb) => {
    const size = d + 1;
    const p = placer.place(size, size, 'a ghost');
    shapes.push({ kind: 'smudge', role: 'ghost', ...p, size, colour, alpha: ghostAlpha(d) * rng.uniform(0.8, 1.3) });
  };

  if (type === 'stripes') {
    shapes.push(...stripesShapes(rng, width, height, answer));
  } else if (type === 'count') {
    const dots = Number(answer);
    const colour = ink(rng, 10, 70);
    for (let k = rng.int(1, 3); k > 0; k--) {
      const s = rng.int(3 * d + 2, 6 * d + 4);
      shapes.push({ kind: 'rect', role: 'distractor', ...placer.place(s, s, 'a square'), w: s, h: s, colour, alpha: 1 });
    }
    for (let k = 0; k < dots; k++) shapes.push({ kind: 'rect', role: 'dot', ...placer.place(d, d, 'a dot'), w: d, h: d, colour, alpha: 1 });
    if (o.ghosts) for (let k = dots; k < COUNT_MARKS; k++) ghost(colour);
  } else if (type === 'colour') {
    const names = Object.keys(PALETTE);
    for (let k = rng.int(2, 4); k > 0; k--) {
      const s = big();
      const colour = PALETTE[rng.pick(names)];
      const p = placer.place(s, s, 'a shape');
      shapes.push(rng.next() < 0.5
        ? { kind: 'rect', role: 'distractor', ...p, w: s, h: s, colour, alpha: 1 }
        : { kind: 'disc', role: 'distractor', cx: p.x + s / 2, cy: p.y + s / 2, r: s / 2 - 0.25, colour });
    }
    shapes.push({ kind: 'rect', role: 'target', ...placer.place(d, d, 'the small square'), w: d, h: d, colour: PALETTE[answer], alpha: 1 });
    if (o.ghosts) for (const name of rng.shuffle(names.filter((n) => n !== answer))) ghost(PALETTE[name]);
  } else {
    const scale = Math.ceil(d / 2);
    const glyph = textSize('0', scale);
    const pad = scale + 1;
    const w = glyph.width + 2 * pad + 2;
    const h = glyph.height + 2 * pad + 2;
    const box = placer.place(w, h, 'the box');
    const fill = rng.int(235, 255);
    shapes.push({ kind: 'frame', role: 'box', ...box, w, h, colour: ink(rng, 10, 60), fill: [fill, fill, fill] });
    shapes.push({ kind: 'text', role: 'digit', x: box.x + 1 + pad, y: box.y + 1 + pad, text: answer, scale, colour: ink(rng, 0, 100) });
    const letters = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
    for (let k = rng.int(2, 4); k > 0; k--) {
      shapes.push({ kind: 'text', role: 'clutter', ...placer.place(glyph.width, glyph.height, 'a letter'), text: letters[rng.int(0, 25)], scale, colour: ink(rng, 0, 100) });
    }
    for (let k = rng.int(1, 2); k > 0; k--) {
      const s = big();
      shapes.push({ kind: 'rect', role: 'distractor', ...placer.place(s, s, 'a shape'), w: s, h: s, colour: PALETTE[rng.pick(Object.keys(PALETTE))], alpha: 1 });
    }
  }
  return { index, split, type, question: QUESTIONS[type], answer, width, height, scene: { width, height, background, shapes } };
}

/** The conversation of a sample: the image and question, then the answer. */
export function sampleTurns(spec: Pick<SampleSpec, 'question' | 'answer'>): Turn[] {
  return [
    { role: 'user', content: `<image>\n${spec.question}` },
    { role: 'assistant', content: spec.answer },
  ];
}

/** Sample `index` of `split`, pixels included; the same arguments always give the same bytes. */
export function generateSample(index: number, split: Split, o: SyntheticOptions = PRESETS.tiny): SyntheticSample {
  const spec = sampleSpec(index, split, o);
  const image = renderScene(spec.scene);
  return { ...spec, image, images: [image], turns: sampleTurns(spec) };
}

/**
 * A split of `size` samples, built on demand: `get(i)` renders sample i (nothing is kept), so a
 * large split costs no memory. Structurally a trainer `Dataset` (llava-uhd/train.ts).
 */
export class SyntheticSplit implements Iterable<SyntheticSample> {
  constructor(readonly split: Split, readonly size: number, readonly options: SyntheticOptions) {
    if (!Number.isInteger(size) || size < 0) throw new Error(`makeSplit: size must be a non-negative integer, got ${size}`);
    imageSizes(options); // validates the options once, here
  }
  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.size) throw new Error(`${this.split} split: index ${i} is outside 0..${this.size - 1}`);
  }
  /** Sample i without pixels. */
  spec(i: number): SampleSpec {
    this.check(i);
    return sampleSpec(i, this.split, this.options);
  }
  /** Sample i with its image. */
  get(i: number): SyntheticSample {
    this.check(i);
    return generateSample(i, this.split, this.options);
  }
  /** Types and answers of all samples, cheaply (no scenes, no pixels). */
  *questions(): IterableIterator<{ index: number; type: QuestionType; answer: string }> {
    for (let i = 0; i < this.size; i++) yield { index: i, ...questionOf(i, this.split, this.options) };
  }
  *[Symbol.iterator](): IterableIterator<SyntheticSample> {
    for (let i = 0; i < this.size; i++) yield this.get(i);
  }
}

/** The `size` samples of a split (train, val and test differ by seed). */
export function makeSplit(split: Split, size: number, o: SyntheticOptions = PRESETS.tiny): SyntheticSplit {
  return new SyntheticSplit(split, size, o);
}

// ---------------------------------------------------------------------------------------------
// Baselines for the report.

export interface TypeBaseline {
  type: QuestionType;
  /** Samples of this type scored. */
  n: number;
  accuracy: number;
  /** The answer always given (majority baseline only). */
  answer?: string;
}

export interface BaselineReport {
  byType: TypeBaseline[];
  /** Accuracy over all samples scored. */
  overall: number;
  n: number;
}

type Labelled = { type: QuestionType; answer: string };

function report(byType: TypeBaseline[]): BaselineReport {
  const n = byType.reduce((s, b) => s + b.n, 0);
  return { byType, n, overall: n === 0 ? 0 : byType.reduce((s, b) => s + b.accuracy * b.n, 0) / n };
}

function countByType(samples: Iterable<Labelled>): Map<QuestionType, Map<string, number>> {
  const counts = new Map<QuestionType, Map<string, number>>();
  for (const { type, answer } of samples) {
    const m = counts.get(type) ?? new Map<string, number>();
    m.set(answer, (m.get(answer) ?? 0) + 1);
    counts.set(type, m);
  }
  return counts;
}

/** Expected accuracy of a uniform guess among each type's classes, over `samples`' types. */
export function chanceBaseline(samples: Iterable<Labelled>): BaselineReport {
  const counts = countByType(samples);
  return report(QUESTION_TYPES.filter((t) => counts.has(t)).map((type) => {
    const n = [...counts.get(type)!.values()].reduce((a, b) => a + b, 0);
    return { type, n, accuracy: 1 / ANSWERS[type].length };
  }));
}

/**
 * Always answering each type's most frequent answer in `train` (ties: the first in ANSWERS),
 * scored on `evaluate` (default: `train` itself). Balanced splits score about 1 / classes.
 */
export function majorityBaseline(train: Iterable<Labelled>, evaluate?: Iterable<Labelled>): BaselineReport {
  const trainCounts = countByType(train);
  const evalCounts = evaluate === undefined ? trainCounts : countByType(evaluate);
  return report(QUESTION_TYPES.filter((t) => evalCounts.has(t)).map((type) => {
    const seen = trainCounts.get(type) ?? new Map<string, number>();
    let answer = ANSWERS[type][0];
    for (const a of ANSWERS[type]) if ((seen.get(a) ?? 0) > (seen.get(answer) ?? 0)) answer = a;
    const m = evalCounts.get(type)!;
    const n = [...m.values()].reduce((a, b) => a + b, 0);
    return { type, n, accuracy: (m.get(answer) ?? 0) / n, answer };
  }));
}
