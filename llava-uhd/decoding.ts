/**
 * The decoding loop, apart from any model: greedy search, sampling (temperature, top-k, top-p) and
 * beam search over a `NextTokenModel` (anything that returns next-token logits for rows of token
 * sequences), with the logits processors and stopping rules of Hugging Face transformers'
 * `generate` as of v4.51 (the version the release's training script pins), re-derived from its
 * documented semantics:
 *
 * - Processors, in transformers' order: repetition penalty (`RepetitionPenaltyLogitsProcessor`:
 *   for every id already in the sequence, a score > 0 is divided by the penalty and one < 0
 *   multiplied), the minimum answer length (`MinNewTokensLengthLogitsProcessor`: stop tokens get
 *   -inf until `minNewTokens` tokens exist), then, only when sampling, temperature, top-k
 *   (`TopKLogitsWarper`: scores below the k-th largest become -inf) and top-p (`TopPLogitsWarper`:
 *   sorted ascending, tokens whose cumulative probability is <= 1 - p become -inf, the most likely
 *   always stays). Ours adds one first: ids >= `vocabSize` (embedding rows the tokenizer cannot
 *   decode) get -inf. Greedy and sampling process the raw logits; beam search processes the
 *   log-softmax of each beam's logits, as transformers does.
 * - Stopping: a stop token (transformers' `eos_token_id`, several allowed), a stop string
 *   (`StopStringCriteria`: the decoded answer contains the string ending inside the last token, so
 *   the last token may overhang it), or `maxNewTokens`. As in transformers the tokens that formed
 *   the stop string stay in the output; `Decoded.stopString` says which one matched, so a caller
 *   can cut the text (generate.ts does, in `Generation.text`).
 * - Beam search (`_beam_search`, the vectorised version of v4.50+): every step keeps the best
 *   K = max(2, 1 + stop tokens)·numBeams continuations over all beams of a sample; the first
 *   numBeams of them that end (a stop token, a stop string, or the length limit) become finished
 *   hypotheses scored sum(log p) / generated_length^lengthPenalty (the stop token counted); the
 *   best numBeams that do not end carry on. The beams start as numBeams copies of the prompt with
 *   scores [0, -1e9, ...], so the first step draws from one of them. A sample stops when (with
 *   the default `earlyStopping: false`) all numBeams finished slots are filled and the best
 *   running beam, divided by its current length^lengthPenalty, cannot beat the worst of them;
 *   `true` stops as soon as the slots are filled; `'never'` with lengthPenalty > 0 assumes the
 *   running beam could grow to maxNewTokens. The answer is the best finished hypothesis.
 *
 * tests/llava-uhd/decoding.test.ts checks all of this against tests/llava-uhd/fixtures/decoding.py,
 * a PyTorch implementation of the same rules, on a table model (the next logits a fixed function
 * of the last token).
 */
import { uniform } from '../tensor/random.js';

/** Next-token logits for rows of sequences: the model as the decoding loop sees it. */
export interface NextTokenModel {
  /** Logits after each prompt (its last position), one row per prompt, in order. */
  start(): Promise<Float32Array[]>;
  /**
   * Continues the rows of the previous call: new row r is old row `parents[r]` followed by
   * `tokens[r]`. A row may continue several times (beams) or not at all (finished samples).
   * Returns the logits after each new row.
   */
  step(parents: readonly number[], tokens: readonly number[]): Promise<Float32Array[]>;
}

export interface DecodingOptions {
  /** Answer length limit in tokens (default 64). */
  maxNewTokens?: number;
  /** Stop tokens may not end the answer before it has this many tokens (default 0). */
  minNewTokens?: number;
  /** 0 (default) is greedy; > 0 samples from softmax(logits / temperature). */
  temperature?: number;
  /** Sampling: keep only the k most likely tokens (0 or undefined: all). */
  topK?: number;
  /** Sampling: keep the most likely tokens holding probability topP (default 1: all). */
  topP?: number;
  /** > 1 discourages tokens already in the sequence (1, the default, is off). */
  repetitionPenalty?: number;
  /**
   * Whether the repetition penalty counts the prompt's ids too (default true, as transformers
   * does when given `input_ids`; MiniCPM-V's `chat` passes only `inputs_embeds`, so there it sees
   * the answer's ids alone: false).
   */
  penalizePrompt?: boolean;
  /** Generation stops after one of these (it is included in the output). */
  stopTokens?: readonly number[];
  /** Generation stops once the decoded answer ends with one of these (needs `decode`). */
  stopStrings?: readonly string[];
  /** Token ids to text, for `stopStrings`. */
  decode?: (ids: number[]) => string;
  /** > 1: beam search with this many beams (default 1: greedy or sampling). */
  numBeams?: number;
  /** Beam search: finished scores are sum(log p) / length^lengthPenalty (default 1). */
  lengthPenalty?: number;
  /** Beam search: when a sample stops (default false: transformers' heuristic). */
  earlyStopping?: boolean | 'never';
  /** Ids >= vocabSize are never produced (the tokenizer's vocabulary; default: no limit). */
  vocabSize?: number;
  /** Keep each step's raw logits in the result. */
  keepLogits?: boolean;
  /** Called with each new token of each sample (greedy and sampling only). */
  onToken?: (id: number, sample: number) => void;
}

