import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  canInfer, canInferOption, canInferText, mathVistaPrefetch, ocrBenchHit, processPunctuation, releaseMcqFilter, releaseYOrNFilter, yOrNExtraction,
} from '../../../llava-uhd/eval/extract.js';
import { parsePyList } from '../../../llava-uhd/eval/python.js';

/** Expected values: VLMEvalKit's rules re-implemented in Python (fixtures/extract_rules.py). */
const table = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'extract_rules.json'), 'utf8')) as {
  choices: Record<string, string>;
  mcq: { answer: string; option: string | false; text: string | false; infer: string | false }[];
  filter: { dataset: string; prediction: string; question_type: string | null; filtered: string }[];
  yorn: { prediction: string; filtered: string; extracted: string; raw: string }[];
  punctuation: { text: string; out: string }[];
  ocrbench: { prediction: string; answers: string[]; category: string; hit: boolean }[];
  mathvista: { question_type: string; answer_type: string; answer: string; answer_option: string | null; choices: string | null; prediction: string; prefetched: boolean; hit: boolean }[];
};

describe('answer extraction as VLMEvalKit reads answers without a judge', () => {
  it('the table covers the tricky outputs the issue names', () => {
    const answers = table.mcq.map((r) => r.answer);
    for (const a of ['The answer is (B).', 'B. cat'.replace('cat', 'dog'), 'I think C, not B', '', '答案：B']) expect(answers).toContain(a);
  });

  for (const r of table.mcq) {
    it(`can_infer on ${JSON.stringify(r.answer)}: option ${r.option}, text ${r.text}, result ${r.infer}`, () => {
      expect(canInferOption(r.answer, table.choices)).toBe(r.option);
      expect(canInferText(r.answer, table.choices)).toBe(r.text);
      expect(canInfer(r.answer, table.choices)).toBe(r.infer);
    });
  }

  it("the release's 'Answer: X' filters, per dataset", () => {
    for (const r of table.filter) expect(releaseMcqFilter(r.dataset, r.prediction, r.question_type), `${r.dataset} ${JSON.stringify(r.prediction)}`).toBe(r.filtered);
  });

  it('yes/no extraction, with and without the release filter', () => {
    for (const r of table.yorn) {
      expect(releaseYOrNFilter(r.prediction), JSON.stringify(r.prediction)).toBe(r.filtered);
      expect(yOrNExtraction(r.filtered), JSON.stringify(r.filtered)).toBe(r.extracted);
      expect(yOrNExtraction(r.prediction), JSON.stringify(r.prediction)).toBe(r.raw);
    }
  });

  it('process_punctuation, including its 32-period limit', () => {
    for (const r of table.punctuation) expect(processPunctuation(r.text), JSON.stringify(r.text)).toBe(r.out);
  });

  it("OCRBench's containment", () => {
    for (const r of table.ocrbench) expect(ocrBenchHit(r.prediction, r.answers, r.category), JSON.stringify(r)).toBe(r.hit);
  });

  it("MathVista's prefetch: only bare numbers and readable letters are scored without the judge", () => {
    for (const r of table.mathvista) {
      const got = mathVistaPrefetch({ ...r, choices: r.choices ? parsePyList(r.choices, 'choices') : null }, r.prediction);
      expect({ prefetched: got.prefetched, hit: got.hit }, JSON.stringify(r.prediction)).toEqual({ prefetched: r.prefetched, hit: r.hit });
    }
  });
});
