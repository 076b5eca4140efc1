import { describe, expect, it } from 'vitest';
import { benchmark, type BenchmarkName } from '../../../llava-uhd/eval/benchmarks.js';
import { reportAcc, scoreBenchmark, type PredictedRow } from '../../../llava-uhd/eval/score.js';

function pr(index: string, prediction: string, values: Record<string, string | null>, options: string[] = []): PredictedRow {
  const opts = options.map((text, k) => ({ letter: 'ABCDEFGHI'[k], text }));
  const v: Record<string, string | null> = { index, question: 'Q', ...values };
  for (const o of opts) v[o.letter] = o.text;
  return { index, values: v, options: opts, prediction };
}
const score = (name: BenchmarkName, rows: PredictedRow[]) => scoreBenchmark(benchmark(name), rows);

describe('MMBench circular evaluation', () => {
  // question 1: every rotation right; 2: one rotation wrong; 3: one rotation unreadable; 4: its
  // main row was not evaluated (a rotation alone is not scored)
  const rows = [
    pr('1', 'A', { answer: 'A', category: 'ocr', 'l2-category': 'coarse_perception' }, ['cat', 'dog']),
    pr('1000001', 'The answer is B', { answer: 'B', category: 'ocr', 'l2-category': 'coarse_perception' }, ['dog', 'cat']),
    pr('2', 'A', { answer: 'A', category: 'ocr', 'l2-category': 'logic_reasoning' }, ['x', 'y']),
    pr('1000002', 'A', { answer: 'B', category: 'ocr', 'l2-category': 'logic_reasoning' }, ['y', 'x']),
    pr('3', 'B', { answer: 'B', category: 'count', 'l2-category': 'logic_reasoning' }, ['1', '2']),
    pr('1000003', 'I have no idea', { answer: 'A', category: 'count', 'l2-category': 'logic_reasoning' }, ['2', '1']),
    pr('2000004', 'A', { answer: 'A', category: 'count', 'l2-category': 'logic_reasoning' }, ['a', 'b']),
  ];

  it('a question counts only when every rotation is right; unreadable ones need the judge', () => {
    const r = score('MMBench_DEV_EN_V11', rows);
    expect(r.scored).toBe(3);
    expect(r.result!.rows.map((x) => [x[0], x.at(-2)])).toEqual([['1', '1'], ['2', '0'], ['3', '0']]);
    expect(r.result!.rows[1].at(-1)).toBe('Failed in Prefetching Rolling 1: Answer is B, Prediction is A, Pre-fetched is A. ');
    expect(r.result!.rows[2].at(-1)).toBe('Failed in Prefetch, no GPT-based answer matching under `exact_matching` policy.');
    expect(r.needsJudge).toBe(1);
    expect(r.overall.value).toBeCloseTo(100 / 3, 10);
    expect(r.notes.join()).toMatch(/1 rows belong to no main row/);
    // report_acc: split, Overall, l2-categories (abbreviated), categories, each sorted
    expect(r.acc).toEqual({
      columns: ['split', 'Overall', 'CP', 'LR', 'count', 'ocr'],
      rows: [['none', '0.3333333333333333', '1.0', '0.0', '0.0', '0.5']],
    });
  });

  it('rotations are grouped by g_index when the file has one, and need integer indices', () => {
    const g = [pr('10', 'A', { answer: 'A', g_index: '10' }, ['a', 'b']), pr('11', 'B', { answer: 'A', g_index: '10' }, ['b', 'a'])];
    expect(score('MMBench_DEV_EN_V11', g).result!.rows.map((x) => x.at(-2))).toEqual(['0']);
    expect(() => score('MMBench_DEV_EN_V11', [pr('q1', 'A', { answer: 'A' }, ['a', 'b'])])).toThrow(/index q1 is not an integer/);
  });

  it("the CN release filter reads 答案：X before matching", () => {
    const r = score('MMBench_DEV_CN_V11', [pr('1', '因为……所以答案：B', { answer: 'B' }, ['猫', '狗'])]);
    expect(r.result!.rows[0].at(-2)).toBe('1');
  });
});

describe('multiple choice without rotations', () => {
  it("MMStar: the CoT answer's last 'Answer: X' is read", () => {
    const rows = [pr('0', 'Step 1... so A is wrong.\nAnswer: C', { answer: 'C', category: 'c', 'l2-category': 'l' }, ['a', 'b', 'c', 'd']), pr('1', 'maybe', { answer: 'A', category: 'c', 'l2-category': 'l' }, ['p', 'q'])];
    const r = score('MMStar', rows);
    expect(r.result!.rows.map((x) => x.at(-2))).toEqual(['1', '0']);
    expect(r.needsJudge).toBe(1);
    expect(r.acc.rows).toEqual([['none', '0.5', '0.5', '0.5']]);
  });

  it("MMMU: splits are rows; open questions are 'the answer or Other Answers'; the filter applies to multiple-choice rows only", () => {
    const rows = [
      pr('1', 'reasoning\nAnswer: B', { answer: 'B', split: 'validation', question_type: 'multiple-choice' }, ['x', 'y']),
      pr('2', 'The value is 42.', { answer: '42', split: 'validation', question_type: 'open', A: null, B: null }),
      pr('3', 'Answer: A', { answer: '42', split: 'dev', question_type: 'open', A: null, B: null }),
    ];
    const r = score('MMMU_DEV_VAL', rows);
    // row 3: "Answer: A" is not filtered (open) but can_infer_option reads the letter A -> 'A', the ground truth
    expect(r.result!.rows.map((x) => x.at(-2))).toEqual(['1', '1', '1']);
    expect(r.acc.columns).toEqual(['split', 'Overall']);
    expect(r.acc.rows).toEqual([['validation', '1.0'], ['dev', '1.0']]);
  });
});