export type FinishReason = 'stop-token' | 'stop-string' | 'length';

export interface Decoded {
  /** The answer's ids, the stop token or stop string's tokens included. */
  tokens: number[];
  /** With keepLogits: per answer token, the raw logits it was chosen from. */
  logits: Float32Array[];
  finish: FinishReason;
  /** The stop string that ended the answer (finish 'stop-string'). */
  stopString?: string;
  /** Beam search: the answer's sum of log-probabilities / length^lengthPenalty. */
  score?: number;
}

type Resolved = Required<Omit<DecodingOptions, 'decode' | 'onToken' | 'vocabSize'>> & Pick<DecodingOptions, 'decode' | 'onToken' | 'vocabSize'>;

/** transformers' "very unlikely" score: the initial score of every beam but the first, and the
 * offset that keeps finished candidates out of the running beams. */
const UNLIKELY = -1e9;

/** Defaults filled in and every value checked, naming the option at fault. */
export function resolveDecodingOptions(o: DecodingOptions): Resolved {
  const bad = (name: string, want: string, got: unknown): never => {
    throw new Error(`generate: ${name} must be ${want}, got ${JSON.stringify(got)}`);
  };
  const int = (name: string, v: unknown, min: number) => {
    if (!(Number.isInteger(v) && (v as number) >= min)) bad(name, `an integer >= ${min}`, v);
    return v as number;
  };
  const num = (name: string, v: unknown, ok: (x: number) => boolean, want: string) => {
    if (!(typeof v === 'number' && Number.isFinite(v) && ok(v))) bad(name, want, v);
    return v as number;
  };
  const r: Resolved = {
    maxNewTokens: int('maxNewTokens', o.maxNewTokens ?? 64, 1),
    minNewTokens: int('minNewTokens', o.minNewTokens ?? 0, 0),
    temperature: num('temperature', o.temperature ?? 0, (x) => x >= 0, 'a number >= 0'),
    topK: int('topK', o.topK ?? 0, 0),
    topP: num('topP', o.topP ?? 1, (x) => x > 0 && x <= 1, 'a number in (0, 1]'),
    repetitionPenalty: num('repetitionPenalty', o.repetitionPenalty ?? 1, (x) => x > 0, 'a number > 0'),
    penalizePrompt: o.penalizePrompt ?? true,
    stopTokens: o.stopTokens ?? [],
    stopStrings: o.stopStrings ?? [],
    numBeams: int('numBeams', o.numBeams ?? 1, 1),
    lengthPenalty: num('lengthPenalty', o.lengthPenalty ?? 1, () => true, 'a finite number'),
    earlyStopping: o.earlyStopping ?? false,
    keepLogits: o.keepLogits ?? false,
    decode: o.decode,
    onToken: o.onToken,
    vocabSize: o.vocabSize === undefined ? undefined : int('vocabSize', o.vocabSize, 1),
  };
  r.stopTokens.forEach((t, i) => int(`stopTokens[${i}]`, t, 0));
  r.stopStrings.forEach((s, i) => {
    if (typeof s !== 'string' || s.length === 0) bad(`stopStrings[${i}]`, 'a non-empty string', s);
  });
  if (r.stopStrings.length && !r.decode) throw new Error('generate: stopStrings need a decode function (the decode option) to read the answer as text');
  if (r.earlyStopping !== true && r.earlyStopping !== false && r.earlyStopping !== 'never') bad('earlyStopping', "true, false or 'never'", r.earlyStopping);
  if (r.numBeams > 1 && r.temperature > 0) throw new Error(`generate: beam search (numBeams ${r.numBeams}) with sampling (temperature ${r.temperature}) is not supported: use one of them`);
  return r;
}

// ---- logits processors (in place on a float64 copy of one row) ------------------------------

