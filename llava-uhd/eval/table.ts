/**
 * Delimited text tables as VLMEvalKit reads and writes them with pandas: reading is
 * `pd.read_csv(f, sep='\t')` (vlmeval/smp/file.py `load`), writing is `to_csv(..., index=False,
 * quoting=csv.QUOTE_ALL)` (`dump`). What matters for prompts and scores is kept:
 *
 * - Quoting: a field that starts with `"` runs to the closing `"` (`""` is a quote inside it) and
 *   may hold tabs and newlines; a `"` inside an unquoted field is an ordinary character.
 * - Missing values: the strings pandas reads as NaN by default (`''`, `NA`, `N/A`, `nan`, `None`,
 *   `null`, ...) become null, so an option cell reading "None" is absent, as in VLMEvalKit.
 * - Column types: a column whose non-missing cells are all integers is int (float when it also
 *   has missing cells), all numbers float, all True/False bool, else text; a cell's text is then
 *   Python's `str()` of the typed value ("3", "3.0", "True"), as an f-string in a prompt prints it.
 *
 * Untrusted input has limits: a cell, a row's column count and the row count are bounded, and
 * the file is streamed, never read as one string.
 */
import { createReadStream } from 'node:fs';
import { pyFloat, pyFloatOf } from './python.js';

export type Dtype = 'int' | 'float' | 'bool' | 'text';

export interface Table {
  /** Where it was read from (for messages). */
  path: string;
  columns: string[];
  dtypes: Dtype[];
  /** Raw cell text after unquoting; null where pandas reads NaN. */
  rows: (string | null)[][];
  /** 1-based line of each row's start in the file (for messages). */
  lines: number[];
}

export interface TableLimits {
  /** Characters in one cell (default 64 Mi: a base64 image of ~48 MB). */
  maxCellChars: number;
  maxColumns: number;
  maxRows: number;
}

export const DEFAULT_TABLE_LIMITS: TableLimits = { maxCellChars: 64 * 2 ** 20, maxColumns: 1024, maxRows: 5_000_000 };

/** pandas' default `na_values` (read_csv with keep_default_na=True). */
export const PANDAS_NA = new Set([
  '', '#N/A', '#N/A N/A', '#NA', '-1.#IND', '-1.#QNAN', '-NaN', '-nan', '1.#IND', '1.#QNAN', '<NA>', 'N/A', 'NA', 'NULL', 'NaN', 'None', 'n/a', 'nan', 'null',
]);

const INT_CELL = /^\s*[+-]?\d+\s*$/;
const FLOAT_CELL = /^\s*[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|inf|infinity)\s*$/i;
const TRUE_CELLS = new Set(['True', 'TRUE', 'true']);
const FALSE_CELLS = new Set(['False', 'FALSE', 'false']);
const INT64_MAX = 2n ** 63n - 1n;

/** The type pandas gives a column from its cells (see the module comment). */
export function inferDtype(cells: Iterable<string | null>): Dtype {
  let ints = true;
  let floats = true;
  let bools = true;
  let missing = false;
  let any = false;
  for (const c of cells) {
    if (c === null) {
      missing = true;
      continue;
    }
    any = true;
    if (ints && !(INT_CELL.test(c) && BigInt(c.trim()) <= INT64_MAX && BigInt(c.trim()) >= -INT64_MAX - 1n)) ints = false;
    if (floats && !FLOAT_CELL.test(c)) floats = false;
    if (bools && !(TRUE_CELLS.has(c) || FALSE_CELLS.has(c))) bools = false;
    if (!ints && !floats && !bools) return 'text';
  }
  if (!any) return 'float'; // an all-NaN column is float64
  if (ints) return missing ? 'float' : 'int';
  if (floats) return 'float';
  if (bools && !missing) return 'bool';
  return 'text';
}

/** Python's `str()` of a cell as pandas typed it; null for NaN. */
export function cellText(raw: string | null, dtype: Dtype): string | null {
  if (raw === null) return null;
  if (dtype === 'int') return BigInt(raw.trim()).toString();
  if (dtype === 'float') return pyFloat(pyFloatOf(raw) ?? NaN);
  if (dtype === 'bool') return TRUE_CELLS.has(raw) ? 'True' : 'False';
  return raw;
}

