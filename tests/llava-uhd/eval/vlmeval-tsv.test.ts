import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cellText, formatTable, inferDtype, readTable } from '../../../llava-uhd/eval/table.js';
import { readVlmevalTsv } from '../../../llava-uhd/eval/vlmeval-tsv.js';
import { base64Png, image, tempDir, writeTsv } from './helpers.js';

const dir = tempDir('tsv');
const png = base64Png(image(8, 6));
const png2 = base64Png(image(5, 9, 1));

describe('tables as pandas reads them', () => {
  it('quoted fields hold tabs, newlines and doubled quotes; a quote inside an unquoted field is literal', async () => {
    const p = join(dir, 'q.tsv');
    writeFileSync(p, '\ufeffa\tb\tc\r\n"x\ty"\t"line1\nline2"\tsay "hi"\r\n\n1\t"a ""q"" b"\n3\n');
    const t = await readTable(p);
    expect(t.columns).toEqual(['a', 'b', 'c']);
    expect(t.rows).toEqual([['x\ty', 'line1\nline2', 'say "hi"'], ['1', 'a "q" b', null], ['3', null, null]]);
    expect(t.lines).toEqual([2, 5, 6]);
  });

  it("pandas' missing values are null, so an option reading None is absent", async () => {
    const p = writeTsv(join(dir, 'na.tsv'), ['index', 'A', 'B'], [{ index: '1', A: 'None', B: 'NA' }, { index: '2', A: 'nan', B: 'N/A' }, { index: '3', A: 'none', B: '' }]);
    const t = await readTable(p);
    expect(t.rows.map((r) => r.slice(1))).toEqual([[null, null], [null, null], ['none', null]]);
  });

  it("column types decide a cell's text as Python prints it", () => {
    expect(inferDtype(['1', ' 2', '-3'])).toBe('int');
    expect(inferDtype(['1', null])).toBe('float');
    expect(inferDtype(['1.50', '2'])).toBe('float');
    expect(inferDtype(['True', 'false'])).toBe('bool');
    expect(inferDtype(['True', null])).toBe('text');
    expect(inferDtype(['1', 'a'])).toBe('text');
    expect(inferDtype(['99999999999999999999'])).toBe('float');
    expect(cellText('007', 'int')).toBe('7');
    expect(cellText('4', 'float')).toBe('4.0');
    expect(cellText('1.50', 'float')).toBe('1.5');
    expect(cellText('true', 'bool')).toBe('True');
  });

  it('more fields than the header, an unclosed quote, a duplicate column, an overlong cell: errors naming the line', async () => {
    const w = (name: string, text: string) => {
      const p = join(dir, name);
      writeFileSync(p, text);
      return p;
    };
    await expect(readTable(w('wide.tsv', 'a\tb\n1\t2\t3\n'))).rejects.toThrow(/wide\.tsv:2: expected 2 fields, saw 3/);
    await expect(readTable(w('open.tsv', 'a\n"x\n'))).rejects.toThrow(/open\.tsv:2: a quoted field is not closed/);
    await expect(readTable(w('dup.tsv', 'a\ta\n'))).rejects.toThrow(/column 'a' appears twice/);
    await expect(readTable(w('long.tsv', `a\n${'x'.repeat(100)}\n`), { limits: { maxCellChars: 50 } })).rejects.toThrow(/long\.tsv:2: a cell is longer than 50/);
    await expect(readTable(join(dir, 'missing.tsv'))).rejects.toThrow(/missing\.tsv: cannot read/);
  });

  it('writing with QUOTE_ALL and reading back is the identity', async () => {
    const rows = [['a\tb', 'say "x"\nnext', null], ['', 'plain', '3']];
    const p = join(dir, 'rt.tsv');
    writeFileSync(p, formatTable(['x', 'y', 'z'], rows));
    const t = await readTable(p);
    expect(t.rows).toEqual([['a\tb', 'say "x"\nnext', null], [null, 'plain', '3']]); // '' reads back as NaN, as in pandas
  });
});

