import { describe, expect, it } from 'vitest';
import { benchmark, inferBenchmark, type BenchmarkName } from '../../../llava-uhd/eval/benchmarks.js';
import { buildMessages, userContent } from '../../../llava-uhd/eval/prompts.js';
import type { VlmRow } from '../../../llava-uhd/eval/vlmeval-tsv.js';

/** A row as readVlmevalTsv makes it. */
function row(fields: { question: string; hint?: string; options?: string[]; images?: number; index?: string }): VlmRow {
  const options = (fields.options ?? []).map((text, k) => ({ letter: 'ABCDEFGHI'[k], text }));
  const values: Record<string, string | null> = { index: fields.index ?? '7', question: fields.question, hint: fields.hint ?? null };
  for (const o of options) values[o.letter] = o.text;
  const images = Array.from({ length: fields.images ?? 1 }, (_, k) => ({ kind: 'base64' as const, data: 'x', dumpName: `${k}.jpg` }));
  return { position: 0, line: 2, index: values.index!, values, images, options };
}
const prompt = (name: BenchmarkName, r: VlmRow) => userContent(buildMessages(r, benchmark(name)), r);

// The texts below are written out in full on purpose (not taken from prompts.ts): they are the
// release wrapper's strings, MiniCPM_4_V in vlmevalkit/vlmeval/vlm/minicpm_v.py.
const COT_MCQ = 'Carefully read the following multichoice question, solve it step by step and finally pick the option associated with the correct answer in the format of "Answer: selected option\n\n';
const COT_SHORT = 'Read the following question carefully, solve it step by step, and then output the final answer in the format of "Answer: single number or single word or phrase".\n\n';

describe("the release wrapper's prompts, per benchmark family", () => {
  it('MMBench (no CoT): hint, "Question:", "Options:", the letter instruction, image first', () => {
    const p = prompt('MMBench_DEV_EN_V11', row({ question: 'What is shown?', hint: 'Look closely.', options: ['a cat', 'a dog'] }));
    expect(p.content).toBe("<image>\nHint: Look closely.\nQuestion: What is shown?\nOptions:\nA. a cat\nB. a dog\n\nAnswer with the option's letter from the given choices directly.");
    expect(p.images).toEqual([0]);
    expect(prompt('MMBench_DEV_CN_V11', row({ question: '图中是什么？', options: ['猫', '狗', '鸟'] })).content).toBe(
      "<image>\nQuestion: 图中是什么？\nOptions:\nA. 猫\nB. 狗\nC. 鸟\n\nAnswer with the option's letter from the given choices directly.",
    );
  });

  it('AI2D and custom multiple choice take the same prompt; without options, the "answer directly" text comes first', () => {
    expect(prompt('AI2D_TEST', row({ question: 'Which stage?', options: ['egg', 'larva'] })).content).toBe(
      "<image>\nQuestion: Which stage?\nOptions:\nA. egg\nB. larva\n\nAnswer with the option's letter from the given choices directly.",
    );
    expect(prompt('custom_mcq', row({ question: 'Q?' })).content).toBe('Carefully read the following question. Answer the question directly.\n<image>\nQuestion: Q?\n');
  });

  it('MMStar (CoT): the multichoice CoT text, the question, options without a header', () => {
    expect(prompt('MMStar', row({ question: 'How many?', hint: 'Count.', options: ['1', '2'] })).content).toBe(`<image>\n${COT_MCQ}Hint: Count.\nHow many?\nA. 1\nB. 2\n`);
  });

  it('MMMU (CoT): <image k> references put the images into the text; open questions take the short-answer CoT text', () => {
    const r = row({ question: 'Compare <image 1> with <image 2>. Which is larger?', options: ['left', 'right'], images: 2 });
    const p = prompt('MMMU_DEV_VAL', r);
    expect(p.content).toBe(`${COT_MCQ}Compare \n<image>\n with \n<image>\n. Which is larger?\nA. left\nB. right\n`);
    expect(p.images).toEqual([0, 1]);
    // an image named twice appears twice; one never named is left out
    expect(prompt('MMMU_DEV_VAL', row({ question: '<image 2> and <image 2>', images: 3 })).images).toEqual([1, 1]);
    expect(prompt('MMMU_DEV_VAL', row({ question: 'What is x?' })).content).toBe(`<image>\n${COT_SHORT}What is x?\n`);
    expect(() => prompt('MMMU_DEV_VAL', row({ question: 'see <image 3>', images: 2, index: 'validation_Art_4' }))).toThrow(
      'row index validation_Art_4: the text refers to <image 3> but the row has 2 images',
    );
    expect(() => prompt('MMMU_DEV_VAL', row({ question: 'see <image x>' }))).toThrow('row index 7: "<image x>" is not a reference');
  });

  it('HallusionBench: the question and " Yes or No?"', () => {
    expect(prompt('HallusionBench', row({ question: 'Is the line longer?' })).content).toBe('<image>\nIs the line longer? Yes or No?');
  });

  it('OCRBench (CoT): the OCR text before the question', () => {
    expect(prompt('OCRBench', row({ question: 'what is written in the image?' })).content).toBe(
      '<image>\nCarefully observe the image and answer the OCR-related questions below. \n\nwhat is written in the image?',
    );
  });

  it('MathVista (CoT): the short-answer CoT text before the question', () => {
    expect(prompt('MathVista_MINI', row({ question: 'Hint: Please answer the question requiring an integer answer.\nQuestion: How many?' })).content).toBe(
      `<image>\n${COT_SHORT}Hint: Please answer the question requiring an integer answer.\nQuestion: How many?`,
    );
  });

  it('open questions without CoT: the short-answer instruction as a text before the image', () => {
    expect(prompt('custom_vqa', row({ question: 'What colour is the top stripe?' })).content).toBe(
      'Answer the question using a single word or phrase.\n<image>\nWhat colour is the top stripe?',
    );
  });

  it('a literal <image> in a question is refused, naming the row', () => {
    expect(() => prompt('AI2D_TEST', row({ question: 'what is <image>?', options: ['a', 'b'], index: '12' }))).toThrow(/row index 12: the text holds a literal '<image>'/);
  });

  it('settings per benchmark: CoT and up-scaling as the wrapper sets them; the name picks the benchmark', () => {
    const on = (n: BenchmarkName) => [benchmark(n).cot, benchmark(n).upsize, benchmark(n).circular, benchmark(n).type];
    expect(on('MMMU_DEV_VAL')).toEqual([true, true, false, 'MCQ']);
    expect(on('MathVista_MINI')).toEqual([true, true, false, 'VQA']);
    expect(on('MMStar')).toEqual([true, true, false, 'MCQ']);
    expect(on('OCRBench')).toEqual([true, true, false, 'VQA']);
    expect(on('MMBench_DEV_EN_V11')).toEqual([false, false, true, 'MCQ']);
    expect(on('MMBench_DEV_CN_V11')).toEqual([false, false, true, 'MCQ']);
    expect(on('HallusionBench')).toEqual([false, false, false, 'Y/N']);
    expect(on('AI2D_TEST')).toEqual([false, false, false, 'MCQ']);
    expect(inferBenchmark('MMBench_DEV_EN_V11_local', [])).toBe('MMBench_DEV_EN_V11');
    expect(inferBenchmark('mine', ['index', 'A', 'B'])).toBe('custom_mcq');
    expect(inferBenchmark('mine', ['index', 'question'])).toBe('custom_vqa');
  });
});
