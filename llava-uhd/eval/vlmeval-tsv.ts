/**
 * A VLMEvalKit benchmark file (`MMBench_DEV_EN_V11.tsv`, ...) as its `ImageBaseDataset.__init__`
 * reads it (release: `vlmevalkit/vlmeval/dataset/image_base.py`):
 *
 * - columns `index`, `question`, optional `hint`, options `A`..`Z` (a NaN cell is an absent
 *   option), `answer`, and any others (`category`, `l2-category`, `split`, ...), all kept;
 * - `image`: base64 (PNG, JPEG, ...), or a Python list literal of several (a multi-image row; then
 *   `image_path` names them), or, when the cell has at most 64 characters, the `index` of another
 *   row whose image it shares (VLMEvalKit's de-duplication); or no `image` column and an
 *   `image_path` column of files (relative paths start at the TSV's folder or `imageRoot`);
 * - `index` is text, or integers when every index is one (MMBench's circular groups need them).
 *
 * Unlike VLMEvalKit, which drops rows without an image, a bad row is an error naming its index:
 * no image, a dangling image reference, base64 that is not base64, a missing column.
 */
import { isAbsolute, resolve, dirname, basename } from 'node:path';
import { parsePyList, pyInt } from './python.js';
import { cellText, readTable, type Dtype, type Table, type TableLimits } from './table.js';

/** Where one of a row's images comes from. */
export type ImageSource =
  | { kind: 'base64'; data: string; /** The file name VLMEvalKit would dump it to: its extension picks the re-encoding. */ dumpName: string }
  | { kind: 'file'; path: string };

export interface VlmRow {
  /** 0-based position in the file. */
  position: number;
  /** The 1-based line where the row starts (for messages). */
  line: number;
  index: string;
  /** Every column's text as Python's `str()` prints pandas' value; null where pandas reads NaN. */
  values: Record<string, string | null>;
  images: ImageSource[];
  /** The row's options in letter order (A, B, ...), absent ones left out. */
  options: { letter: string; text: string }[];
}

export interface VlmDataset {
  path: string;
  /** The file name without `.tsv` (VLMEvalKit's dataset name when it is one of theirs). */
  name: string;
  columns: string[];
  dtypes: Dtype[];
  rows: VlmRow[];
  /** Every index is an integer (VLMEvalKit then converts them to int). */
  intIndex: boolean;
  /** The row of each index. */
  byIndex: Map<string, VlmRow>;
}

const OPTION_LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'.split('');
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** An error about one row, naming the file and the row's index. */
export function rowError(row: Pick<VlmRow, 'index'>, what: string, path?: string): Error {
  return new Error(`${path ? `${path}: ` : ''}row index ${row.index}: ${what}`);
}

/** VLMEvalKit's `toliststr`: a cell that looks like `[...]` is a Python list, else one item. */
export function toListStr(cell: string, where: string): string[] {
  if (cell.length > 0 && cell[0] === '[' && cell[cell.length - 1] === ']') return parsePyList(cell, where);
  return [cell];
}

/** Checks a base64 string the way Python's `base64.b64decode` would accept it, naming the row. */
export function checkBase64(data: string, where: string): void {
  const s = data.replace(/\s+/g, '');
  if (s.length === 0) throw new Error(`${where}: the image is empty`);
  if (!BASE64.test(s)) {
    const bad = s.search(/[^A-Za-z0-9+/=]/);
    throw new Error(`${where}: the image is not base64 (character '${s[bad] ?? '='}' at ${bad})`);
  }
  if (s.length % 4 !== 0) throw new Error(`${where}: the image is not base64 (length ${s.length} is not a multiple of 4: incorrect padding)`);
}

export interface ReadOptions {
  /** Where relative `image_path` files start (default: the TSV's folder). */
  imageRoot?: string;
  limits?: Partial<TableLimits>;
}

/** Reads and checks a VLMEvalKit TSV (see the module comment). */
export async function readVlmevalTsv(path: string, opts: ReadOptions = {}): Promise<VlmDataset> {
  const table: Table = await readTable(path, { limits: opts.limits });
  const col = (name: string) => table.columns.indexOf(name);
  for (const need of ['index', 'question']) {
    if (col(need) < 0) throw new Error(`${path}: no '${need}' column (columns: ${table.columns.join(', ')})`);
  }
  const iImage = col('image');
  const iPath = col('image_path');
  if (iImage < 0 && iPath < 0) throw new Error(`${path}: neither an 'image' nor an 'image_path' column`);
  const root = opts.imageRoot ?? dirname(path);

  const rows: VlmRow[] = [];
  const byIndex = new Map<string, VlmRow>();
  const rawImage = new Map<string, string | null>();
  table.rows.forEach((cells, position) => {
    const values: Record<string, string | null> = {};
    table.columns.forEach((c, k) => (values[c] = cellText(cells[k], table.dtypes[k])));
    const index = values.index;
    const line = table.lines[position];
    if (index === null) throw new Error(`${path}:${line}: a row has no index`);
    if (byIndex.has(index)) throw new Error(`${path}:${line}: index ${index} appears twice (first on line ${byIndex.get(index)!.line})`);
    const options = OPTION_LETTERS.filter((l) => col(l) >= 0 && values[l] !== null).map((letter) => ({ letter, text: values[letter]! }));
    const row: VlmRow = { position, line, index, values, images: [], options };
    rows.push(row);
    byIndex.set(index, row);
    if (iImage >= 0) rawImage.set(index, cells[iImage]);
  });

  for (const row of rows) {
    const where = `${path}: row index ${row.index}`;
    if (iImage >= 0) {
      let cell = rawImage.get(row.index) ?? null;
      if (cell === null) throw rowError(row, "no image (the 'image' cell is empty)", path);
      if (cell.length <= 64) {
        // VLMEvalKit's de-duplication: a short cell is the index of the row holding the image
        const ref = cell;
        const target = rawImage.get(ref);
        if (target === undefined) throw rowError(row, `the image cell '${ref}' is neither an image nor the index of another row`, path);
        if (target === null || target.length <= 64) throw rowError(row, `the image refers to row ${ref}, which holds no image itself`, path);
        cell = target;
      }
      const items = toListStr(cell, `${where}: image`);
      if (items.length === 0) throw rowError(row, 'the image list is empty', path);
      const names = items.length > 1 ? (iPath >= 0 && row.values.image_path !== null ? toListStr(row.values.image_path, `${where}: image_path`) : null) : null;
      if (items.length > 1 && (!names || names.length !== items.length)) {
        throw rowError(row, `${items.length} images but ${names ? `${names.length} names in` : 'no'} image_path (VLMEvalKit names a multi-image row's images there)`, path);
      }
      row.images = items.map((data, k) => {
        checkBase64(data, `${where}: image ${k + 1}`);
        return { kind: 'base64' as const, data, dumpName: names ? names[k] : `${row.index}.jpg` };
      });
    } else {
      const cell = row.values.image_path;
      if (cell === null) throw rowError(row, "no image (the 'image_path' cell is empty)", path);
      row.images = toListStr(cell, `${where}: image_path`).map((p) => ({ kind: 'file' as const, path: isAbsolute(p) ? p : resolve(root, p) }));
    }
  }
  const intIndex = rows.every((r) => pyInt(r.index) !== null && /^-?\d+$/.test(r.index));
  return { path, name: basename(path).replace(/\.tsv$/i, ''), columns: table.columns, dtypes: table.dtypes, rows, intIndex, byIndex };
}
