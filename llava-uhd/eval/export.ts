/**
 * Samples written as a VLMEvalKit benchmark TSV (the format vlmeval-tsv.ts reads), so the whole
 * evaluation path can be run on data the project makes itself: `index`, `image` (base64 PNG),
 * `question`, then either the options `A`, `B`, ... (the sample type's answer classes, in their
 * fixed order) with `answer` the right letter, or, for open questions, `answer` the text; and
 * `category` (the question type).
 */
import { open } from 'node:fs/promises';
import { encodePngBytes, type RgbImage } from '../image.js';
import { formatTable } from './table.js';

export interface TsvSample {
  image: RgbImage;
  question: string;
  answer: string;
  type: string;
  /** The answer classes of the sample's type (the options of a multiple-choice row). */
  classes: readonly string[];
}

export type QuestionForm = 'mcq' | 'open';

const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/**
 * Writes `samples` to `path` as a VLMEvalKit TSV, streaming; returns the row count. A
 * multiple-choice file has `optionColumns` option columns (the most classes of any type); a row
 * with fewer classes leaves the rest empty (absent options, as VLMEvalKit reads them).
 */
export async function writeVlmevalTsv(path: string, samples: Iterable<TsvSample>, form: QuestionForm, opts: { optionColumns?: number; firstIndex?: number } = {}): Promise<number> {
  if (form !== 'mcq' && form !== 'open') throw new Error(`writeVlmevalTsv: form must be 'mcq' or 'open', got '${String(form)}'`);
  const width = form === 'mcq' ? (opts.optionColumns ?? 4) : 0;
  if (form === 'mcq' && !(Number.isInteger(width) && width >= 2 && width <= 26)) throw new Error(`writeVlmevalTsv: optionColumns must be 2..26, got ${width}`);
  const letters = LETTERS.slice(0, width).split('').filter(Boolean);
  const columns = ['index', 'image', 'question', ...letters, 'answer', 'category'];
  const fh = await open(path, 'w');
  let n = 0;
  try {
    await fh.write(formatTable(columns, []));
    for (const s of samples) {
      if (form === 'mcq') {
        if (s.classes.length < 2 || s.classes.length > width) throw new Error(`writeVlmevalTsv: a multiple-choice row needs 2..${width} classes, got ${s.classes.length}`);
        if (!s.classes.includes(s.answer)) throw new Error(`writeVlmevalTsv: the answer '${s.answer}' is not one of the classes ${s.classes.join(', ')}`);
      }
      const options = letters.map((_, k) => s.classes[k] ?? null);
      const answer = form === 'mcq' ? letters[s.classes.indexOf(s.answer)] : s.answer;
      const row = [String((opts.firstIndex ?? 0) + n), Buffer.from(encodePngBytes(s.image)).toString('base64'), s.question, ...options, answer, s.type];
      const text = formatTable(columns, [row]);
      await fh.write(text.slice(text.indexOf('\n') + 1));
      n++;
    }
  } finally {
    await fh.close();
  }
  if (n === 0) throw new Error('writeVlmevalTsv: no samples');
  return n;
}
