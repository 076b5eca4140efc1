/**
 * LLaVA-style JSONL data: one record per line,
 *
 *   { "image": "images/00001.png",
 *     "conversations": [ { "from": "human", "value": "<image>\nQuestion?" },
 *                        { "from": "gpt", "value": "Answer" } ] }
 *
 * Turns may also be written `{ "role": "user" | "assistant" | "system", "content": "..." }`; `from`
 * accepts human/gpt/system (and user/assistant). Image paths are resolved against the JSONL
 * file's folder (or `imageRoot`); absolute paths are kept. Blank lines are skipped. Extra keys are
 * ignored, except an optional string `type` (a question type for evaluation breakdowns).
 *
 * Bad records are never trained on silently: invalid JSON, fields of the wrong shape, a missing or
 * undecodable image, more than one `<image>`, or no answer turn each become a problem with the
 * 1-based line number and the reason. `onBad: 'reject'` (the default) throws on the first;
 * `'skip'` leaves the record out and lists it in `problems` for the caller to print.
 *
 * Images are decoded eagerly, while loading, so that an undecodable file is found before training
 * starts and not halfway through it. The price is memory: every image is held as 8-bit RGB
 * (W x H x 3 bytes; 1,000 images of 336 x 336 take 340 MB). For larger sets, split the JSONL.
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { encodePngBytes, loadImage, type RgbImage } from '../image.js';
import { IMAGE_PLACEHOLDER, type Turn } from '../layout.js';

/** One loaded record. */
export interface JsonlRecord {
  /** The record's 1-based line in the JSONL file. */
  line: number;
  /** The image file, resolved. */
  imagePath: string;
  /** The decoded image (loaded eagerly, see above). */
  image: RgbImage;
  turns: Turn[];
  /** The last assistant turn's content: what evaluation compares against. */
  answer: string;
  /** The record's `type` field, or 'jsonl' when it has none. */
  type: string;
}

/** A record left out, and why. */
export interface JsonlProblem {
  line: number;
  reason: string;
}

export interface JsonlLoadOptions {
  /** 'reject' (default): throw on the first bad record. 'skip': list it in `problems`. */
  onBad?: 'skip' | 'reject';
  /** Folder that relative image paths start from (default: the JSONL file's folder). */
  imageRoot?: string;
}

export interface JsonlData {
  path: string;
  records: JsonlRecord[];
  /** Bad records, in line order (always empty with onBad 'reject'). */
  problems: JsonlProblem[];
}

/** `file:line: reason`, the form both the thrown error and the CLI use. */
export function formatProblem(path: string, p: JsonlProblem): string {
  return `${path}:${p.line}: ${p.reason}`;
}

/** A bad record: thrown inside parsing, turned into a JsonlProblem by the loader. */
class BadRecord extends Error {}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const FROM_ROLES: Readonly<Record<string, Turn['role']>> = {
  human: 'user', user: 'user', gpt: 'assistant', assistant: 'assistant', system: 'system',
};

/** One element of `conversations` as a Turn; `k` is its index, for the message. */
function parseTurn(t: unknown, k: number): Turn {
  const where = `conversations[${k}]`;
  if (!isObject(t)) throw new BadRecord(`${where} must be an object, got ${JSON.stringify(t)}`);
  let roleName: unknown;
  let content: unknown;
  let keys: string;
  if ('from' in t || 'value' in t) {
    [roleName, content, keys] = [t.from, t.value, '"from"/"value"'];
    if (typeof roleName !== 'string' || !(roleName in FROM_ROLES)) {
      throw new BadRecord(`${where}.from must be "human", "gpt" or "system", got ${JSON.stringify(roleName)}`);
    }
  } else if ('role' in t || 'content' in t) {
    [roleName, content, keys] = [t.role, t.content, '"role"/"content"'];
    if (roleName !== 'user' && roleName !== 'assistant' && roleName !== 'system') {
      throw new BadRecord(`${where}.role must be "user", "assistant" or "system", got ${JSON.stringify(roleName)}`);
    }
  } else {
    throw new BadRecord(`${where} needs "from" and "value" (or "role" and "content")`);
  }
  if (typeof content !== 'string') throw new BadRecord(`${where}: the text in ${keys} must be a string, got ${JSON.stringify(content)}`);
  return { role: FROM_ROLES[roleName as string], content };
}

