/**
 * JSON files checked against zod schemas, with messages a user can act on: a syntax error names
 * the file, line and column; a bad value names the file, the key (dotted path), what is allowed
 * and what was found; an unknown key names the allowed ones and the nearest (a typo).
 */
import { readFile, stat } from 'node:fs/promises';
import { z } from 'zod';

/** Config-like JSON files larger than this are refused before reading (they are a few KB). */
export const MAX_JSON_FILE_BYTES = 64 * 2 ** 20;

/** Line and column (1-based) of character `at` in `text`. */
function lineColumn(text: string, at: number): { line: number; column: number } {
  let line = 1;
  let start = 0;
  for (let i = 0; i < Math.min(at, text.length); i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      start = i + 1;
    }
  }
  return { line, column: at - start + 1 };
}

/** The offset of the first syntax error in `text` (a small JSON scanner, iterative, no recursion). */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const literal = (): boolean => {
    for (const w of ['true', 'false', 'null']) {
      if (text.startsWith(w, i)) {
        i += w.length;
        return true;
      }
    }
    return false;
  };
  const string = (): boolean => {
    i++; // the opening quote
    while (i < text.length) {
      const c = text[i];
      if (c === '"') {
        i++;
        return true;
      }
      if (c < ' ') return false;
      if (c === '\\') {
        const n = text[i + 1];
        if (n === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) return false;
          i += 6;
        } else if (n !== undefined && '"\\/bfnrt'.includes(n)) i += 2;
        else {
          i++; // V8 points at the character after the backslash
          return false;
        }
      } else i++;
    }
    return false;
  };
  const digit = () => text[i] >= '0' && text[i] <= '9';
  const digits = (): boolean => {
    if (!digit()) return false; // i points at what should have been a digit, as V8 reports
    while (digit()) i++;
    return true;
  };
  const number = (): boolean => {
    if (text[i] === '-') i++;
    if (text[i] === '0') i++;
    else if (!digits()) return false;
    if (text[i] === '.') {
      i++;
      if (!digits()) return false;
    }
    if (text[i] === 'e' || text[i] === 'E') {
      i++;
      if (text[i] === '+' || text[i] === '-') i++;
      if (!digits()) return false;
    }
    return true;
  };
  // a stack of open containers: '{' or '['
  const stack: string[] = [];
  const value = (): boolean => {
    ws();
    const c = text[i];
    if (c === '"') return string();
    if (c === '{' || c === '[') {
      stack.push(c);
      i++;
      ws();
      return true;
    }
    if (c === '-' || (c >= '0' && c <= '9')) return number();
    return literal();
  };
  // states: expecting a value (or a closer right after an opener), then a separator
  let justOpened = false;
  for (;;) {
    ws();
    const top = stack[stack.length - 1];
    if (justOpened && ((top === '{' && text[i] === '}') || (top === '[' && text[i] === ']'))) {
      stack.pop();
      i++;
    } else {
      if (top === '{') {
        if (text[i] !== '"' || !string()) return i;
        ws();
        if (text[i] !== ':') return i;
        i++;
      }
      const depth = stack.length;
      if (!value()) return i;
      if (stack.length > depth) {
        justOpened = true;
        continue;
      }
    }
    justOpened = false;
    // after a value: a separator, a closer, or the end
    for (;;) {
      ws();
      const t = stack[stack.length - 1];
      if (t === undefined) return i < text.length ? i : -1;
      if (text[i] === ',') {
        i++;
        break;
      }
      if ((t === '{' && text[i] === '}') || (t === '[' && text[i] === ']')) {
        stack.pop();
        i++;
        continue;
      }
      return i;
    }
  }
}

/** Nesting a config-like JSON file may have (later steps recurse over the value). */
export const MAX_JSON_DEPTH = 64;

/** The deepest nesting of arrays and objects in valid JSON text (strings skipped), stopping once past `limit`. */
function jsonDepth(text: string, limit: number): number {
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
    } else if (c === '{' || c === '[') {
      deepest = Math.max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c === '}' || c === ']') depth--;
  }
  return deepest;
}

/**
 * JSON.parse whose errors name the file and, for a syntax error, `file:line:column` of the first
 * bad character (V8's own message gives a position only for some errors); nesting deeper than
 * MAX_JSON_DEPTH is refused (recipes and configs need a handful).
 */