/** Streams a delimited file into rows of raw cells (quotes removed, NA not yet applied). */
async function* records(path: string, sep: string, limits: TableLimits): AsyncGenerator<{ cells: string[]; line: number }> {
  let cells: string[] = [];
  let field: string[] = [];
  let fieldLen = 0;
  let state: 'start' | 'plain' | 'quoted' | 'quote-in-quoted' = 'start';
  let line = 1;
  let rowLine = 1;
  let pendingCR = false;
  let first = true;
  const push = (s: string) => {
    fieldLen += s.length;
    if (fieldLen > limits.maxCellChars) throw new Error(`${path}:${rowLine}: a cell is longer than ${limits.maxCellChars} characters`);
    field.push(s);
  };
  const endField = () => {
    cells.push(field.join(''));
    field = [];
    fieldLen = 0;
    if (cells.length > limits.maxColumns) throw new Error(`${path}:${rowLine}: more than ${limits.maxColumns} columns`);
    state = 'start';
  };
  const stream = createReadStream(path, { encoding: 'utf8', highWaterMark: 1 << 20 });
  for await (const chunk of stream as AsyncIterable<string>) {
    let text = chunk;
    if (first) {
      first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let i = 0;
    const n = text.length;
    while (i < n) {
      if (pendingCR) {
        pendingCR = false;
        if (text[i] === '\n') {
          i++;
          continue;
        }
      }
      if (state === 'quoted') {
        const q = text.indexOf('"', i);
        if (q < 0) {
          push(text.slice(i));
          for (let k = i; k < n; k++) if (text[k] === '\n') line++;
          i = n;
          break;
        }
        const piece = text.slice(i, q);
        push(piece);
        for (let k = 0; k < piece.length; k++) if (piece[k] === '\n') line++;
        i = q + 1;
        state = 'quote-in-quoted';
        continue;
      }
      const c = text[i];
      if (state === 'quote-in-quoted') {
        if (c === '"') {
          push('"');
          state = 'quoted';
          i++;
          continue;
        }
        state = 'plain'; // after the closing quote, characters up to the separator join the field
      }
      if (state === 'start' && c === '"') {
        state = 'quoted';
        i++;
        continue;
      }
      if (c === sep) {
        endField();
        i++;
        continue;
      }
      if (c === '\n' || c === '\r') {
        if (!(state === 'start' && cells.length === 0 && field.length === 0)) {
          endField();
          yield { cells, line: rowLine };
        }
        cells = [];
        line++;
        rowLine = line;
        if (c === '\r') pendingCR = true;
        i++;
        continue;
      }
      // a run of ordinary characters
      let j = i;
      while (j < n && text[j] !== sep && text[j] !== '\n' && text[j] !== '\r') j++;
      push(text.slice(i, j));
      state = 'plain';
      i = j;
    }
  }
  if (state === 'quoted') throw new Error(`${path}:${rowLine}: a quoted field is not closed before the end of the file`);
  if (cells.length > 0 || field.length > 0 || state !== 'start') {
    endField();
    yield { cells, line: rowLine };
  }
}

/** Reads a tab- (or other-) separated file as pandas would (see the module comment). */
export async function readTable(path: string, opts: { sep?: string; limits?: Partial<TableLimits> } = {}): Promise<Table> {
  const limits = { ...DEFAULT_TABLE_LIMITS, ...opts.limits };
  const sep = opts.sep ?? '\t';
  let columns: string[] | null = null;
  const rows: (string | null)[][] = [];
  const lines: number[] = [];
  try {
    for await (const r of records(path, sep, limits)) {
      if (!columns) {
        columns = r.cells;
        const seen = new Set<string>();
        for (const c of columns) {
          if (seen.has(c)) throw new Error(`${path}: column '${c}' appears twice in the header`);
          seen.add(c);
        }
        continue;
      }
      if (r.cells.length > columns.length) {
        throw new Error(`${path}:${r.line}: expected ${columns.length} fields, saw ${r.cells.length}`);
      }
      if (rows.length >= limits.maxRows) throw new Error(`${path}: more than ${limits.maxRows} rows`);
      const row: (string | null)[] = r.cells.map((c) => (PANDAS_NA.has(c) ? null : c));
      while (row.length < columns.length) row.push(null);
      rows.push(row);
      lines.push(r.line);
    }
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT' || err.code === 'EISDIR' || err.code === 'EACCES') throw new Error(`${path}: cannot read: ${err.message}`);
    throw e;
  }
  if (!columns) throw new Error(`${path}: empty file (no header row)`);
  const dtypes = columns.map((_, c) => inferDtype(rows.map((r) => r[c])));
  return { path, columns, dtypes, rows, lines };
}

/** One field as `csv.QUOTE_ALL` writes it: in quotes, inner quotes doubled. */
function quoteAll(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

/** Rows as pandas' `to_csv(sep=..., index=False, quoting=csv.QUOTE_ALL)` writes them (null as ""). */
export function formatTable(columns: readonly string[], rows: readonly (readonly (string | null)[])[], sep = '\t'): string {
  const line = (cells: readonly (string | null)[]) => cells.map((c) => quoteAll(c ?? '')).join(sep);
  return [line(columns), ...rows.map(line)].map((l) => `${l}\n`).join('');
}