/** The fields of one line, checked; the image is not touched yet. */
function parseLine(text: string): { image: string; turns: Turn[]; type: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new BadRecord(`invalid JSON: ${(e as Error).message}`);
  }
  if (!isObject(value)) throw new BadRecord('a record must be a JSON object');
  const { image, conversations, type } = value;
  if (image === undefined) throw new BadRecord('no "image" (every record needs one image)');
  if (typeof image !== 'string' || image.trim() === '') {
    throw new BadRecord(`"image" must be a non-empty string (one image per record), got ${JSON.stringify(image)}`);
  }
  if (type !== undefined && typeof type !== 'string') throw new BadRecord(`"type" must be a string when present, got ${JSON.stringify(type)}`);
  if (!Array.isArray(conversations) || conversations.length === 0) {
    throw new BadRecord(`"conversations" must be a non-empty array, got ${JSON.stringify(conversations)}`);
  }
  const turns = conversations.map(parseTurn);
  let placeholders = 0;
  turns.forEach((t, k) => {
    const n = t.content.split(IMAGE_PLACEHOLDER).length - 1;
    if (n > 0 && t.role !== 'user') throw new BadRecord(`conversations[${k}] (${t.role}) contains <image>; it belongs in a user turn`);
    if (t.role === 'system' && k !== 0) throw new BadRecord(`conversations[${k}] is a system turn; only the first turn may be`);
    placeholders += n;
  });
  if (placeholders > 1) throw new BadRecord(`${placeholders} <image> placeholders, but a record has one image`);
  const textProblem = recordTextProblem(turns);
  if (textProblem) throw new BadRecord(textProblem);
  if (!turns.some((t) => t.role === 'user')) throw new BadRecord('no question turn (from "human" / role "user")');
  if (!turns.some((t) => t.role === 'assistant' && t.content.trim() !== '')) throw new BadRecord('no answer turn (a non-empty "gpt" / "assistant" turn)');
  return { image, turns, type: type ?? 'jsonl' };
}

async function readImage(path: string): Promise<RgbImage> {
  try {
    if (!(await stat(path)).isFile()) throw new BadRecord(`image ${path} is not a file`);
  } catch (e) {
    if (e instanceof BadRecord) throw e;
    throw new BadRecord(`image file not found: ${path}`);
  }
  try {
    return await loadImage(path);
  } catch (e) {
    throw new BadRecord(`cannot decode image: ${(e as Error).message}`);
  }
}

/** Loads a JSONL file of image conversations (see the module comment for the format and checks). */
export async function loadJsonl(path: string, opts: JsonlLoadOptions = {}): Promise<JsonlData> {
  const onBad = opts.onBad ?? 'reject';
  if (onBad !== 'skip' && onBad !== 'reject') throw new Error(`loadJsonl: onBad must be 'skip' or 'reject', got '${String(onBad)}'`);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new Error(`loadJsonl: cannot read ${path}: ${(e as Error).message}`);
  }
  const root = opts.imageRoot ?? dirname(path);
  const records: JsonlRecord[] = [];
  const problems: JsonlProblem[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].replace(/\r$/, '');
    if (raw.trim() === '') continue;
    const line = i + 1;
    try {
      const { image, turns, type } = parseLine(raw);
      const textProblem = recordTextProblem(turns);
      if (textProblem) throw new BadRecord(textProblem);
      const imagePath = isAbsolute(image) ? image : resolve(root, image);
      const answers = turns.filter((t) => t.role === 'assistant');
      records.push({ line, imagePath, image: await readImage(imagePath), turns, answer: answers[answers.length - 1].content, type });
    } catch (e) {
      if (!(e instanceof BadRecord)) throw e;
      const problem = { line, reason: e.message };
      if (onBad === 'reject') throw new Error(`loadJsonl: ${formatProblem(path, problem)}`);
      problems.push(problem);
    }
  }
  return { path, records, problems };
}

