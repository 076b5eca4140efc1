/**
 * The few behaviours of Python's `str` and `float` that VLMEvalKit's rules depend on, so that the
 * scorers and prompt builders here give the same strings as theirs: what `str.strip()` and
 * `str.split()` take for whitespace (wider than ASCII, narrower than JavaScript's `\s`), how
 * `str(float)` prints a number ("3.0", "1e-05"), how `int()` / `float()` read text, and the
 * literal lists (`"['a', 'b']"`) that VLMEvalKit `eval()`s from TSV cells.
 */

/** The characters Python's `str.isspace()` accepts (what `strip()` and `split()` use). */
const PY_SPACE = '\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** A regex class body for Python's `\s` in a `str` pattern (the same characters as isspace()). */
export const PY_S = `[${PY_SPACE}]`;
const STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'g');
const RUNS = new RegExp(`[${PY_SPACE}]+`);

/** Python's `s.strip()`. */
export function pyStrip(s: string): string {
  return s.replace(STRIP, '');
}

/** Python's `s.split()` (no separator: runs of whitespace, no empty pieces). */
export function pySplit(s: string): string[] {
  return s.split(RUNS).filter((x) => x !== '');
}

/** Python's `repr(x)` / `str(x)` of a float: shortest round-trip digits, exponent outside 1e-4..1e16. */
export function pyFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // toExponential() without an argument gives the shortest digits that round-trip, as repr does
  const [mant, expText] = Math.abs(x).toExponential().split('e');
  const digits = mant.replace('.', '');
  const e = Number(expText);
  if (e >= -4 && e < 16) {
    const point = e + 1;
    if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
    if (point >= digits.length) return `${sign}${digits}${'0'.repeat(point - digits.length)}.0`;
    return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
  }
  const rest = digits.slice(1);
  const ee = Math.abs(e) < 10 ? `0${Math.abs(e)}` : String(Math.abs(e));
  return `${sign}${digits[0]}${rest ? `.${rest}` : ''}e${e < 0 ? '-' : '+'}${ee}`;
}

const INT_TEXT = new RegExp(`^[${PY_SPACE}]*([+-]?)(\\d(?:_?\\d)*)[${PY_SPACE}]*$`);
const FLOAT_TEXT = new RegExp(
  `^[${PY_SPACE}]*[+-]?(?:(?:\\d(?:_?\\d)*(?:\\.(?:\\d(?:_?\\d)*)?)?|\\.\\d(?:_?\\d)*)(?:[eE][+-]?\\d(?:_?\\d)*)?|inf|infinity|nan)[${PY_SPACE}]*$`,
  'i',
);

/** Python's `int(s)` for a string (ASCII digits): the value as a bigint, or null where Python raises ValueError. */
export function pyInt(s: string): bigint | null {
  const m = INT_TEXT.exec(s);
  if (!m) return null;
  const v = BigInt(m[2].replace(/_/g, ''));
  return m[1] === '-' ? -v : v;
}

/** Python's `float(s)` for a string, or null where Python raises ValueError. */
export function pyFloatOf(s: string): number | null {
  if (!FLOAT_TEXT.test(s)) return null;
  const t = pyStrip(s).replace(/_/g, '').toLowerCase();
  const neg = t.startsWith('-');
  const body = t.replace(/^[+-]/, '');
  if (body === 'inf' || body === 'infinity') return neg ? -Infinity : Infinity;
  if (body === 'nan') return NaN;
  return Number(t);
}

/**
 * A Python literal list as VLMEvalKit `eval()`s it from a TSV cell (OCRBench's answers, a
 * multi-image row's images, MathVista's choices): `['a', "b's", 3]` -> ['a', "b's", '3'] (each
 * element as `str(x)`). Strings (single or double quoted, with the usual escapes), numbers, True,
 * False and None are accepted; anything else throws, naming `where`.
 */
export function parsePyList(text: string, where: string): string[] {
  const fail = (what: string): never => {
    throw new Error(`${where}: not a Python list literal (${what}): ${text.length > 80 ? `${text.slice(0, 80)}...` : text}`);
  };
  let i = 0;
  const space = () => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const str = (): string => {
    let prefix = '';
    while (/[rRuU]/.test(text[i])) prefix += text[i++];
    const raw = /r/i.test(prefix);
    const q = text[i];
    const triple = text.startsWith(q.repeat(3), i);
    const close = triple ? q.repeat(3) : q;
    i += close.length;
    let out = '';
    for (;;) {
      if (i >= text.length) fail('unterminated string');
      if (text.startsWith(close, i)) {
        i += close.length;
        return out;
      }
      const c = text[i++];
      if (c === '\\' && !raw) {
        const e = text[i++];
        const hex = (n: number) => {
          const h = text.slice(i, i + n);
          if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(h)) fail(`bad \\${e} escape`);
          i += n;
          return String.fromCodePoint(parseInt(h, 16));
        };
        const simple: Record<string, string> = { n: '\n', t: '\t', r: '\r', '\\': '\\', "'": "'", '"': '"', a: '\x07', b: '\b', f: '\f', v: '\v', '0': '\0', '\n': '' };
        if (e === 'x') out += hex(2);
        else if (e === 'u') out += hex(4);
        else if (e === 'U') out += hex(8);
        else if (e in simple) out += simple[e];
        else out += `\\${e}`; // Python keeps unknown escapes as written
      } else {
        if (c === '\n' && !triple) fail('newline in a string');
        out += c;
      }
    }
  };
  space();
  if (text[i] !== '[') fail('does not start with [');
  i++;
  const out: string[] = [];
  for (;;) {
    space();
    if (text[i] === ']') {
      i++;
      break;
    }
    if (/^[rRuU]{0,2}['"]/.test(text.slice(i, i + 3))) {
      out.push(str());
    } else {
      const m = /^(True|False|None|[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))/.exec(text.slice(i));
      if (!m) fail(`unexpected '${text[i] ?? 'end of text'}' at ${i}`);
      const tok = m![1];
      i += tok.length;
      if (tok === 'True' || tok === 'False' || tok === 'None') out.push(tok);
      else if (/^[+-]?\d+$/.test(tok)) out.push(BigInt(tok).toString());
      else out.push(pyFloat(Number(tok)));
    }
    space();
    if (text[i] === ',') {
      i++;
      continue;
    }
    if (text[i] === ']') {
      i++;
      break;
    }
    fail(`expected , or ] at ${i}`);
  }
  space();
  if (i !== text.length) fail('text after the closing ]');
  return out;
}
