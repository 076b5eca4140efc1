/**
 * Answer extraction as VLMEvalKit does it without an LLM judge. Each rule cites where it comes
 * from; "upstream" is open-compass/VLMEvalKit (vlmeval/utils/matching_util.py and
 * vlmeval/dataset/utils/{multiple_choice,vqa_eval,mathvista}.py, the versions of the release's
 * time), "release" the modified copies in THUMAI-Lab/LLaVA-UHD-v4 `vlmevalkit/`.
 * tests/llava-uhd/eval/fixtures/extract_rules.py re-implements them in Python and writes the
 * table of tricky outputs that tests/llava-uhd/eval/extract.test.ts checks these against.
 */
import { PY_S, pyFloatOf, pyInt, pySplit } from './python.js';

/** Options of a multiple-choice row: letter -> text. */
export type Choices = Readonly<Record<string, string>>;

/** A letter, 'Z' (the model declined), or false (nothing could be read). */
export type Inferred = string | false;

const REJECT_TO_ANSWER = [
  "Sorry, I can't help with images of people yet.",
  "I can't process this file.",
  "I'm sorry, but without the image provided",
  'Cannot determine the answer',
];

/**
 * Upstream `can_infer_option`: the answer with `.()[],:;!*#{}` turned into spaces, split on
 * whitespace; exactly one option letter among the words gives that letter; no letter but a lone
 * "Z" gives 'Z'; a refusal phrase gives 'Z'. ("A" counts as a letter even when it is the article:
 * the quantifier check only runs with VERBOSE set.)
 */
export function canInferOption(answer: string, choices: Choices): Inferred {
  if (answer.includes('Failed to obtain answer via API')) return false;
  for (const err of REJECT_TO_ANSWER) if (answer.includes(err)) return 'Z';
  let mod = answer;
  for (const c of '.()[],:;!*#{}') mod = mod.split(c).join(' ');
  const words = new Set(pySplit(mod));
  const letters = Object.keys(choices);
  const present = letters.filter((l) => words.has(l));
  if (present.length === 1) return present[0];
  if (present.length === 0 && words.has('Z')) return 'Z';
  return false;
}

/** Upstream `can_infer_text`: exactly one option's text (lower-cased) inside the lower-cased answer. */
export function canInferText(answer: string, choices: Choices): Inferred {
  const a = answer.toLowerCase();
  const cands = Object.keys(choices).filter((k) => a.includes(String(choices[k]).toLowerCase()));
  return cands.length === 1 ? cands[0] : false;
}

/** Upstream `can_infer`: the option letter, else the option text. */
export function canInfer(answer: string, choices: Choices): Inferred {
  return canInferOption(answer, choices) || canInferText(answer, choices);
}

/** Python's `re.findall`-style last capture of a global regex, or null. */
function lastCapture(re: RegExp, text: string, group = 1): string | null {
  let last: string | null = null;
  for (const m of text.matchAll(re)) last = m[group];
  return last;
}

const ANSWER_AI = new RegExp(`Answer:${PY_S}*([A-Ia-i])(?![A-Za-z])`, 'g');
const ANSWER_AD = new RegExp(`Answer:${PY_S}*([A-Da-d])(?![A-Za-z])`, 'g');
const ANSWER_CN = new RegExp(`(答案|Answer|answer)(：|:)${PY_S}*([a-dA-D])(?![A-Za-z])`, 'g');

/**
 * The release's `ImageMCQDataset.evaluate` pre-filter (release `vlmeval/dataset/image_mcq.py`):
 * before matching, the prediction becomes the letter of its last "Answer: X" (A-I for
 * MMMU_DEV_VAL multiple-choice rows only, A-D for MMStar, AI2D_TEST and MMBench_DEV_EN_V11;
 * MMBench_DEV_CN_V11 also accepts 答案 and the full-width colon). Other datasets, and
 * predictions without the pattern, pass unchanged.
 */
export function releaseMcqFilter(dataset: string, prediction: string, questionType: string | null): string {
  if (dataset === 'MMMU_DEV_VAL') {
    if (questionType !== 'multiple-choice') return prediction;
    return lastCapture(ANSWER_AI, prediction)?.trim() ?? prediction;
  }
  if (dataset === 'MMStar' || dataset === 'AI2D_TEST' || dataset === 'MMBench_DEV_EN_V11') {
    return lastCapture(ANSWER_AD, prediction)?.trim() ?? prediction;
  }
  if (dataset === 'MMBench_DEV_CN_V11') {
    let out = prediction;
    for (const m of prediction.matchAll(ANSWER_CN)) out = m[0].slice(m[1].length + m[2].length).trim();
    return out;
  }
  return prediction;
}