/** Ids >= vocabSize get -inf: rows of the embedding that the tokenizer has no token for. */
export function maskBeyondVocab(scores: Float64Array, vocabSize: number | undefined): void {
  if (vocabSize !== undefined) scores.fill(-Infinity, Math.min(vocabSize, scores.length));
}

/** transformers' RepetitionPenaltyLogitsProcessor: each id in `ids` once, > 0 divided, < 0 multiplied. */
export function applyRepetitionPenalty(scores: Float64Array, ids: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  const seen = new Set<number>();
  for (const id of ids) {
    if (seen.has(id) || id < 0 || id >= scores.length) continue;
    seen.add(id);
    const s = scores[id];
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}

/** The ids get -inf (the minimum answer length: no stop token yet). */
export function suppressTokens(scores: Float64Array, ids: readonly number[]): void {
  for (const id of ids) if (id >= 0 && id < scores.length) scores[id] = -Infinity;
}

/** transformers' TopKLogitsWarper: scores below the k-th largest become -inf (ties at it stay). */
export function topKFilter(scores: Float64Array, k: number): void {
  if (k <= 0 || k >= scores.length) return;
  const kth = Float64Array.from(scores).sort()[scores.length - k];
  for (let i = 0; i < scores.length; i++) if (scores[i] < kth) scores[i] = -Infinity;
}

/**
 * transformers' TopPLogitsWarper: with the tokens sorted by ascending score, those whose
 * cumulative probability is <= 1 - topP become -inf; the most likely token always stays.
 */
export function topPFilter(scores: Float64Array, topP: number): void {
  if (topP >= 1) return;
  const order = Array.from(scores.keys()).sort((a, b) => scores[a] - scores[b]);
  const probs = softmax(scores);
  let cumulative = 0;
  for (let r = 0; r < order.length - 1; r++) {
    cumulative += probs[order[r]];
    if (cumulative <= 1 - topP) scores[order[r]] = -Infinity;
  }
}

export function softmax(scores: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) max = Math.max(max, scores[i]);
  const out = new Float64Array(scores.length);
  let total = 0;
  for (let i = 0; i < scores.length; i++) total += out[i] = Math.exp(scores[i] - max);
  for (let i = 0; i < scores.length; i++) out[i] /= total;
  return out;
}

export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += Math.exp(logits[i] - max);
  const lse = max + Math.log(total);
  return Float64Array.from(logits, (l) => l - lse);
}

/** The first index of the largest score (as torch.argmax). */
export function argmax(scores: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i] > scores[best]) best = i;
  return best;
}

/** A token drawn from softmax(scores) with the library's seeded generator. */
export function sampleToken(scores: ArrayLike<number>): number {
  const probs = softmax(scores);
  let r = uniform();
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    last = i;
    r -= probs[i];
    if (r < 0) return i;
  }
  return last;
}

/**
 * All processors on one row, in transformers' order. `ids`: the sequence so far as the repetition
 * penalty sees it; `generated`: answer tokens so far; `sampling` adds the warpers.
 */
export function processScores(scores: Float64Array, ids: Iterable<number>, generated: number, o: Resolved, sampling: boolean): Float64Array {
  maskBeyondVocab(scores, o.vocabSize);
  applyRepetitionPenalty(scores, ids, o.repetitionPenalty);
  if (generated < o.minNewTokens) suppressTokens(scores, o.stopTokens);
  if (sampling) {
    if (o.temperature !== 1) for (let i = 0; i < scores.length; i++) scores[i] /= o.temperature;
    topKFilter(scores, o.topK);
    topPFilter(scores, o.topP);
  }
  return scores;
}

// ---- stopping ------------------------------------------------------------------------------

/**
 * The stop string that `answer` now ends with, in StopStringCriteria's sense: an occurrence that
 * ends inside the last token's text (the token may run past it). Only a tail of the answer is
 * decoded: enough tokens to hold the longest stop string.
 */
export function stopStringHit(answer: readonly number[], o: Pick<Resolved, 'stopStrings' | 'decode'>): string | undefined {
  if (!o.stopStrings.length || !o.decode || answer.length === 0) return undefined;
  const longest = Math.max(...o.stopStrings.map((s) => s.length));
  const tail = answer.slice(Math.max(0, answer.length - longest - 2));
  const text = o.decode(tail);
  const before = o.decode(tail.slice(0, -1)).length;
  for (const s of o.stopStrings) {
    if (text.indexOf(s, Math.max(0, before - s.length + 1)) >= 0) return s;
  }
  return undefined;
}

