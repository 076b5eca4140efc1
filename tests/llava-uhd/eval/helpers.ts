/** Small VLMEvalKit-format files for the eval tests. */
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodePngBytes, type RgbImage } from '../../../llava-uhd/image.js';
import type { PreparedItem } from '../../../llava-uhd/eval/run.js';
import { formatTable } from '../../../llava-uhd/eval/table.js';

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `uhd-eval-${tag}-`));
}

/** A w x h image whose pixels depend on `seed`. */
export function image(w: number, h: number, seed = 0): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + seed * 31 + ((i / 3) | 0) % w) & 255;
  return { width: w, height: h, data };
}

export function base64Png(img: RgbImage): string {
  return Buffer.from(encodePngBytes(img)).toString('base64');
}

/** Writes rows (objects; missing keys are empty) under `columns` as a QUOTE_ALL TSV. */
export function writeTsv(path: string, columns: string[], rows: Record<string, string | null | undefined>[]): string {
  writeFileSync(path, formatTable(columns, rows.map((r) => columns.map((c) => r[c] ?? null))));
  return path;
}

/**
 * A stand-in for the model that depends on everything the model would see: the prompt and every
 * image's size and pixels (so a wrong up-scaling draw or a changed image changes the answer).
 */
export const fakeAnswer = (delayMs = 0) => async (batch: PreparedItem[]): Promise<string[]> => {
  if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
  return batch.map((item) => {
    const h = createHash('sha256').update(item.turns.map((t) => t.content).join('|'));
    for (const img of item.images) h.update(`${img.width}x${img.height}`).update(img.data);
    const d = h.digest();
    return `${item.images.map((i) => `${i.width}x${i.height}`).join(',')} Answer: ${'ABCD'[d[0] % 4]}`;
  });
};