/** A sample to export: an image and its conversation (a synthetic sample or a loaded record). */
export interface ExportSample {
  image: RgbImage;
  turns: readonly Turn[];
  type?: string;
}

const TO_FROM: Readonly<Record<Turn['role'], string>> = { user: 'human', assistant: 'gpt', system: 'system' };

/**
 * Writes samples as `dir/<name>` (JSONL, LLaVA's from/value form, plus `id` and `type`) and
 * `dir/images/NNNNN.png`, the format `loadJsonl` reads. Returns the JSONL path and the count.
 */
export async function writeJsonl(dir: string, samples: Iterable<ExportSample>, name = 'data.jsonl'): Promise<{ path: string; count: number }> {
  await mkdir(join(dir, 'images'), { recursive: true });
  const lines: string[] = [];
  for (const s of samples) {
    const id = String(lines.length).padStart(5, '0');
    const image = `images/${id}.png`;
    await writeFile(join(dir, image), encodePngBytes(s.image));
    const conversations = s.turns.map((t) => ({ from: TO_FROM[t.role], value: t.content }));
    lines.push(JSON.stringify({ id, image, conversations, ...(s.type === undefined ? {} : { type: s.type }) }));
  }
  const path = join(dir, name);
  await writeFile(path, lines.map((l) => `${l}\n`).join(''));
  return { path, count: lines.length };
}

// ---- record text checks (shared by loading, `uhd data check` and training) --------------------

/** Characters of text one record may hold, all turns together (a bound on what one line can allocate). */
export const MAX_RECORD_CHARS = 1 << 20;

/**
 * Why a record's turns cannot be trained on, or null: a lone UTF-16 surrogate (JSON escapes such
 * as "\ud800" decode to one; it has no UTF-8 form, so no tokenizer can encode it), or more than
 * MAX_RECORD_CHARS characters. The loaders call it on every record, and training on every sample
 * (whatever its source), so that `uhd data check` finds what would fail training.
 */
