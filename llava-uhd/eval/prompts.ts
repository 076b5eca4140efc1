/**
 * Prompts as the release's VLMEvalKit wrapper builds them: `MiniCPM_4_V.build_prompt`
 * (`vlmevalkit/vlmeval/vlm/minicpm_v.py`) makes a message list (a system text when there is one,
 * the row's images, the prompt text; MMMU's `<image k>` references then interleave the images
 * into the text, `MMMUDataset.split_MMMU` in `vlmeval/dataset/image_mcq.py`), and
 * `generate_inner` hands it to the model's `chat()` as one user turn whose content MiniCPM-V
 * joins with "\n", each image standing where it falls (`chat()` in `modeling_minicpmv.py`).
 * Here the joined content holds `<image>` where each image goes (llava-uhd/layout.ts expands it).
 *
 * Without chain of thought (MMBench, AI2D, HallusionBench, custom data):
 *   MCQ   "Hint: {hint}\n" (when there is one) + "Question: {q}\n" + "Options:\nA. {A}\n..." +
 *         "\nAnswer with the option's letter from the given choices directly."
 *   Y/N   "{q} Yes or No?"                                  (HallusionBench)
 *   VQA   "Answer the question using a single word or phrase." as a text before the images, then {q}
 * With chain of thought (MMMU, MathVista, MMStar, OCRBench): the question (and hint, and options
 * without the "Options:" header) after `multi_choice_cot_prompt`, `short_ans_cot_prompt` or, for
 * OCRBench, `ocrbench_cot_prompt`.
 */
import type { Benchmark } from './benchmarks.js';
import { rowError, type VlmRow } from './vlmeval-tsv.js';

// The wrapper's fixed texts (MiniCPM_4_V.__init__), character for character.
export const OPTIONS_SUFFIX_PROMPT = "\nAnswer with the option's letter from the given choices directly.";
export const WO_OPTIONS_SYSTEM_PROMPT = 'Carefully read the following question. Answer the question directly.';
export const DETAIL_SYSTEM_PROMPT = 'Answer this question in detail.';
export const VQA_PROMPT = 'Answer the question using a single word or phrase.';
export const MULTI_CHOICE_COT_PROMPT =
  'Carefully read the following multichoice question, solve it step by step and finally pick the option associated with the correct answer in the format of "Answer: selected option\n\n';
export const SHORT_ANS_COT_PROMPT =
  'Read the following question carefully, solve it step by step, and then output the final answer in the format of "Answer: single number or single word or phrase".\n\n';
export const OCRBENCH_COT_PROMPT = 'Carefully observe the image and answer the OCR-related questions below. \n\n';

/** One element of the wrapper's message list: text, or the row's k-th image (0-based). */
export type Message = { type: 'text'; value: string } | { type: 'image'; image: number };

const listinstr = (keys: readonly string[], name: string) => keys.some((k) => name.includes(k));

/** `MiniCPM_4_V.build_prompt` for one row (before `split_MMMU`). */
function wrapperMessages(row: VlmRow, bench: Benchmark): Message[] {
  const name = bench.name;
  const type = bench.type;
  const question = row.values.question ?? 'nan'; // pandas' NaN prints as 'nan' in an f-string
  const hint = row.values.hint ?? null;
  let system = '';
  let prompt = '';
  if (!bench.cot) {
    if (type === 'MCQ') {
      if (hint !== null) prompt += `Hint: ${hint}\n`;
      prompt += `Question: ${question}\n`;
      if (row.options.length) {
        prompt += 'Options:\n' + row.options.map((o) => `${o.letter}. ${o.text}\n`).join('');
        prompt += OPTIONS_SUFFIX_PROMPT;
      } else {
        system = WO_OPTIONS_SYSTEM_PROMPT;
      }
      if (name.includes('MMMU') && system) {
        prompt = `${system}\n${prompt}`;
        system = '';
      }
    } else if (listinstr(['HallusionBench'], name)) {
      prompt = `${question} Yes or No?`;
    } else if (listinstr(['OCRBench'], name)) {
      system = VQA_PROMPT;
      prompt = question;
    } else if (type === 'VQA') {
      system = listinstr(['LLaVABench'], name) ? '' : listinstr(['MMVet'], name) ? DETAIL_SYSTEM_PROMPT : VQA_PROMPT;
      prompt = question;
    } else {
      prompt = question;
    }
  } else {
    let hasOptions = true;
    if (type === 'MCQ') {
      if (hint !== null) prompt += `Hint: ${hint}\n`;
      prompt += `${question}\n`;
      if (row.options.length) prompt += row.options.map((o) => `${o.letter}. ${o.text}\n`).join('');
      else hasOptions = false;
    } else {
      prompt = question;
    }
    if (type === 'MCQ') prompt = (hasOptions ? MULTI_CHOICE_COT_PROMPT : SHORT_ANS_COT_PROMPT) + prompt;
    else if (type === 'Y/N') prompt = SHORT_ANS_COT_PROMPT + prompt;
    else if (listinstr(['OCRBench'], name)) prompt = OCRBENCH_COT_PROMPT + prompt;
    else prompt = SHORT_ANS_COT_PROMPT + prompt;
  }
  const msgs: Message[] = [];
  if (system) msgs.push({ type: 'text', value: system });
  row.images.forEach((_, k) => msgs.push({ type: 'image', image: k }));
  msgs.push({ type: 'text', value: prompt });
  return msgs;
}

/**
 * `MMMUDataset.split_MMMU`: the text's `<image k>` references (k a single digit, 1-based) become
 * the row's k-th image at that place; images the text does not name are left out, and a text
 * without references keeps the images first. A bad reference is an error naming the row.
 */
export function splitMMMU(msgs: Message[], row: VlmRow): Message[] {
  const texts = msgs.filter((m): m is Extract<Message, { type: 'text' }> => m.type === 'text');
  if (texts.length !== 1) throw rowError(row, `split_MMMU expects one text message, got ${texts.length}`);
  const images = msgs.filter((m): m is Extract<Message, { type: 'image' }> => m.type === 'image');
  const segs = texts[0].value.split('<image ');
  if (segs.length === 1) return msgs;
  const out: Message[] = [{ type: 'text', value: segs[0] }];
  for (const seg of segs.slice(1)) {
    if (!/^[0-9]>/.test(seg)) throw rowError(row, `${JSON.stringify(`<image ${seg.slice(0, 2)}`)} is not a reference '<image k>' with a single digit k`);
    const k = Number(seg[0]) - 1;
    if (k < 0 || k >= images.length) throw rowError(row, `the text refers to <image ${seg[0]}> but the row has ${images.length} images`);
    out.push(images[k], { type: 'text', value: seg.slice(2) });
  }
  return out;
}

/** The wrapper's message list for a row, MMMU's references applied. */
export function buildMessages(row: VlmRow, bench: Benchmark): Message[] {
  const msgs = wrapperMessages(row, bench);
  return bench.name.startsWith('MMMU_') ? splitMMMU(msgs, row) : msgs;
}

/** The user turn `chat()` makes of the messages: texts and `<image>` joined by "\n", and the images in order. */
export function userContent(msgs: readonly Message[], row: VlmRow): { content: string; images: number[] } {
  const images: number[] = [];
  const parts = msgs.map((m) => {
    if (m.type === 'image') {
      images.push(m.image);
      return '<image>';
    }
    if (m.value.includes('<image>')) throw rowError(row, "the text holds a literal '<image>', which the prompt layout reserves for images");
    return m.value;
  });
  return { content: parts.join('\n'), images };
}
