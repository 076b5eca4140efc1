import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeSplit, syntheticOptions, ANSWERS } from '../../../llava-uhd/data/synthetic.js';
import { writeVlmevalTsv } from '../../../llava-uhd/eval/export.js';
import { readVlmevalTsv } from '../../../llava-uhd/eval/vlmeval-tsv.js';
import { benchmark } from '../../../llava-uhd/eval/benchmarks.js';
import { runVlmeval, scorePredictionsFile, selectRows } from '../../../llava-uhd/eval/run.js';
import { readTable } from '../../../llava-uhd/eval/table.js';
import { fakeAnswer, tempDir } from './helpers.js';

const dir = tempDir('run');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** n synthetic stripes questions as a multiple-choice TSV. */
async function synthetic(name: string, n: number, form: 'mcq' | 'open' = 'mcq'): Promise<string> {
  const split = makeSplit('test', n, syntheticOptions('tiny', { types: ['stripes'] }));
  const path = join(dir, name);
  await writeVlmevalTsv(path, [...split].map((s) => ({ image: s.image, question: s.question, answer: s.answer, type: s.type, classes: ANSWERS[s.type] })), form);
  return path;
}

describe('running a benchmark', () => {
  it('writes the predictions (input columns without image, then prediction) and the acc table; scoring reads its own file back', async () => {
    const data = await synthetic('syn.tsv', 6);
    const out = join(dir, 'plain');
    const r = await runVlmeval({ data, outDir: out, answer: async (b) => b.map(() => 'Answer: A'), benchmark: 'MMStar' });
    expect(r.name).toBe('uhd_syn');
    const t = await readTable(r.predictionsPath);
    expect(t.columns).toEqual(['index', 'question', 'A', 'B', 'C', 'D', 'answer', 'category', 'prediction']);
    expect(t.rows.map((x) => x[0])).toEqual(['0', '1', '2', '3', '4', '5']);
    const truth = t.rows.map((x) => x[6]);
    expect(r.score!.overall.value).toBeCloseTo((100 * truth.filter((a) => a === 'A').length) / 6, 10);
    expect(existsSync(join(out, 'uhd_syn_acc.csv'))).toBe(true);
    // scoring the file again from disk (as VLMEvalKit would) gives the same table
    const again = await scorePredictionsFile(r.predictionsPath, 'MMStar', join(dir, 'rescore'));
    expect(again.score.acc).toEqual(r.score!.acc);
  });

  it('--limit and --shuffle pick a seeded subset; MMBench keeps each question with its rotations', async () => {
    const data = await synthetic('pick.tsv', 12);
    const ds = await readVlmevalTsv(data);
    const a = selectRows(ds, benchmark('custom_mcq'), { limit: 4, shuffle: true, seed: 5 }).map((r) => r.index);
    expect(a).toHaveLength(4);
    expect(selectRows(ds, benchmark('custom_mcq'), { limit: 4, shuffle: true, seed: 5 }).map((r) => r.index)).toEqual(a);
    expect(selectRows(ds, benchmark('custom_mcq'), { limit: 4, shuffle: true, seed: 6 }).map((r) => r.index)).not.toEqual(a);
    expect(selectRows(ds, benchmark('custom_mcq'), { limit: 3 }).map((r) => r.index)).toEqual(['0', '1', '2']);
    // rotations: 1000000 + k belongs to question k
    const rot = { ...ds, rows: [...ds.rows.slice(0, 3), ...ds.rows.slice(0, 3).map((r) => ({ ...r, index: String(1_000_000 + Number(r.index)), values: { ...r.values, g_index: null } }))] };
    expect(selectRows(rot, benchmark('MMBench_DEV_EN_V11'), { limit: 2 }).map((r) => r.index)).toEqual(['0', '1000000', '1', '1000001']);
  });

  it('an interrupted run resumes: the same files as an uninterrupted one, up-scaling draws replayed', async () => {
    const data = await synthetic('resume.tsv', 7);
    const whole = await runVlmeval({ data, outDir: join(dir, 'whole'), answer: fakeAnswer(), benchmark: 'MMStar', batchSize: 2 });
    const part = join(dir, 'part');
    const first = await runVlmeval({ data, outDir: part, answer: fakeAnswer(), benchmark: 'MMStar', batchSize: 2, stopAfter: 3 });
    expect([first.stopped, first.answered]).toEqual([true, 3]);
    const second = await runVlmeval({ data, outDir: part, answer: fakeAnswer(), benchmark: 'MMStar', batchSize: 2 });
    expect([second.fromCache, second.answered]).toEqual([3, 4]);
    expect(readFileSync(second.predictionsPath, 'utf8')).toBe(readFileSync(whole.predictionsPath, 'utf8'));
    // MMStar up-scales: the images the stand-in saw are larger than the TSV's and differ row to row
    const sizes = (await readTable(whole.predictionsPath)).rows.map((r) => r.at(-1)!.split(' ')[0]);
    expect(new Set(sizes).size).toBeGreaterThan(1);
    // a resume with other settings is refused
    await expect(runVlmeval({ data, outDir: part, answer: fakeAnswer(), benchmark: 'MMStar', settings: { maxNewTokens: 5 } })).rejects.toThrow(/made by another evaluation/);
  });

  it('a cache line cut by a kill is dropped and recomputed', async () => {
    const data = await synthetic('cut.tsv', 4);
    const whole = await runVlmeval({ data, outDir: join(dir, 'cut-whole'), answer: fakeAnswer(), benchmark: 'custom_mcq' });
    const part = join(dir, 'cut');
    const r = await runVlmeval({ data, outDir: part, answer: fakeAnswer(), benchmark: 'custom_mcq', stopAfter: 2 });
    appendFileSync(r.files[0], '{"index": "2", "predic');
    const done = await runVlmeval({ data, outDir: part, answer: fakeAnswer(), benchmark: 'custom_mcq' });
    expect(done.answered).toBe(2);
    expect(readFileSync(done.predictionsPath, 'utf8')).toBe(readFileSync(whole.predictionsPath, 'utf8'));
    writeFileSync(r.files[0], 'garbage\n{"x": 1}\n');
    await expect(runVlmeval({ data, outDir: part, answer: fakeAnswer(), benchmark: 'custom_mcq' })).rejects.toThrow(/made by another evaluation|not a cache line/);
  });

  it('resume after killing the process mid-run gives the predictions file of an uninterrupted run', async () => {
    const data = await synthetic('kill.tsv', 8);
    const child = join(import.meta.dirname, 'fixtures', 'run-child.ts');
    const run = (out: string) => spawn(process.execPath, ['--import', 'tsx', child, data, out, 'MMStar', '150'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const finish = (p: ReturnType<typeof run>) => new Promise<number | null>((res) => p.on('exit', (code) => res(code)));
    const out = join(dir, 'killed');
    const cache = join(out, 'uhd_kill_cache.jsonl');
    const p = run(out);
    let err = '';
    p.stderr!.on('data', (d) => (err += String(d)));
    // kill once at least 2 predictions (of 8) are in the cache
    await new Promise<void>((res, rej) => {
      const t = setInterval(() => {
        if (existsSync(cache) && readFileSync(cache, 'utf8').split('\n').length - 2 >= 2) {
          clearInterval(t);
          p.kill('SIGKILL');
          res();
        }
        if (p.exitCode !== null) {
          clearInterval(t);
          rej(new Error(`the child ended before it was killed: ${err}`));
        }
      }, 20);
    });
    await finish(p);
    const partial = readFileSync(cache, 'utf8').split('\n').length - 2;
    expect(partial).toBeGreaterThanOrEqual(2);
    expect(partial).toBeLessThan(8);
    expect(existsSync(join(out, 'uhd_kill.tsv'))).toBe(false);
    expect(await finish(run(out))).toBe(0);
    const whole = join(dir, 'unkilled');
    expect(await finish(run(whole))).toBe(0);
    expect(readFileSync(join(out, 'uhd_kill.tsv'), 'utf8')).toBe(readFileSync(join(whole, 'uhd_kill.tsv'), 'utf8'));
    expect(readFileSync(join(out, 'uhd_kill_acc.csv'), 'utf8')).toBe(readFileSync(join(whole, 'uhd_kill_acc.csv'), 'utf8'));
  }, 120_000);

  it('bad input is refused before anything runs: no options for a multiple-choice benchmark, names the row', async () => {
    const data = await synthetic('open.tsv', 2, 'open');
    await expect(runVlmeval({ data, outDir: join(dir, 'bad'), answer: fakeAnswer(), benchmark: 'MMStar' })).rejects.toThrow(/row index 0: 0 options .* MMStar is multiple choice/);
  });
});
