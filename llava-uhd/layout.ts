/**
 * The token sequence of one sample: Qwen3's chat template around the turns, each image expanded
 * to its marker layout with one `<unk>` per visual LLM token (LLaVA-UHD-V4.md, "Slice-based
 * encoding", "Text layout"), next-token labels on the answers only ("Training": loss on answer
 * tokens), and the packing of several samples into one sequence ("Sequences of several samples
 * may be packed into one").
 *
 * Label convention: `labels[i]` is the target of the prediction made *at* position i, i.e.
 * `labels[i] = ids[i + 1]` when token i+1 is an answer token (an assistant turn's content or its
 * closing `<|im_end|>`), else -100. So `crossEntropy(logits[i], labels[i])` needs no shift, and
 * the last position of every sample is -100 (nothing of the sample follows it).
 */
import { renderChatTemplate } from './chat-template.js';
import type { Tokenizer } from './tokenizer.js';

/** Label of a position that is not trained on (PyTorch's `ignore_index`). */
export const IGNORE_INDEX = -100;

/** LLM tokens of one image's views: the thumbnail, and the slice grid when there is one. */
export interface ViewTokens {
  thumbnailTokens: number;
  slices: { rows: number; cols: number; tokensPerSlice: number } | null;
}

export interface Turn {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** One training sample's sequence. */
export interface SampleLayout {
  /** Token ids [S]. */
  ids: Int32Array;
  /** Next-token targets [S]: ids[i+1] where token i+1 is an answer token, else -100. */
  labels: Int32Array;
  /** Positions of the `<unk>` placeholders, ascending: where the visual features go, in order. */
  unkPositions: number[];
  /** The number of visual features the sample needs (= unkPositions.length). */
  visualTokens: number;
}

/** A generation prompt: the conversation so far, ending with the generation header. */
export type PromptLayout = Omit<SampleLayout, 'labels'>;

const isCount = (n: unknown, min: number) => Number.isInteger(n) && (n as number) >= min;

/** The layout of image `i` and where its `<unk>`s sit within it. */
function imageLayout(i: number, views: ViewTokens, tok: Tokenizer): { ids: number[]; unkOffsets: number[] } {
  if (!isCount(i, 0)) throw new Error(`imagePlaceholder: image index must be an integer >= 0, got ${i}`);
  if (!isCount(views.thumbnailTokens, 1)) throw new Error(`imagePlaceholder: thumbnailTokens must be an integer >= 1, got ${views.thumbnailTokens}`);
  const s = views.slices;
  if (s && !(isCount(s.rows, 1) && isCount(s.cols, 1) && isCount(s.tokensPerSlice, 1))) {
    throw new Error(`imagePlaceholder: slices must have integer rows, cols, tokensPerSlice >= 1, got ${JSON.stringify(s)}`);
  }
  const sp = tok.special;
  const ids: number[] = [];
  const unkOffsets: number[] = [];
  const unks = (n: number) => {
    for (let k = 0; k < n; k++) {
      unkOffsets.push(ids.length);
      ids.push(sp['<unk>']);
    }
  };
  ids.push(sp['<image_id>'], ...tok.encode(String(i)), sp['</image_id>']);
  ids.push(sp['<image>']);
  unks(views.thumbnailTokens);
  ids.push(sp['</image>']);
  if (s) {
    const newline = tok.encode('\n');
    for (let r = 0; r < s.rows; r++) {
      if (r > 0) ids.push(...newline);
      for (let c = 0; c < s.cols; c++) {
        ids.push(sp['<slice>']);
        unks(s.tokensPerSlice);
        ids.push(sp['</slice>']);
      }
    }
  }
  return { ids, unkOffsets };
}

/**
 * Image `i` of a sample ("Text layout"): `<image_id>i</image_id>`, `<image>`, one `<unk>` per
 * thumbnail token, `</image>`, then the slice rows joined by "\n", each row its slices as
 * `<slice>` + `<unk>` x tokensPerSlice + `</slice>`. The digits of i and the "\n" are ordinary
 * text tokens; i counts the sample's images from 0.
 */
export function imagePlaceholder(i: number, views: ViewTokens, tok: Tokenizer): number[] {
  return imageLayout(i, views, tok).ids;
}

/** The literal a user turn uses to say where an image goes (LLaVA's convention). */
export const IMAGE_PLACEHOLDER = '<image>';

/** Ids with, per position, whether it is an answer token, and the `<unk>` positions. */
class SequenceBuilder {
  readonly ids: number[] = [];
  readonly answer: boolean[] = [];
  readonly unkPositions: number[] = [];
  constructor(private readonly tok: Tokenizer) {}