function finishOf(answer: readonly number[], o: Resolved): { finish: FinishReason; stopString?: string } | null {
  if (o.stopTokens.includes(answer[answer.length - 1])) return { finish: 'stop-token' };
  const s = stopStringHit(answer, o);
  if (s !== undefined) return { finish: 'stop-string', stopString: s };
  return null;
}

// ---- the loops -----------------------------------------------------------------------------

/**
 * Decodes an answer for each prompt (several at once: the model's rows), greedy, sampling or beam
 * search as the options say. `prompts` are the ids the repetition penalty sees (and nothing else
 * reads them: the model holds its own inputs).
 */
export async function runDecoding(model: NextTokenModel, prompts: readonly (readonly number[])[], opts: DecodingOptions = {}): Promise<Decoded[]> {
  const o = resolveDecodingOptions(opts);
  if (prompts.length === 0) return [];
  return o.numBeams > 1 ? beamSearch(model, prompts, o) : sampleOrGreedy(model, prompts, o);
}

function checkRows(rows: Float32Array[], want: number, where: string): void {
  if (rows.length !== want) throw new Error(`generate: the model returned ${rows.length} rows of logits at ${where}, expected ${want}`);
}

async function sampleOrGreedy(model: NextTokenModel, prompts: readonly (readonly number[])[], o: Resolved): Promise<Decoded[]> {
  const sampling = o.temperature > 0;
  const out: Decoded[] = prompts.map(() => ({ tokens: [], logits: [], finish: 'length' }));
  const penalised = prompts.map((p) => new Set<number>(o.penalizePrompt ? p : []));
  let live = prompts.map((_, i) => i);
  let rows = await model.start();
  checkRows(rows, live.length, 'the prompt');
  for (let t = 0; t < o.maxNewTokens; t++) {
    const parents: number[] = [];
    const next: number[] = [];
    const still: number[] = [];
    live.forEach((s, r) => {
      const d = out[s];
      const scores = processScores(Float64Array.from(rows[r]), penalised[s], t, o, sampling);
      const id = sampling ? sampleToken(scores) : argmax(scores);
      d.tokens.push(id);
      penalised[s].add(id);
      if (o.keepLogits) d.logits.push(rows[r]);
      o.onToken?.(id, s);
      const end = finishOf(d.tokens, o);
      if (end) Object.assign(d, end);
      else if (t + 1 < o.maxNewTokens) {
        parents.push(r);
        next.push(id);
        still.push(s);
      }
    });
    if (still.length === 0) break;
    rows = await model.step(parents, next);
    checkRows(rows, still.length, `step ${t + 1}`);
    live = still;
  }
  return out;
}

interface Beam {
  /** Row of the model's last result holding this beam. */
  row: number;
  tokens: number[];
  /** Sum of processed log-probabilities. */
  score: number;
  logits: Float32Array[];
}

interface Hypothesis {
  tokens: number[];
  /** score / length^lengthPenalty, or UNLIKELY for an empty slot. */
  score: number;
  finished: boolean;
  logits: Float32Array[];
  end?: { finish: FinishReason; stopString?: string };
}

interface Candidate {
  score: number;
  beam: number;
  token: number;
}

/** The best `k` of one beam's scores (plus its running score), as candidates; ties: lower id first. */
function bestOfBeam(scores: Float64Array, base: number, beam: number, k: number, into: Candidate[]): void {
  const top: Candidate[] = [];
  for (let v = 0; v < scores.length; v++) {
    const s = scores[v] + base;
    if (top.length === k && !(s > top[k - 1].score)) continue;
    let i = top.length === k ? k - 1 : top.length;
    if (top.length < k) top.push({ score: s, beam, token: v });
    while (i > 0 && top[i - 1].score < s) {
      top[i] = top[i - 1];
      i--;
    }
    top[i] = { score: s, beam, token: v };
  }
  into.push(...top);
}

/** Indices of the `k` largest values, largest first; ties keep the earlier index first. */
function topIndices(values: readonly number[], k: number): number[] {
  return Array.from(values.keys())
    .sort((a, b) => (values[b] - values[a]) || a - b)
    .slice(0, k);
}

