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

/**
 * Offset of the first syntax error in `text` (which JSON.parse refused), by a small iterative
 * scanner: V8 reports positions for some errors only. Returns text.length for a truncated text.
 */
function syntaxErrorOffset(text: string): number {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const literal = (): boolean => {
    if (text[i] === '"') {
      for (i++; i < text.length; i++) {
        const c = text.charCodeAt(i);
        if (c === 0x22) {
          i++;
          return true;
        }
        if (c < 0x20) return false;
        if (c === 0x5c) {
          const e = text[i + 1];
          if (e === 'u') {
            if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) return false;
            i += 5;
          } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i++;
          else return false;
        }
      }
      return false;
    }
    const m = /^(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 400));
    if (!m) return false;
    i += m[0].length;
    return true;
  };
  // stack of open containers: '{' expecting a key, ':' expecting a value in an object, '[' in an array
  const stack: string[] = [];
  ws();
  for (;;) {
    // a value
    if (text[i] === '{' || text[i] === '[') {
      const open = text[i++];
      ws();
      if ((open === '{' && text[i] === '}') || (open === '[' && text[i] === ']')) i++;
      else {
        stack.push(open);
        if (open === '{') {
          if (text[i] !== '"' || !literal()) return i;
          ws();
          if (text[i++] !== ':') return i - 1;
          ws();
        }
        continue;
      }
    } else if (!literal()) return i;
    // after a value: close containers or move to the next element
    for (;;) {
      ws();
      const top = stack[stack.length - 1];
      if (top === undefined) return i < text.length ? i : -1;
      if (text[i] === ',') {
        i++;
        ws();
        if (top === '{') {
          if (text[i] !== '"' || !literal()) return i;
          ws();
          if (text[i++] !== ':') return i - 1;
          ws();
        }
        break;
      }
      if ((top === '{' && text[i] === '}') || (top === '[' && text[i] === ']')) {
        stack.pop();
        i++;
        continue;
      }
      return i;
    }
  }
}

/** JSON.parse that names the file and the line/column of a syntax error. */
export function parseJsonText(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const message = (err instanceof Error ? err.message : String(err)).replace(/, ".*" is not valid JSON$/s, '').replace(/ (in JSON )?at position \d+.*$/s, '');
    const at = Math.min(syntaxErrorOffset(text), text.length);
    const where = at >= 0 ? (({ line, column }) => ` at line ${line}, column ${column}`)(lineColumn(text, at)) : '';
    throw new Error(`${file}: not valid JSON${where} (${at >= text.length ? 'it ends too early' : message})`);
  }
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
