/**
 * The pretraining mix: synthetic images whose content a small tower can see in minutes, with
 * labels for the tower's classification heads (phase 1 of `uhd pretrain`) and question/answer
 * pairs for the connector and language model (phase 2).
 *
 * Every image holds, on a textured light background at one of several sizes:
 * - one large shape (square, disc, bar or cross, 22-36 px) in one of the four palette colours,
 *   whose centre lies in one of the four quadrants;
 * - 1-4 dark blocks (7-9 px squares, never touching anything else);
 * - a large digit (the 5 x 7 font at scale 3: 3 px strokes) in a white framed box;
 * - a few small loose capital letters (1 px strokes, clutter: no label).
 * An earlier attempt found that 2 px dots, a 2 px square and a 1 px digit were not learnt by a
 * tower of width 64 x 6 layers in minutes, while region colours and large shapes were; these
 * marks are a few patches wide at full resolution and still a patch wide in the thumbnail.
 *
 * Determinism: everything derives from (seed, split, index) through synthetic.ts's counter PRNG.
 * Answers are balanced per label in shuffled blocks of each label's class count.
 */
import type { RgbImage } from '../image.js';
import type { Turn } from '../layout.js';
import type { Dataset, Sample } from '../train.js';
import { textSize, type Rgb } from './font.js';
import { hashSeed, PALETTE, renderScene, Rng, sampleTurns, type Scene, type Shape, type Split } from './synthetic.js';

/** The labels of an image, one class index per head. */
export type MixLabel = 'shape' | 'colour' | 'position' | 'count' | 'digit';
export const MIX_LABELS: readonly MixLabel[] = ['shape', 'colour', 'position', 'count', 'digit'];

/** Each label's classes (also the answers of its question). */
export const MIX_CLASSES: Readonly<Record<MixLabel, readonly string[]>> = {
  shape: ['square', 'disc', 'bar', 'cross'],
  colour: ['red', 'green', 'blue', 'yellow'],
  position: ['top left', 'top right', 'bottom left', 'bottom right'],
  count: ['1', '2', '3', '4'],
  digit: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
};

/** One fixed phrasing per label. */
export const MIX_QUESTIONS: Readonly<Record<MixLabel, string>> = {
  shape: 'What is the large shape?',
  colour: 'What colour is the large shape?',
  position: 'Where is the large shape?',
  count: 'How many dark blocks are there?',
  digit: 'What is the large digit?',
};

/** The whole-word answers a tiny byte tokenizer should keep as single tokens. */
export const MIX_WORDS: readonly string[] = [...MIX_CLASSES.shape, ...MIX_CLASSES.colour, 'top', 'bottom', 'left', 'right'];

/** Image sizes (multiples of 56, so every view is whole patches of both 2x2 merges). */
export const MIX_SIZES: readonly { width: number; height: number }[] = [
  { width: 112, height: 112 },
  { width: 168, height: 168 },
  { width: 224, height: 224 },
  { width: 224, height: 112 },
  { width: 112, height: 224 },
];

export interface MixSample extends Sample {
  index: number;
  split: Split;
  /** Class index per label. */
  labels: Record<MixLabel, number>;
  question: string;
  scene: Scene;
}

const SPLIT_SEEDS: Readonly<Record<Split, number>> = { train: 0x5e71_0001, val: 0x5e71_0002, test: 0x5e71_0003 };
const LETTERS = 'ABCDEFGHJKLMNPRSTUVWXYZ';
const INK: Rgb = [35, 35, 40];

/** Class of `label` for image `index`: balanced in shuffled blocks of the class count. */
function balancedClass(label: MixLabel, index: number, split: Split, seed: number): number {
  const n = MIX_CLASSES[label].length;
  const block = Math.floor(index / n);
  const order = new Rng(hashSeed(seed, SPLIT_SEEDS[split], MIX_LABELS.indexOf(label) + 11, block)).shuffle([...Array(n).keys()]);
  return order[index % n];
}

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}
const overlaps = (a: Box, b: Box, gap: number) => a.x < b.x + b.w + gap && b.x < a.x + a.w + gap && a.y < b.y + b.h + gap && b.y < a.y + a.h + gap;

/** A box of w x h inside `region`, clear of `taken` by `gap` px (rejection sampling). */
function place(rng: Rng, w: number, h: number, region: Box, taken: Box[], gap: number, what: string): Box {
  for (let attempt = 0; attempt < 500; attempt++) {
    const b = { x: rng.int(region.x, region.x + region.w - w), y: rng.int(region.y, region.y + region.h - h), w, h };
    if (!taken.some((t) => overlaps(t, b, gap))) {
      taken.push(b);
      return b;
    }
  }
  throw new Error(`pretrain-mix: no room for ${what} (${w}x${h}) in ${region.w}x${region.h}`);
}

function shapeOf(kind: string, b: Box, colour: Rgb): Shape[] {
  switch (kind) {
    case 'square':
      return [{ kind: 'rect', role: 'target', ...b, colour, alpha: 1 }];
    case 'disc':
      return [{ kind: 'disc', role: 'target', cx: b.x + b.w / 2, cy: b.y + b.h / 2, r: b.w / 2, colour }];
    case 'bar': {
      const h = Math.round(b.h / 3);
      return [{ kind: 'rect', role: 'target', x: b.x, y: b.y + Math.round((b.h - h) / 2), w: b.w, h, colour, alpha: 1 }];
    }
    default: {
      const t = Math.round(b.w / 3);
      const o = Math.round((b.w - t) / 2);
      return [
        { kind: 'rect', role: 'target', x: b.x + o, y: b.y, w: t, h: b.h, colour, alpha: 1 },
        { kind: 'rect', role: 'target', x: b.x, y: b.y + o, w: b.w, h: t, colour, alpha: 1 },
      ];
    }
  }
}