async function beamSearch(model: NextTokenModel, prompts: readonly (readonly number[])[], o: Resolved): Promise<Decoded[]> {
  const nb = o.numBeams;
  const keep = Math.max(2, 1 + o.stopTokens.length) * nb;
  const promptIds = prompts.map((p) => (o.penalizePrompt ? p : []));
  const samples = prompts.map((_, s) => ({
    // numBeams copies of the prompt, all in the sample's start row, only the first one likely
    beams: Array.from({ length: nb }, (_, j): Beam => ({ row: s, tokens: [], score: j === 0 ? 0 : UNLIKELY, logits: [] })),
    finished: Array.from({ length: nb }, (): Hypothesis => ({ tokens: [], score: UNLIKELY, finished: false, logits: [] })),
    improvable: true,
    done: false,
  }));
  let rows = await model.start();
  checkRows(rows, prompts.length, 'the prompt');
  for (let t = 0; t < o.maxNewTokens; t++) {
    const parents: number[] = [];
    const next: number[] = [];
    for (const [s, st] of samples.entries()) {
      if (st.done) continue;
      // top `keep` continuations over all beams
      const cands: Candidate[] = [];
      st.beams.forEach((b, j) => {
        const lp = processScores(logSoftmax(rows[b.row]), [...promptIds[s], ...b.tokens], t, o, false);
        bestOfBeam(lp, b.score, j, keep, cands);
      });
      const order = topIndices(cands.map((c) => c.score), keep);
      const top = order.map((i) => cands[i]);
      const seqs = top.map((c) => [...st.beams[c.beam].tokens, c.token]);
      const ends = seqs.map((q) => finishOf(q, o) ?? (t + 1 >= o.maxNewTokens ? { finish: 'length' as const } : null));
      // running beams for the next step: the best that did not end
      const adjusted = top.map((c, i) => c.score + (ends[i] ? UNLIKELY : 0));
      const chosen = topIndices(adjusted, nb);
      // finished hypotheses: only the first numBeams candidates count, scored by length. (transformers
      // also bars new ones once a sample cannot improve or, with earlyStopping true, is full;
      // here such a sample has stopped already.)
      const length = (t + 1) ** o.lengthPenalty;
      const offered: Hypothesis[] = top.map((c, i) => {
        const counts = ends[i] !== null && i < nb;
        const score = c.score / length + (counts ? 0 : UNLIKELY);
        const parent = st.beams[c.beam];
        return { tokens: seqs[i], score, finished: counts, logits: o.keepLogits ? [...parent.logits, rows[parent.row]] : [], end: ends[i] ?? undefined };
      });
      const merged = [...st.finished, ...offered];
      st.finished = topIndices(merged.map((h) => h.score), nb).map((i) => merged[i]);
      st.beams = chosen.map((i) => {
        const c = top[i];
        const parent = st.beams[c.beam];
        parents.push(parent.row);
        next.push(c.token);
        return { row: parents.length - 1, tokens: seqs[i], score: adjusted[i], logits: o.keepLogits ? [...parent.logits, rows[parent.row]] : [] };
      });
      // can a running beam still beat the worst finished one?
      const generated = t + 1;
      const bestLength = o.earlyStopping === 'never' && o.lengthPenalty > 0 ? o.maxNewTokens : generated;
      const bestPossible = st.beams[0].score / bestLength ** o.lengthPenalty;
      const worst = Math.min(...st.finished.map((h) => h.score));
      st.improvable = st.improvable && st.finished.some((h) => bestPossible > (h.finished ? worst : UNLIKELY));
      const allFinished = st.finished.every((h) => h.finished);
      const anyRunning = ends.some((e) => e === null);
      if (!st.improvable || (allFinished && o.earlyStopping === true) || !anyRunning) {
        st.done = true;
        // its rows were queued for the next step: take them back
        parents.length -= nb;
        next.length -= nb;
      }
    }
    if (parents.length === 0) break;
    rows = await model.step(parents, next);
    checkRows(rows, parents.length, `step ${t + 1}`);
  }
  return samples.map((st) => {
    const best = st.finished[0];
    return { tokens: best.tokens, logits: best.logits, score: best.score, ...(best.end ?? { finish: 'length' as const }) };
  });
}

/**
 * A NextTokenModel from a function of the whole sequence (prompt and answer so far): for tests,
 * and for models without a cache. It keeps each row's sequence.
 */
export function sequenceModel(prompts: readonly (readonly number[])[], next: (ids: readonly number[]) => Float32Array): NextTokenModel {
  let seqs = prompts.map((p) => [...p]);
  return {
    start: async () => seqs.map(next),
    step: async (parents, tokens) => {
      if (parents.length !== tokens.length) throw new Error(`sequenceModel: ${parents.length} parents but ${tokens.length} tokens`);
      seqs = parents.map((r, i) => {
        if (!(r >= 0 && r < seqs.length)) throw new Error(`sequenceModel: parent row ${r} is not one of the ${seqs.length} rows`);
        return [...seqs[r], tokens[i]];
      });
      return seqs.map(next);
    },
  };
}
