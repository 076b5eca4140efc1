/**
 * A 5 x 7 bitmap font (digits 0-9, capitals A-Z, space) for the synthetic data: at scale 1 every
 * stroke is one pixel wide and strokes are one pixel apart, so a 2x or 3x downscale (the
 * thumbnail) merges them while a full-resolution slice keeps them (LLaVA-UHD-V4.md,
 * "Slice-based encoding"). Drawn for this project: each glyph is 7 rows of 5 cells, '#' ink.
 */
import type { RgbImage } from '../image.js';

/** An 8-bit RGB colour. */
export type Rgb = readonly [number, number, number];

/** Glyph cells across and down, and the blank column between characters. */
export const GLYPH_WIDTH = 5;
export const GLYPH_HEIGHT = 7;
export const GLYPH_SPACING = 1;

// prettier-ignore
const ROWS: Record<string, readonly string[]> = {
  '0': ['.###.', '#...#', '#..##', '#.#.#', '##..#', '#...#', '.###.'],
  '1': ['..#..', '.##..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  '2': ['.###.', '#...#', '....#', '...#.', '..#..', '.#...', '#####'],
  '3': ['.###.', '#...#', '....#', '..##.', '....#', '#...#', '.###.'],
  '4': ['...#.', '..##.', '.#.#.', '#..#.', '#####', '...#.', '...#.'],
  '5': ['#####', '#....', '####.', '....#', '....#', '#...#', '.###.'],
  '6': ['..##.', '.#...', '#....', '####.', '#...#', '#...#', '.###.'],
  '7': ['#####', '....#', '...#.', '..#..', '.#...', '.#...', '.#...'],
  '8': ['.###.', '#...#', '#...#', '.###.', '#...#', '#...#', '.###.'],
  '9': ['.###.', '#...#', '#...#', '.####', '....#', '...#.', '.##..'],
  A: ['.###.', '#...#', '#...#', '#####', '#...#', '#...#', '#...#'],
  B: ['####.', '#...#', '#...#', '####.', '#...#', '#...#', '####.'],
  C: ['.###.', '#...#', '#....', '#....', '#....', '#...#', '.###.'],
  D: ['####.', '#...#', '#...#', '#...#', '#...#', '#...#', '####.'],
  E: ['#####', '#....', '#....', '####.', '#....', '#....', '#####'],
  F: ['#####', '#....', '#....', '####.', '#....', '#....', '#....'],
  G: ['.###.', '#...#', '#....', '#.###', '#...#', '#...#', '.####'],
  H: ['#...#', '#...#', '#...#', '#####', '#...#', '#...#', '#...#'],
  I: ['.###.', '..#..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  J: ['..###', '...#.', '...#.', '...#.', '...#.', '#..#.', '.##..'],
  K: ['#...#', '#..#.', '#.#..', '##...', '#.#..', '#..#.', '#...#'],
  L: ['#....', '#....', '#....', '#....', '#....', '#....', '#####'],
  M: ['#...#', '##.##', '#.#.#', '#.#.#', '#...#', '#...#', '#...#'],
  N: ['#...#', '#...#', '##..#', '#.#.#', '#..##', '#...#', '#...#'],
  O: ['.###.', '#...#', '#...#', '#...#', '#...#', '#...#', '.###.'],
  P: ['####.', '#...#', '#...#', '####.', '#....', '#....', '#....'],
  Q: ['.###.', '#...#', '#...#', '#...#', '#.#.#', '#..#.', '.##.#'],
  R: ['####.', '#...#', '#...#', '####.', '#.#..', '#..#.', '#...#'],
  S: ['.####', '#....', '#....', '.###.', '....#', '....#', '####.'],
  T: ['#####', '..#..', '..#..', '..#..', '..#..', '..#..', '..#..'],
  U: ['#...#', '#...#', '#...#', '#...#', '#...#', '#...#', '.###.'],
  V: ['#...#', '#...#', '#...#', '#...#', '#...#', '.#.#.', '..#..'],
  W: ['#...#', '#...#', '#...#', '#.#.#', '#.#.#', '#.#.#', '.#.#.'],
  X: ['#...#', '#...#', '.#.#.', '..#..', '.#.#.', '#...#', '#...#'],
  Y: ['#...#', '#...#', '.#.#.', '..#..', '..#..', '..#..', '..#..'],
  Z: ['#####', '....#', '...#.', '..#..', '.#...', '#....', '#####'],
  ' ': ['.....', '.....', '.....', '.....', '.....', '.....', '.....'],
};

/** The characters the font can draw. */
export const FONT_CHARS: readonly string[] = Object.keys(ROWS);

/** The glyphs as 0/1 cells, [7 rows][5 columns] flattened row-major, built once. */
const GLYPHS: ReadonlyMap<string, Uint8Array> = new Map(
  Object.entries(ROWS).map(([ch, rows]) => {
    const cells = new Uint8Array(GLYPH_WIDTH * GLYPH_HEIGHT);
    rows.forEach((row, r) => {
      for (let c = 0; c < GLYPH_WIDTH; c++) cells[r * GLYPH_WIDTH + c] = row[c] === '#' ? 1 : 0;
    });
    return [ch, cells];
  }),
);

/** The 5 x 7 cells of `ch` (row-major, 1 = ink); throws for a character the font lacks. */
export function glyph(ch: string): Uint8Array {
  const cells = GLYPHS.get(ch);
  if (!cells) throw new Error(`font: no glyph for ${JSON.stringify(ch)}; the font has 0-9, A-Z and space`);
  return cells;
}

/** Width and height in pixels of `text` drawn at `scale` (one blank column between characters). */
export function textSize(text: string, scale: number): { width: number; height: number } {
  checkScale(scale);
  const n = [...text].length;
  return { width: n === 0 ? 0 : (n * GLYPH_WIDTH + (n - 1) * GLYPH_SPACING) * scale, height: GLYPH_HEIGHT * scale };
}

function checkScale(scale: number): void {
  if (!Number.isInteger(scale) || scale < 1) throw new Error(`font: scale must be an integer >= 1, got ${scale}`);
}

/**
 * Draws `text` into `img` in place with its top-left corner at (x, y): each glyph cell becomes a
 * `scale` x `scale` block of `colour`. Pixels that fall outside the image are clipped (not an
 * error: shapes may run off the edge); characters outside the font throw before anything is drawn.
 */
export function drawText(img: RgbImage, text: string, x: number, y: number, scale: number, colour: Rgb): void {
  checkScale(scale);
  if (!Number.isInteger(x) || !Number.isInteger(y)) throw new Error(`drawText: position must be integers, got (${x}, ${y})`);
  const glyphs = [...text].map(glyph);
  const { width, height, data } = img;
  glyphs.forEach((cells, k) => {
    const left = x + k * (GLYPH_WIDTH + GLYPH_SPACING) * scale;
    for (let r = 0; r < GLYPH_HEIGHT; r++) {
      for (let c = 0; c < GLYPH_WIDTH; c++) {
        if (!cells[r * GLYPH_WIDTH + c]) continue;
        for (let dy = 0; dy < scale; dy++) {
          const py = y + r * scale + dy;
          if (py < 0 || py >= height) continue;
          for (let dx = 0; dx < scale; dx++) {
            const px = left + c * scale + dx;
            if (px < 0 || px >= width) continue;
            const o = (py * width + px) * 3;
            data[o] = colour[0];
            data[o + 1] = colour[1];
            data[o + 2] = colour[2];
          }
        }
      }
    }
  });
}