/** Image `index` of `split`: its scene, labels and (for phase 2) the question its index asks. */
export function mixSample(index: number, split: Split, seed = 0): MixSample {
  if (!Number.isInteger(index) || index < 0) throw new Error(`pretrain-mix: index must be a non-negative integer, got ${index}`);
  const labels = Object.fromEntries(MIX_LABELS.map((l) => [l, balancedClass(l, index, split, seed)])) as Record<MixLabel, number>;
  const rng = new Rng(hashSeed(seed, SPLIT_SEEDS[split], 1, index));
  const { width, height } = rng.pick(MIX_SIZES);
  const taken: Box[] = [];
  const shapes: Shape[] = [];
  // the large shape, in its quadrant
  const side = rng.int(22, Math.min(36, Math.floor(Math.min(width, height) / 2) - 6));
  const q = labels.position;
  // its centre inside the quadrant, the whole shape inside the image (it is placed first)
  const qx = q % 2;
  const qy = Math.floor(q / 2);
  const cx = rng.int(Math.max(qx * (width / 2) + 1, 2 + side / 2), Math.min((qx + 1) * (width / 2) - 1, width - 2 - side / 2));
  const cy = rng.int(Math.max(qy * (height / 2) + 1, 2 + side / 2), Math.min((qy + 1) * (height / 2) - 1, height - 2 - side / 2));
  const shapeBox = { x: Math.round(cx - side / 2), y: Math.round(cy - side / 2), w: side, h: side };
  taken.push(shapeBox);
  const colour = PALETTE[MIX_CLASSES.colour[labels.colour]];
  shapes.push(...shapeOf(MIX_CLASSES.shape[labels.shape], shapeBox, colour));
  const whole = { x: 2, y: 2, w: width - 4, h: height - 4 };
  // the digit in a white box
  const digit = MIX_CLASSES.digit[labels.digit];
  const t = textSize(digit, 3);
  const box = place(rng, t.width + 6, t.height + 6, whole, taken, 4, 'the digit box');
  shapes.push({ kind: 'frame', role: 'box', ...box, colour: INK, fill: [250, 250, 250] });
  shapes.push({ kind: 'text', role: 'digit', x: box.x + 3, y: box.y + 3, text: digit, scale: 3, colour: INK });
  // the dark blocks
  for (let i = 0; i <= labels.count; i++) {
    const s = rng.int(7, 9);
    shapes.push({ kind: 'rect', role: 'dot', ...place(rng, s, s, whole, taken, 5, 'a block'), colour: INK, alpha: 1 });
  }
  // loose small letters: text the heads must learn to ignore
  const letters = rng.int(1, 4);
  for (let i = 0; i < letters; i++) {
    const ch = rng.pick([...LETTERS]);
    const b = place(rng, 5, 7, whole, taken, 2, 'a letter');
    shapes.push({ kind: 'text', role: 'clutter', x: b.x, y: b.y, text: ch, scale: 1, colour: [90, 90, 100] });
  }
  const scene: Scene = {
    width,
    height,
    background: { seed: hashSeed(seed, SPLIT_SEEDS[split], 2, index), base: [rng.int(175, 225), rng.int(175, 225), rng.int(175, 225)], texture: 10, cell: 16, grain: 5 },
    shapes,
  };
  const type = MIX_LABELS[index % MIX_LABELS.length];
  const question = MIX_QUESTIONS[type];
  const answer = MIX_CLASSES[type][labels[type]];
  const image: RgbImage = renderScene(scene);
  const turns: Turn[] = sampleTurns({ question, answer });
  return { index, split, labels, question, answer, type, scene, images: [image], turns };
}

/**
 * A split of the mix as the trainer's Dataset (samples built on demand). `types` keeps only those
 * question types: sample i is then image 5 * floor(i / types.length) + the type's slot, so each
 * image keeps the question its index asks.
 */
export class MixSplit implements Dataset {
  private readonly slots: number[];
  constructor(readonly split: Split, readonly size: number, readonly seed = 0, types: readonly MixLabel[] = MIX_LABELS) {
    if (!Number.isInteger(size) || size < 0) throw new Error(`pretrain-mix: split size must be a non-negative integer, got ${size}`);
    if (types.length === 0) throw new Error('pretrain-mix: types is empty');
    for (const t of types) if (!MIX_LABELS.includes(t)) throw new Error(`pretrain-mix: '${t}' is not a question type (one of ${MIX_LABELS.join(', ')})`);
    this.slots = types.map((t) => MIX_LABELS.indexOf(t));
  }
  get(i: number): MixSample {
    if (!Number.isInteger(i) || i < 0 || i >= this.size) throw new Error(`pretrain-mix ${this.split}: index ${i} out of range 0..${this.size - 1}`);
    const n = this.slots.length;
    return mixSample(MIX_LABELS.length * Math.floor(i / n) + this.slots[i % n], this.split, this.seed);
  }
  *[Symbol.iterator](): Iterator<MixSample> {
    for (let i = 0; i < this.size; i++) yield this.get(i);
  }
}