export function recordTextProblem(turns: readonly { role: string; content: string }[]): string | null {
  const chars = turns.reduce((n, t) => n + t.content.length, 0);
  if (chars > MAX_RECORD_CHARS) return `the turns hold ${chars} characters, more than the limit ${MAX_RECORD_CHARS} per record`;
  for (let k = 0; k < turns.length; k++) {
    const text = turns[k].content;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < 0xd800 || c > 0xdfff) continue;
      const pairs = c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
      if (!pairs) return `conversations[${k}] (${turns[k].role}) holds a lone surrogate U+${c.toString(16).toUpperCase()} at character ${i}: not valid Unicode text`;
      i++;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// More formats, for training and evaluation alike: LLaVA's `.json` array files, text-only
// samples, several images per sample (LLaVA-OneVision's list of paths, and MiniCPM-V's
// fine-tuning format `"image": {"<image_00>": "a.jpg", "<image_01>": "b.jpg"}` with the keys
// written in the text where each image goes: MiniCPM-V finetune/readme.md, "Multi-image").
// `loadJsonl` above stays the strict one-image LLaVA JSONL reader.

/** One loaded sample of any of the formats; structurally a trainer `Sample`. */
export interface ConversationRecord {
  /** The 1-based line of a JSONL file, or the 1-based position in a JSON array. */
  line: number;
  /** The image files, resolved, in the order the turns show them (one per `<image>`). */
  imagePaths: string[];
  images: RgbImage[];
  /** The turns with every image's place written `<image>`. */
  turns: Turn[];
  answer: string;
  type: string;
}

/** Images one record may hold. */
export const MAX_IMAGES_PER_RECORD = 64;
/** A `.json` file is parsed whole; larger files should be JSONL (one record per line). */
export const MAX_JSON_FILE_BYTES = 512 * 2 ** 20;

const MINICPM_KEY = /^<image(_\d+)?>$/;

const placeholders = (text: string) => text.split(IMAGE_PLACEHOLDER).length - 1;

/** A record of any format (see above): its turns with `<image>` places and its image paths, checked. */
export function parseConversationRecord(value: unknown): { images: string[]; turns: Turn[]; type: string; answer: string } {
  if (!isObject(value)) throw new BadRecord('a record must be a JSON object');
  const { image, conversations, type } = value;
  if (type !== undefined && typeof type !== 'string') throw new BadRecord(`"type" must be a string when present, got ${JSON.stringify(type)}`);
  if (!Array.isArray(conversations) || conversations.length === 0) {
    throw new BadRecord(`"conversations" must be a non-empty array, got ${JSON.stringify(conversations)}`);
  }
  let turns = conversations.map(parseTurn);
  turns.forEach((t, k) => {
    if (t.role === 'system' && k !== 0) throw new BadRecord(`conversations[${k}] is a system turn; only the first turn may be`);
  });
  const nonEmpty = (p: unknown, where: string): string => {
    if (typeof p !== 'string' || p.trim() === '') throw new BadRecord(`${where} must be a non-empty string (an image path), got ${JSON.stringify(p)}`);
    return p;
  };
  let images: string[];
  if (image === undefined || image === null) {
    images = [];
  } else if (typeof image === 'string') {
    images = [nonEmpty(image, '"image"')];
  } else if (Array.isArray(image)) {
    images = image.map((p, k) => nonEmpty(p, `"image"[${k}]`));
  } else if (isObject(image)) {
    // MiniCPM-V: each key stands in the text where its image goes
    const keys = Object.keys(image);
    if (keys.length === 0) throw new BadRecord('"image" is an empty object');
    for (const k of keys) {
      if (!MINICPM_KEY.test(k)) throw new BadRecord(`"image" key ${JSON.stringify(k)} is not a placeholder like "<image_00>"`);
      nonEmpty(image[k], `"image"[${JSON.stringify(k)}]`);
    }
    if (keys.length === 1 && keys[0] === IMAGE_PLACEHOLDER) {
      images = [image[keys[0]] as string];
    } else {
      if (keys.includes(IMAGE_PLACEHOLDER)) throw new BadRecord('"image" mixes "<image>" with numbered keys');
      const used = new Set<string>();
      const order: string[] = [];
      const pattern = new RegExp(keys.map((k) => k.replace(/[<>]/g, (c) => `\\${c}`)).join('|'), 'g');
      turns = turns.map((t, k) => {
        if (placeholders(t.content) > 0) throw new BadRecord(`conversations[${k}] holds a bare <image> but the images are named (${keys.join(', ')})`);
        const content = t.content.replace(pattern, (key) => {
          if (t.role !== 'user') throw new BadRecord(`conversations[${k}] (${t.role}) names ${key}; images belong in user turns`);
          used.add(key);
          order.push(image[key] as string);
          return IMAGE_PLACEHOLDER;
        });
        return { role: t.role, content };
      });
      const unused = keys.filter((k) => !used.has(k));
      if (unused.length) throw new BadRecord(`"image" names ${unused.join(', ')}, which no turn mentions`);
      images = order;
    }
  } else {
    throw new BadRecord(`"image" must be a path, a list of paths or an object of "<image_NN>": path, got ${JSON.stringify(image)}`);
  }
  if (images.length > MAX_IMAGES_PER_RECORD) throw new BadRecord(`${images.length} images, more than ${MAX_IMAGES_PER_RECORD}`);
  let count = 0;
  turns.forEach((t, k) => {
    const n = placeholders(t.content);
    if (n > 0 && t.role !== 'user') throw new BadRecord(`conversations[${k}] (${t.role}) contains <image>; it belongs in a user turn`);
    count += n;
  });
  if (count !== 0 && count !== images.length) {
    throw new BadRecord(`${count} <image> placeholders but ${images.length} image${images.length === 1 ? '' : 's'}`);
  }
  const textProblem = recordTextProblem(turns);
  if (textProblem) throw new BadRecord(textProblem);
  if (!turns.some((t) => t.role === 'user')) throw new BadRecord('no question turn (from "human" / role "user")');
  const answers = turns.filter((t) => t.role === 'assistant' && t.content.trim() !== '');
  if (answers.length === 0) throw new BadRecord('no answer turn (a non-empty "gpt" / "assistant" turn)');
  return { images, turns, type: type ?? 'jsonl', answer: answers[answers.length - 1].content };
}

/**
 * Loads a LLaVA-style `.jsonl` (one record per line) or `.json` (an array of records) file in any
 * of the formats above. Images are decoded eagerly (see the module comment); bad records are
 * handled as in `loadJsonl` (`onBad`), named by line (JSONL) or position (JSON).
 */
export async function loadConversations(path: string, opts: JsonlLoadOptions = {}): Promise<{ path: string; records: ConversationRecord[]; problems: JsonlProblem[] }> {
  const onBad = opts.onBad ?? 'reject';
  if (onBad !== 'skip' && onBad !== 'reject') throw new Error(`loadConversations: onBad must be 'skip' or 'reject', got '${String(onBad)}'`);
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (e) {
    throw new Error(`loadConversations: cannot read ${path}: ${(e as Error).message}`);
  }
  const isJson = path.toLowerCase().endsWith('.json');
  if (isJson && size > MAX_JSON_FILE_BYTES) {
    throw new Error(`loadConversations: ${path} is ${(size / 2 ** 20).toFixed(0)} MiB; a .json file is parsed whole, so at most ${MAX_JSON_FILE_BYTES / 2 ** 20} MiB (write it as .jsonl, one record per line)`);
  }
  const text = await readFile(path, 'utf8');
  const root = opts.imageRoot ?? dirname(path);
  // (record number, raw value or the JSON error)
  const items: { line: number; value: unknown; error?: string }[] = [];
  if (isJson) {
    let all: unknown;
    try {
      all = JSON.parse(text);
    } catch (e) {
      throw new Error(`loadConversations: ${path}: invalid JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(all)) throw new Error(`loadConversations: ${path}: a .json data file must hold an array of records, got ${typeof all}`);
    all.forEach((value, k) => items.push({ line: k + 1, value }));
  } else {
    text.split('\n').forEach((raw, i) => {
      const line = raw.replace(/\r$/, '');
      if (line.trim() === '') return;
      try {
        items.push({ line: i + 1, value: JSON.parse(line) });
      } catch (e) {
        items.push({ line: i + 1, value: undefined, error: `invalid JSON: ${(e as Error).message}` });
      }
    });
  }
  const decoded = new Map<string, RgbImage>();
  const records: ConversationRecord[] = [];
  const problems: JsonlProblem[] = [];
  for (const item of items) {
    try {
      if (item.error) throw new BadRecord(item.error);
      const r = parseConversationRecord(item.value);
      const imagePaths = r.images.map((p) => (isAbsolute(p) ? p : resolve(root, p)));
      const images: RgbImage[] = [];
      for (const p of imagePaths) {
        if (!decoded.has(p)) decoded.set(p, await readImage(p));
        images.push(decoded.get(p)!);
      }
      records.push({ line: item.line, imagePaths, images, turns: r.turns, answer: r.answer, type: r.type });
    } catch (e) {
      if (!(e instanceof BadRecord)) throw e;
      const problem = { line: item.line, reason: isJson ? `record ${item.line}: ${e.message}` : e.message };
      if (onBad === 'reject') throw new Error(`loadConversations: ${formatProblem(path, problem)}`);
      problems.push(problem);
    }
  }
  return { path, records, problems };
}
