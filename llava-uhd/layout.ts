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

/** A generation prompt: the conversation so far, ending with `<|im_start|>assistant\n`. */
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

/**
 * Renders the turns with Qwen3's chat template (`<|im_start|>role\n` content `<|im_end|>\n`),
 * expanding images. Each piece is encoded on its own (role header, text between images, closing
 * marker), so an answer's ids are exactly `encode(content)`; this differs from encoding the
 * rendered string in one go only where BPE would merge across a piece boundary.
 *
 * Images: the k-th literal `<image>` in the user turns becomes image k's layout (LLaVA's
 * convention). A sample whose user turns hold no `<image>` gets all its images at the start of
 * the first user turn, each layout followed by "\n" (as LLaVA's `<image>\n` prefix). Any other
 * count of `<image>` is an error, and so is `<image>` in a system or assistant turn.
 * Qwen3's template would also add an empty `<think>\n\n</think>\n\n` to the last answer; the
 * spec's template (and this one) does not.
 */
function render(turns: readonly Turn[], images: readonly ViewTokens[], tok: Tokenizer, where: string): SequenceBuilder {
  if (turns.length === 0) throw new Error(`${where}: no turns`);
  const sp = tok.special;
  let placeholders = 0;
  turns.forEach((t, k) => {
    if (t.role !== 'system' && t.role !== 'user' && t.role !== 'assistant') throw new Error(`${where}: turn ${k} has role '${String(t.role)}', expected system, user or assistant`);
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
    } else {
      const answer = t.role === 'assistant';
      if (t.content) b.text(t.content, answer, label);
      if (answer) b.add([sp['<|im_end|>']], true);
    }
    if (t.role !== 'assistant') b.add([sp['<|im_end|>']]);
    b.text('\n', false, label);
  });
  return b;
}

/**
 * One training sample: ids, next-token labels on the answers (each assistant turn's content and
 * its `<|im_end|>`), and the `<unk>` positions that the visual features overwrite, images in
 * order, each thumbnail then slices row-major.
 */
export function buildConversation(turns: readonly Turn[], images: readonly ViewTokens[], tok: Tokenizer): SampleLayout {
  const b = render(turns, images, tok, 'buildConversation');
  const S = b.ids.length;
  const labels = new Int32Array(S).fill(IGNORE_INDEX);
  for (let i = 0; i + 1 < S; i++) if (b.answer[i + 1]) labels[i] = b.ids[i + 1];
  return { ids: Int32Array.from(b.ids), labels, unkPositions: b.unkPositions, visualTokens: b.unkPositions.length };
}

/** The prompt for generation: the turns (the last one not an answer), then `<|im_start|>assistant\n`. */
export function buildPrompt(turns: readonly Turn[], images: readonly ViewTokens[], tok: Tokenizer): PromptLayout {
  if (turns.length && turns[turns.length - 1].role === 'assistant') throw new Error('buildPrompt: the last turn is an answer already; the prompt asks for the next one');
  const b = render(turns, images, tok, 'buildPrompt');
  b.add([tok.special['<|im_start|>']]);
  b.text('assistant\n', false, 'the generation header');
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