  /** Ordinary text; a `<unk>` in it would take a visual feature meant for an image, so it is refused. */
  text(text: string, answer: boolean, where: string): void {
    const ids = this.tok.encode(text);
    if (ids.includes(this.tok.special['<unk>'])) throw new Error(`layout: ${where} contains <unk>, which only the image layout may hold`);
    this.add(ids, answer);
  }
  add(ids: readonly number[], answer = false): void {
    for (const id of ids) {
      this.ids.push(id);
      this.answer.push(answer);
    }
  }
  image(i: number, views: ViewTokens): void {
    const { ids, unkOffsets } = imageLayout(i, views, this.tok);
    for (const o of unkOffsets) this.unkPositions.push(this.ids.length + o);
    this.add(ids);
  }
}

/** How a conversation becomes text: Qwen3's chat template (built in), or a checkpoint's own. */
export interface TemplateOptions {
  /**
   * A checkpoint's `chat_template` (Jinja, from its tokenizer_config.json), rendered as
   * transformers does; without one, Qwen3's template is built in (same ids: the tests check).
   */
  chatTemplate?: string;
  /**
   * Qwen3's `enable_thinking`. The release runs with it false (MiniCPM-V's chat() and the
   * release's vlmevalkit): the prompt closes an empty `<think>\n\n</think>\n\n` after the
   * generation header, so the model answers at once. Default false.
   */
  enableThinking?: boolean;
}

/** Qwen3's template strips newlines like Python's str.lstrip('\n') / rstrip('\n'). */
const lstripNewlines = (s: string) => s.replace(/^\n+/, '');
const rstripNewlines = (s: string) => s.replace(/\n+$/, '');

/**
 * An assistant turn as Qwen3's template reads it: reasoning written inline as
 * `<think>…</think>` is split off (content after the last `</think>`, reasoning between the
 * last `<think>` before it and it).
 */
function splitReasoning(content: string): { content: string; reasoning: string } {
  if (!content.includes('</think>')) return { content, reasoning: '' };
  const parts = content.split('</think>');
  return {
    content: lstripNewlines(parts[parts.length - 1]),
    reasoning: lstripNewlines(rstripNewlines(parts[0]).split('<think>').pop() ?? ''),
  };
}

/** Qwen3's template: the last user turn that is not a tool response; turns.length - 1 if none. */
function lastQueryIndex(turns: readonly Turn[]): number {
  for (let k = turns.length - 1; k >= 0; k--) {
    const c = turns[k].content;
    if (turns[k].role === 'user' && !(c.startsWith('<tool_response>') && c.endsWith('</tool_response>'))) return k;
  }
  return turns.length - 1;
}

/** Checks roles and placeholder counts; says whether the images go first in the first user turn. */
function checkTurns(turns: readonly Turn[], images: readonly ViewTokens[], where: string): { prepend: boolean; firstUser: number } {
  if (turns.length === 0) throw new Error(`${where}: no turns`);
  let placeholders = 0;
  turns.forEach((t, k) => {
    if (t.role !== 'system' && t.role !== 'user' && t.role !== 'assistant') throw new Error(`${where}: turn ${k} has role '${String(t.role)}', expected system, user or assistant`);
    if (typeof t.content !== 'string') throw new Error(`${where}: turn ${k} (${t.role}) content must be a string`);
    if (t.role === 'system' && k !== 0) throw new Error(`${where}: a system turn must come first, found one at turn ${k}`);
    const n = t.content.split(IMAGE_PLACEHOLDER).length - 1;
    if (n > 0 && t.role !== 'user') throw new Error(`${where}: turn ${k} (${t.role}) contains <image>; images go in user turns`);
    placeholders += n;
  });
  const firstUser = turns.findIndex((t) => t.role === 'user');
  const prepend = placeholders === 0 && images.length > 0;
  if (prepend && firstUser < 0) throw new Error(`${where}: ${images.length} images but no user turn to put them in`);
  if (!prepend && placeholders !== images.length) {
    throw new Error(`${where}: ${placeholders} <image> placeholders in the user turns but ${images.length} images`);
  }
  return { prepend, firstUser };
}

/**
 * Renders the turns with Qwen3's chat template (LLaVA-UHD-V4.md, "Qwen3-style LLM"; the
 * template text is tests/fixtures/chat-template/qwen3.jinja): `<|im_start|>role\n` content
 * `<|im_end|>\n` per turn, and for an assistant turn after the last user turn that is the last
 * turn (or carries reasoning), `<think>\n` reasoning `\n</think>\n\n` before its content, empty
 * when there is none. Earlier answers lose their reasoning, as in the template. Each piece is
 * encoded on its own (header, text between images, think block, content, closing marker), so an
 * answer's ids are exactly `encode(content)`; the tests check that this gives the ids of the
 * rendered text encoded in one go, as the release tokenizes.
 *
 * Labels follow the release (THUMAI-Lab/LLaVA-UHD-v4, itembuilder.py,
 * convert_conversation_data_to_id): every assistant turn's content and its `<|im_end|>` are
 * trained; an empty think block is not (it skips those 4 Qwen3 tokens), a non-empty one is.
 *
 * Images: the k-th literal `<image>` in the user turns becomes image k's layout (LLaVA's
 * convention). A sample whose user turns hold no `<image>` gets all its images at the start of
 * the first user turn, each layout followed by "\n" (MiniCPM-V's chat(): the image, then the
 * question). Any other count of `<image>` is an error, and so is `<image>` in a system or
 * assistant turn.
 */
function renderBuiltIn(turns: readonly Turn[], images: readonly ViewTokens[], tok: Tokenizer, where: string): SequenceBuilder {
  const { prepend, firstUser } = checkTurns(turns, images, where);
  const sp = tok.special;
  const lastQuery = lastQueryIndex(turns);
  const b = new SequenceBuilder(tok);
  let next = 0;
  turns.forEach((t, k) => {
    const label = `turn ${k} (${t.role})`;
    b.add([sp['<|im_start|>']]);
    b.text(`${t.role}\n`, false, label);
    if (t.role === 'user') {
      if (prepend && k === firstUser) {
        for (; next < images.length; next++) {
          b.image(next, images[next]);
          b.text('\n', false, label);
        }
      }
      t.content.split(IMAGE_PLACEHOLDER).forEach((piece, j) => {
        if (j > 0) b.image(next, images[next++]);
        if (piece) b.text(piece, false, label);
      });
      b.add([sp['<|im_end|>']]);
    } else if (t.role === 'assistant') {
      const { content, reasoning } = splitReasoning(t.content);
      let answer = content;
      if (k > lastQuery && (k === turns.length - 1 || reasoning)) {
        const r = lstripNewlines(rstripNewlines(reasoning));
        b.text(`<think>\n${r}\n</think>\n\n`, r.length > 0, `${label} think block`);
        answer = lstripNewlines(content);
      }
      if (answer) b.text(answer, true, label);
      b.add([sp['<|im_end|>']], true);
    } else {
      if (t.content) b.text(t.content, false, label);
      b.add([sp['<|im_end|>']]);
    }
    b.text('\n', false, label);
  });
  return b;
}

/** A character no text may hold, standing for an image while a Jinja template renders. */
const IMAGE_SENTINEL = '\uE000';

/**
 * Renders the turns with a checkpoint's Jinja `chatTemplate`: each image becomes a sentinel in
 * the message text (placed as in renderBuiltIn), the rendering is split at the sentinels, the
 * text between is encoded in one go and the image layouts go in between. Answer tokens are found
 * on the ids as the release finds them: after each `<|im_start|>assistant\n`, up to and with the
 * next `<|im_end|>`, skipping an empty think block after the last header.
 */
function renderTemplate(turns: readonly Turn[], images: readonly ViewTokens[], tok: Tokenizer, where: string, opts: TemplateOptions & { generation: boolean }): SequenceBuilder {
  const { prepend, firstUser } = checkTurns(turns, images, where);
  const messages = turns.map((t, k) => {
    if (t.content.includes(IMAGE_SENTINEL)) throw new Error(`${where}: turn ${k} (${t.role}) contains U+E000, which stands for an image while the template renders`);
    if (t.role !== 'user') return { role: t.role, content: t.content };
    const content = t.content.split(IMAGE_PLACEHOLDER).join(IMAGE_SENTINEL);
    return { role: t.role, content: prepend && k === firstUser ? `${IMAGE_SENTINEL}\n`.repeat(images.length) + content : content };
  });
  const rendered = renderChatTemplate(opts.chatTemplate!, messages, {
    addGenerationPrompt: opts.generation,
    enableThinking: opts.enableThinking ?? false,
    variables: { bos_token: '', eos_token: tok.decode([tok.eosId]), pad_token: tok.decode([tok.padId]) },
  });
  const pieces = rendered.split(IMAGE_SENTINEL);
  if (pieces.length - 1 !== images.length) throw new Error(`${where}: the chat template rendered ${pieces.length - 1} of the ${images.length} image placeholders`);
  const b = new SequenceBuilder(tok);
  pieces.forEach((piece, j) => {
    if (j > 0) b.image(j - 1, images[j - 1]);
    if (piece) b.text(piece, false, 'the rendered chat template');
  });
  markAnswers(b, tok);
  return b;
}

/** Marks answer tokens on rendered ids by the release's rule (see renderTemplate). */
function markAnswers(b: SequenceBuilder, tok: Tokenizer): void {
  const header = [tok.special['<|im_start|>'], ...tok.encode('assistant\n')];
  const emptyThink = tok.encode('<think>\n\n</think>\n\n');
  const end = tok.special['<|im_end|>'];
  const at = (p: number, seq: readonly number[]) => seq.every((id, i) => b.ids[p + i] === id);
  const starts: number[] = [];
  for (let p = 0; p + header.length <= b.ids.length; p++) if (at(p, header)) starts.push(p + header.length);
  starts.forEach((st, i) => {
    if (i === starts.length - 1 && at(st, emptyThink)) st += emptyThink.length;
    const e = b.ids.indexOf(end, st);
    if (e < 0) return; // the generation header: nothing of the answer yet
    for (let p = st; p <= e; p++) b.answer[p] = true;
  });
}

function render(turns: readonly Turn[], images: readonly ViewTokens[], tok: Tokenizer, where: string, opts: TemplateOptions, generation: boolean): SequenceBuilder {
  if (opts.chatTemplate !== undefined) return renderTemplate(turns, images, tok, where, { ...opts, generation });
  const b = renderBuiltIn(turns, images, tok, where);
  if (generation) {
    b.add([tok.special['<|im_start|>']]);
    b.text(opts.enableThinking ? 'assistant\n' : 'assistant\n<think>\n\n</think>\n\n', false, 'the generation header');
  }
  return b;
}

/**
 * One training sample: ids, next-token labels on the answers (each assistant turn's content and
 * its `<|im_end|>`), and the `<unk>` positions that the visual features overwrite, images in
 * order, each thumbnail then slices row-major.
 */
export function buildConversation(turns: readonly Turn[], images: readonly ViewTokens[], tok: Tokenizer, opts: TemplateOptions = {}): SampleLayout {
  const b = render(turns, images, tok, 'buildConversation', opts, false);
  const S = b.ids.length;
  const labels = new Int32Array(S).fill(IGNORE_INDEX);
  for (let i = 0; i + 1 < S; i++) if (b.answer[i + 1]) labels[i] = b.ids[i + 1];
  return { ids: Int32Array.from(b.ids), labels, unkPositions: b.unkPositions, visualTokens: b.unkPositions.length };
}

/**
 * The prompt for generation: the turns (the last one not an answer), then the generation header
 * `<|im_start|>assistant\n`, with thinking disabled (the default, as the release) followed by
 * `<think>\n\n</think>\n\n`.
 */
export function buildPrompt(turns: readonly Turn[], images: readonly ViewTokens[], tok: Tokenizer, opts: TemplateOptions = {}): PromptLayout {
  if (turns.length && turns[turns.length - 1].role === 'assistant') throw new Error('buildPrompt: the last turn is an answer already; the prompt asks for the next one');
  const b = render(turns, images, tok, 'buildPrompt', opts, true);
  return { ids: Int32Array.from(b.ids), unkPositions: b.unkPositions, visualTokens: b.unkPositions.length };
}

/** Features overwrite placeholders one to one; a mismatch is an error naming both counts. */
export function checkPlaceholders(unkCount: number, featureCount: number): void {
  if (unkCount !== featureCount) throw new Error(`layout: ${unkCount} <unk> placeholders but ${featureCount} visual features`);
}

/** Several samples in one sequence; attention must stay within a segment. */
export interface PackedSequence {
  ids: Int32Array;
  labels: Int32Array;
  /** [S] int32: 0 for the first sample of the sequence, 1 for the second, ... */
  segmentIds: Int32Array;
  /** All placeholders of the sequence in order: the samples' features concatenate in sample order. */
  unkPositions: number[];
  /** Which input samples, where they start, and their placeholders offset into this sequence. */
  samples: { index: number; offset: number; length: number; unkPositions: number[] }[];
}

/**
 * Packs samples in order into sequences of at most `maxLength` tokens: a sample joins the current
 * sequence if it fits, else starts the next (greedy, order kept, no padding). Labels need no
 * change at the seams: each sample's last label is already -100. Positions run on across the
 * seams; with attention kept within each segment this is harmless, since RoPE scores depend only
 * on relative positions.
 */
export function pack(samples: readonly Pick<SampleLayout, 'ids' | 'labels' | 'unkPositions'>[], maxLength: number): PackedSequence[] {
  if (!isCount(maxLength, 1)) throw new Error(`pack: maxLength must be an integer >= 1, got ${maxLength}`);
  const groups: number[][] = [];
  let used = Infinity;
  samples.forEach((s, k) => {
    const n = s.ids.length;
    if (s.labels.length !== n) throw new Error(`pack: sample ${k} has ${n} ids but ${s.labels.length} labels`);
    if (n === 0) throw new Error(`pack: sample ${k} is empty`);
    if (n > maxLength) throw new Error(`pack: sample ${k} has ${n} tokens, more than maxLength ${maxLength}`);
    if (used + n > maxLength) {
      groups.push([]);
      used = 0;
    }
    groups[groups.length - 1].push(k);
    used += n;
  });
  return groups.map((group) => {
    const S = group.reduce((sum, k) => sum + samples[k].ids.length, 0);
    const out: PackedSequence = { ids: new Int32Array(S), labels: new Int32Array(S), segmentIds: new Int32Array(S), unkPositions: [], samples: [] };
    let offset = 0;
    group.forEach((k, segment) => {
      const s = samples[k];
      const n = s.ids.length;
      out.ids.set(s.ids, offset);
      out.labels.set(s.labels, offset);
      out.segmentIds.fill(segment, offset, offset + n);
      const unk = s.unkPositions.map((p) => p + offset);
      out.unkPositions.push(...unk);
      out.samples.push({ index: k, offset, length: n, unkPositions: unk });
      offset += n;
    });
    return out;
  });
}