const PUNCT = [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'];
const COMMA_STRIP = /(\p{Nd})(,)(\p{Nd})/u;
const PERIOD_STRIP = /(?!<=\p{Nd})(\.)(?!\p{Nd})/gu;

/**
 * Upstream `process_punctuation` (vqa_eval.py, from the VQA evaluation code): each punctuation
 * mark is deleted when it touches a space somewhere in the text (or the text has a digit,digit
 * comma), else replaced by a space; then periods not followed by a digit are deleted, at most 32
 * of them (the call passes `re.UNICODE`, 32, as `sub`'s count).
 */
export function processPunctuation(text: string): string {
  let out = text;
  const comma = COMMA_STRIP.test(text);
  for (const p of PUNCT) {
    const touching = text.includes(`${p} `) || text.includes(` ${p}`);
    out = out.split(p).join(touching || comma ? '' : ' ');
  }
  let n = 0;
  return out.replace(PERIOD_STRIP, (m) => (n++ < 32 ? '' : m));
}

/** Upstream `YOrN_Extraction`: 'Yes' or 'No' when exactly one of the words appears, else 'Unknown'. */
export function yOrNExtraction(output: string): 'Yes' | 'No' | 'Unknown' {
  const words = pySplit(processPunctuation(output.toLowerCase()));
  const yes = words.includes('yes');
  const no = words.includes('no');
  if (yes && !no) return 'Yes';
  if (!yes && no) return 'No';
  return 'Unknown';
}

const ANSWER_TAIL = new RegExp(`Answer:${PY_S}*([\\s\\S]*)${PY_S}*$`);

/** The release's `ImageYORNDataset.evaluate` pre-filter: the text after the first "Answer:", stripped. */
export function releaseYOrNFilter(prediction: string): string {
  const m = ANSWER_TAIL.exec(prediction);
  return m ? m[1].replace(new RegExp(`^${PY_S}+|${PY_S}+$`, 'g'), '') : prediction;
}

/**
 * `OCRBench.evaluate` (release `vlmeval/dataset/image_vqa.py`): a hit when one of the answers,
 * lower-cased and stripped, is contained in the lower-cased prediction (newlines as spaces); for
 * handwritten mathematical expressions, case kept and all spaces removed.
 */
export function ocrBenchHit(prediction: string, answers: readonly string[], category: string | null): boolean {
  const strip = (s: string) => s.replace(new RegExp(`^${PY_S}+|${PY_S}+$`, 'g'), '');
  if (category === 'Handwritten Mathematical Expression Recognition') {
    const p = strip(prediction).replace(/\n/g, ' ').replace(/ /g, '');
    return answers.some((a) => p.includes(strip(a).replace(/\n/g, ' ').replace(/ /g, '')));
  }
  const p = strip(prediction.toLowerCase()).replace(/\n/g, ' ');
  return answers.some((a) => p.includes(strip(a.toLowerCase()).replace(/\n/g, ' ')));
}

/** One MathVista row's fields that `post_check` reads. */
export interface MathVistaRow {
  question_type: string | null;
  answer_type: string | null;
  answer: string | null;
  answer_option: string | null;
  /** The row's choices as parsed from its Python list literal (letters A, B, ... in order). */
  choices: readonly string[] | null;
}

/**
 * Upstream `post_check(line, prefetch=True)` (mathvista.py) and what `MathVista_auxeval` makes of
 * it: for a multiple-choice row the letter `can_infer` reads (right or wrong) is prefetched; for
 * integer and float answers the prediction must be that number as a whole (`int(response)`,
 * `float(response)`) and equal to the answer; anything else, and an answer of 0 (a falsy
 * prefetch), goes to the judge. `prefetched` false means "needs judge"; `hit` is then false.
 */
export function mathVistaPrefetch(row: MathVistaRow, prediction: string): { prefetched: boolean; hit: boolean; res: string | null } {
  if (row.question_type === 'multi_choice') {
    const choices: Record<string, string> = {};
    (row.choices ?? []).forEach((c, i) => (choices[String.fromCharCode(65 + i)] = c));
    const res = canInfer(prediction, choices);
    if (!res) return { prefetched: false, hit: false, res: null };
    // MathVista_acc: post_check(prefetch=False) on res, the letter itself
    const again = canInfer(res, choices);
    return { prefetched: true, hit: again !== false && again === row.answer_option, res };
  }
  if (row.answer_type === 'integer') {
    const res = pyInt(prediction);
    const ans = row.answer === null ? null : pyInt(row.answer);
    const ok = res !== null && ans !== null && res === ans && res !== 0n;
    return { prefetched: ok, hit: ok, res: ok ? res!.toString() : null };
  }
  if (row.answer_type === 'float') {
    const res = pyFloatOf(prediction);
    const ans = row.answer === null ? null : pyFloatOf(row.answer);
    const ok = res !== null && ans !== null && res === ans && res !== 0;
    return { prefetched: ok, hit: ok, res: ok ? String(res) : null };
  }
  return { prefetched: false, hit: false, res: null };
}

const ANSWER_LAST_LINE = new RegExp(`Answer:${PY_S}*([^\\n]*)`, 'g');

/**
 * Ours, not VLMEvalKit's: the text after the last "Answer:" (the format the CoT prompt asks
 * for), stripped of a trailing period, for a second, clearly labelled MathVista figure that needs
 * no judge. The paper's MathVista numbers come from a GPT judge.
 */
export function lastAnswerLine(prediction: string): string | null {
  const v = lastCapture(ANSWER_LAST_LINE, prediction);
  return v === null ? null : v.replace(new RegExp(`^${PY_S}+|${PY_S}+$`, 'g'), '').replace(/\.$/, '');
}