export function parseJsonText(text: string, file: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    const message = (err instanceof Error ? err.message : String(err)).replace(/, (\.\.\.)?".*" is not valid JSON$/s, '').replace(/ (in JSON )?at position \d+.*$/s, '');
    const at = Math.max(0, Math.min(jsonErrorOffset(text), text.length));
    const { line, column } = lineColumn(text, at);
    throw new Error(`${file}:${line}:${column}: not valid JSON (${at >= text.length ? 'it ends too early' : message})`);
  }
  if (jsonDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) throw new Error(`${file}: JSON nests deeper than ${MAX_JSON_DEPTH} levels; a recipe or config needs a handful`);
  return value;
}

/** Reads and parses a JSON file (size-limited), naming the file in every error. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    const { size } = await stat(path);
    if (size > MAX_JSON_FILE_BYTES) throw new Error(`${size} bytes, more than the ${MAX_JSON_FILE_BYTES} a JSON config may have`);
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: cannot read: ${err instanceof Error ? err.message : String(err)}`);
  }
  return parseJsonText(text, path);
}

/** A value as a message shows it: short JSON, cut at 60 characters. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const k of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/** The keys an object schema allows at `path` (through optional/nullable/array/pipe wrappers). */
function allowedKeysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let s: z.ZodType | undefined = schema;
  const unwrap = (x: z.ZodType): z.ZodType => {
    let y = x;
    for (;;) {
      if (y instanceof z.ZodOptional || y instanceof z.ZodNullable || y instanceof z.ZodDefault) y = y.unwrap() as z.ZodType;
      else if (y instanceof z.ZodPipe) y = y.in as z.ZodType;
      else return y;
    }
  };
  for (const k of path) {
    if (!s) return [];
    const u = unwrap(s);
    if (u instanceof z.ZodObject) s = (u.shape as Record<string, z.ZodType>)[String(k)];
    else if (u instanceof z.ZodArray) s = u.element as z.ZodType;
    else return [];
  }
  const u = s ? unwrap(s) : undefined;
  return u instanceof z.ZodObject ? Object.keys(u.shape) : [];
}

/** Levenshtein distance, for "did you mean" on unknown keys. */
function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}

function issueMessage(issue: z.core.$ZodIssue, input: unknown, schema: z.ZodType): string {
  const got = describeValue(valueAt(input, issue.path));
  switch (issue.code) {
    case 'invalid_type':
      return `must be ${issue.expected === 'int' ? 'an integer' : `${/^[aeiou]/.test(issue.expected) ? 'an' : 'a'} ${issue.expected}`}, got ${got}`;
    case 'too_small':
      return `must be ${issue.inclusive ? '>=' : '>'} ${String(issue.minimum)}${issue.origin === 'array' || issue.origin === 'string' ? ' long' : ''}, got ${got}`;
    case 'too_big':
      return `must be ${issue.inclusive ? '<=' : '<'} ${String(issue.maximum)}${issue.origin === 'array' || issue.origin === 'string' ? ' long' : ''}, got ${got}`;
    case 'invalid_value':
      return `must be ${issue.values.length === 1 ? describeValue(issue.values[0]) : `one of ${issue.values.map((v) => describeValue(v)).join(', ')}`}, got ${got}`;
    case 'unrecognized_keys': {
      const allowed = allowedKeysAt(schema, issue.path);
      return issue.keys
        .map((k) => {
          const near = allowed.map((a) => [a, editDistance(k, a)] as const).sort((x, y) => x[1] - y[1])[0];
          const hint = near && near[1] <= Math.max(2, Math.floor(k.length / 4)) ? ` (did you mean '${near[0]}'?)` : '';
          return `unknown key '${k}'${hint}; allowed: ${allowed.join(', ')}`;
        })
        .join('; ');
    }
    case 'invalid_union':
      return `${issue.message}, got ${got}`;
    default:
      return issue.message;
  }
}

/** Formats zod issues as `<file>: <key>: <problem>` lines. */
export function formatIssues(issues: readonly z.core.$ZodIssue[], input: unknown, schema: z.ZodType, file: string): string {
  const lines = issues.slice(0, 10).map((issue) => {
    const key = issue.path.length ? issue.path.map(String).join('.') : '(top level)';
    return `${file}: ${key}: ${issueMessage(issue, input, schema)}`;
  });
  if (issues.length > 10) lines.push(`... and ${issues.length - 10} more`);
  return lines.join('\n');
}

/** Checks `value` against `schema`; throws every problem found, each naming the file and key. */
export function checkSchema<S extends z.ZodType>(schema: S, value: unknown, file: string): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new Error(formatIssues(r.error.issues, value, schema, file));
  return r.data;
}