describe('VLMEvalKit benchmark files', () => {
  const cols = ['index', 'image', 'question', 'hint', 'A', 'B', 'C', 'answer', 'category'];

  it('rows keep every column; options skip NaN; an image cell of <= 64 characters is another row\'s index', async () => {
    const p = writeTsv(join(dir, 'ok.tsv'), cols, [
      { index: '1', image: png, question: 'Q1', hint: 'H', A: 'x', B: 'y', answer: 'A', category: 'c1' },
      { index: '1000001', image: '1', question: 'Q1', A: 'y', B: 'x', answer: 'B', category: 'c1' },
    ]);
    const ds = await readVlmevalTsv(p);
    expect(ds.intIndex).toBe(true);
    expect(ds.name).toBe('ok');
    expect(ds.rows[0].options).toEqual([{ letter: 'A', text: 'x' }, { letter: 'B', text: 'y' }]);
    expect(ds.rows[1].values.hint).toBeNull();
    expect(ds.rows[1].images).toEqual([{ kind: 'base64', data: png, dumpName: '1000001.jpg' }]);
    expect(ds.rows[0].values.category).toBe('c1');
  });

  it('a multi-image row (a Python list) takes its images\' names from image_path', async () => {
    const p = writeTsv(join(dir, 'multi.tsv'), ['index', 'image', 'image_path', 'question'], [
      { index: 'v_1', image: `['${png}', '${png2}']`, image_path: "['v_1_1.png', 'v_1_2.jpg']", question: 'Compare <image 1> and <image 2>' },
    ]);
    const ds = await readVlmevalTsv(p);
    expect(ds.intIndex).toBe(false);
    expect(ds.rows[0].images.map((s) => (s.kind === 'base64' ? s.dumpName : s.path))).toEqual(['v_1_1.png', 'v_1_2.jpg']);
  });

  it('image files by path, relative to the TSV', async () => {
    const p = writeTsv(join(dir, 'paths.tsv'), ['index', 'image_path', 'question'], [{ index: '1', image_path: 'imgs/a.png', question: 'Q' }]);
    const ds = await readVlmevalTsv(p);
    expect(ds.rows[0].images).toEqual([{ kind: 'file', path: join(dir, 'imgs/a.png') }]);
  });

  it('bad rows are errors naming their index, never skipped', async () => {
    const bad = async (name: string, rows: Record<string, string | null>[], re: RegExp, c = cols) => {
      await expect(readVlmevalTsv(writeTsv(join(dir, name), c, rows))).rejects.toThrow(re);
    };
    await bad('noimg.tsv', [{ index: '5', image: null, question: 'Q' }], /row index 5: no image/);
    await bad('dangling.tsv', [{ index: '5', image: '77', question: 'Q' }], /row index 5: the image cell '77' is neither an image nor the index of another row/);
    await bad('refref.tsv', [{ index: '5', image: '6', question: 'Q' }, { index: '6', image: '5', question: 'Q' }], /row index 5: the image refers to row 6, which holds no image itself/);
    await bad('b64.tsv', [{ index: '5', image: `${png.slice(0, 80)}!!${png.slice(80)}`, question: 'Q' }], /row index 5: image 1: the image is not base64 \(character '!'/);
    await bad('pad.tsv', [{ index: '5', image: 'A'.repeat(70), question: 'Q' }], /row index 5: image 1: the image is not base64 \(length 70 is not a multiple of 4: incorrect padding\)/);
    await bad('list.tsv', [{ index: '5', image: `['${png}', '${png2}']`, question: 'Q' }], /row index 5: 2 images but no image_path/);
    await bad('dupidx.tsv', [{ index: '5', image: png, question: 'Q' }, { index: '5', image: png, question: 'Q' }], /index 5 appears twice/);
    await bad('noq.tsv', [{ index: '5', image: png }], /no 'question' column/, ['index', 'image']);
  });
});
