import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePyList, pyFloat, pyFloatOf, pyInt, pySplit, pyStrip } from '../../../llava-uhd/eval/python.js';
import { PythonRandom } from '../../../llava-uhd/eval/python-random.js';
import { upsizeSize } from '../../../llava-uhd/eval/upsize.js';

const fixture = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'python_random.json'), 'utf8')) as {
  sequences: { seed: number; ranges: [number, number][]; values: number[]; getrandbits32: number[] }[];
  upsize: { w: number; h: number; to: [number, number] | null }[];
};

describe("Python's str and float", () => {
  it('str(float) prints as repr does', () => {
    const cases: [number, string][] = [
      [3, '3.0'], [0.1, '0.1'], [1 / 3, '0.3333333333333333'], [1e-5, '1e-05'], [0.0001, '0.0001'], [1e16, '1e+16'],
      [1e15, '1000000000000000.0'], [123456789012345680, '1.2345678901234568e+17'], [-2.5, '-2.5'], [0, '0.0'], [-0, '-0.0'],
      [NaN, 'nan'], [Infinity, 'inf'], [-Infinity, '-inf'], [1.5e-300, '1.5e-300'], [2 / 3 * 100, '66.66666666666666'], [0.1 + 0.2, '0.30000000000000004'],
    ];
    for (const [x, s] of cases) expect(pyFloat(x), String(x)).toBe(s);
  });

  it('str(float) reads back as the same number (property)', () => {
    fc.assert(fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (x) => {
      expect(Number(pyFloat(x))).toBe(x);
    }));
  });

  it('strip and split use Python whitespace, not JavaScript\'s', () => {
    expect(pyStrip('\x1c a b \u3000')).toBe('a b');
    expect(pyStrip('\ufeffx')).toBe('\ufeffx'); // BOM is not whitespace in Python
    expect(pySplit(' a\tb\x85c  ')).toEqual(['a', 'b', 'c']);
    expect(pySplit('')).toEqual([]);
  });

  it('int() and float() accept what Python accepts', () => {
    expect(pyInt(' 14 ')).toBe(14n);
    expect(pyInt('-1_000')).toBe(-1000n);
    expect(pyInt('14.0')).toBeNull();
    expect(pyInt('1__0')).toBeNull();
    expect(pyInt('')).toBeNull();
    expect(pyFloatOf('1.50')).toBe(1.5);
    expect(pyFloatOf(' -Infinity')).toBe(-Infinity);
    expect(pyFloatOf('1e3')).toBe(1000);
    expect(pyFloatOf('.5')).toBe(0.5);
    expect(pyFloatOf('1.5 cm')).toBeNull();
    expect(Number.isNaN(pyFloatOf('nan'))).toBe(true);
  });

  it('literal lists parse as eval() would, and anything else is refused naming the cell', () => {
    expect(parsePyList("['hello', \"it's\", 'a\\nb']", 'x')).toEqual(['hello', "it's", 'a\nb']);
    expect(parsePyList('[1, 2.50, True, None]', 'x')).toEqual(['1', '2.5', 'True', 'None']);
    expect(parsePyList('[ ]', 'x')).toEqual([]);
    expect(parsePyList("['a',]", 'x')).toEqual(['a']);
    expect(parsePyList("['\\x41\\u00e9']", 'x')).toEqual(['Aé']);
    expect(() => parsePyList("['a'", 'row 3: answer')).toThrow(/row 3: answer: not a Python list literal/);
    expect(() => parsePyList("['a'] + ['b']", 'c')).toThrow(/text after the closing/);
    expect(() => parsePyList('[os.system("x")]', 'c')).toThrow(/unexpected 'o'/);
  });
});

describe("Python's random (MT19937), as CPython draws", () => {
  it('randint and getrandbits give CPython\'s sequences (fixtures/python_random.py)', () => {
    for (const s of fixture.sequences) {
      const rng = new PythonRandom(s.seed);
      expect(s.ranges.map(([a, b]) => rng.randint(a, b)), `seed ${s.seed}`).toEqual(s.values);
      const again = new PythonRandom(s.seed);
      expect(Array.from({ length: 8 }, () => again.getrandbits(32))).toEqual(s.getrandbits32);
    }
  });

  it("the wrapper's up-scaling draws the sizes Python draws, and none for large images", () => {
    const rng = new PythonRandom(0);
    for (const u of fixture.upsize) {
      const got = upsizeSize(u.w, u.h, rng);
      expect(got === null ? null : [got.width, got.height], `${u.w}x${u.h}`).toEqual(u.to);
    }
  });
});