describe('HallusionBench', () => {
  const hb = (index: string, prediction: string, answer: string, l2 = 'VS', cat = 'chart') => pr(index, prediction, { answer, category: cat, 'l2-category': l2 });
  it('aAcc over questions, fAcc over figures, qAcc over question pairs', () => {
    const rows = [
      // index ..._set_figure_question (Hallusion_rating reads parts 3, 4, 5)
      hb('VS_chart_0_1_0_0', 'Yes', 'Yes'), hb('VS_chart_0_1_1_0', 'No', 'No'), // question 0: both figures right
      hb('VS_chart_0_1_0_1', 'Yes', 'No'), hb('VS_chart_0_1_1_1', 'Answer: No', 'No'), // question 1: one wrong
      hb('VD_map_0_2_0_0', 'It is unclear', 'Yes', 'VD', 'map'),
    ];
    const r = score('HallusionBench', rows);
    // aAcc 3/5; figures (VS,1,0): 0_0 right 0_1 wrong -> 0, (VS,1,1): both right -> 1, (VD,2,0): 0 -> 1/3;
    // questions (VS,1,0): right -> 1, (VS,1,1): 0, (VD,2,0): 0 -> 1/3
    expect(r.acc.columns).toEqual(['split', 'aAcc', 'fAcc', 'qAcc', 'mean_acc']);
    expect(r.acc.rows[0].slice(0, 4)).toEqual(['Overall', '60.0', '33.33333333333333', '33.33333333333333']);
    expect(r.acc.rows.map((x) => x[0])).toEqual(['Overall', 'chart', 'map', 'VD', 'VS']);
    expect(r.needsJudge).toBe(1);
    expect(r.extra[0].suffix).toBe('_score.csv');
  });

  it('without the index layout only aAcc is given', () => {
    const r = score('HallusionBench', [pr('a1', 'yes', { answer: 'Yes' })]);
    expect(r.acc.rows[0]).toEqual(['Overall', '100.0', null, null, null]);
    expect(r.notes[0]).toMatch(/only aAcc/);
  });
});

describe('OCRBench and MathVista', () => {
  it('OCRBench: containment, category sums, the score json', () => {
    const rows = [
      pr('0', 'The sign says STOP.', { answer: "['stop']", category: 'Regular Text Recognition' }),
      pr('1', 'x^2', { answer: "['x ^ 2']", category: 'Handwritten Mathematical Expression Recognition' }),
      pr('2', 'nothing', { answer: "['42']", category: 'Doc-oriented VQA' }),
    ];
    const r = score('OCRBench', rows);
    expect(r.acc.columns.at(-2)).toBe('Final Score');
    expect(r.acc.rows[0]).toEqual(['1', '0', '0', '0', '1', '2', '0.2']);
    expect(r.extra[0].content).toContain('"Final Score Norm": 0.2');
    expect(() => score('OCRBench', [pr('0', 'a', { answer: 'stop', category: 'Doc-oriented VQA' })])).toThrow(/row index 0: answer: not a Python list literal/);
  });

  it("MathVista: prefetched rows are scored, the rest counted as needing the judge; the 'Answer:' figure is separate", () => {
    const mv = (index: string, prediction: string, answer: string) =>
      pr(index, prediction, { question_type: 'free_form', answer_type: 'integer', answer, answer_option: null, choices: null, task: 'math word problem', skills: "['arithmetic reasoning']" });
    const r = score('MathVista_MINI', [mv('1', '14', '14'), mv('2', 'steps...\nAnswer: 7', '7'), mv('3', '5', '6')]);
    expect(r.acc.columns).toEqual(['Task&Skill', 'tot', 'prefetch', 'hit', 'prefetch_rate', 'acc', 'needs_judge', 'acc_answer_pattern']);
    // '14' is prefetched and right; '5' (a wrong bare number) and the CoT answer go to the judge
    expect(r.acc.rows[0]).toEqual(['Overall', '3', '1', '1', '33.33333333333333', '33.33333333333333', '2', '66.66666666666666']);
    expect(r.acc.rows.map((x) => x[0])).toEqual(['Overall', 'arithmetic reasoning', 'math word problem']);
    expect(r.needsJudge).toBe(2);
  });
});

describe('report_acc', () => {
  it('one row per split in order of appearance, NaN where a split lacks an ability', () => {
    const t = reportAcc([
      { values: { split: 'dev', category: 'a' }, hit: 1 },
      { values: { split: 'val', category: 'b' }, hit: 0 },
    ]);
    expect(t).toEqual({ columns: ['split', 'Overall', 'a', 'b'], rows: [['dev', '1.0', '1.0', null], ['val', '0.0', null, '0.0']] });
  });
});
