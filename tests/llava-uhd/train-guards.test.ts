/**
 * What a training run guards against: non-finite steps and checkpoints, resuming another run,
 * overwriting a run, interrupts, bad samples, temp files of killed saves.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { generateSample } from '../../llava-uhd/data/synthetic.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { ByteTokenizer } from '../../llava-uhd/tokenizer.js';
import { train, TrainingDivergedError, type Dataset, type Recipe, type Sample, type TrainOptions } from '../../llava-uhd/train.js';
import { findNonFinite } from '../../nn/checkpoint.js';
import { loadSafetensors, readSafetensorsHeader } from '../../nn/safetensors.js';
import * as uhd from '../../tensor/index.js';
import { useDevice } from '../support.js';

// the training loop's guards do not depend on the backend: they run on wasm, the fast one here
const DEVICE = 'wasm' as const;
useDevice(DEVICE);

const dir = mkdtempSync(join(tmpdir(), 'uhd-train-guards-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let runs = 0;
const newDir = () => join(dir, `run-${runs++}`);

const tok = new ByteTokenizer();
const proto = generateSample(0, 'train');
const COLOURS = ['red', 'green', 'blue', 'white'];
/** Samples that differ in their answer (the image does not matter here); `answers` overrides some. */
const toy = (n: number, answers: Record<number, string> = {}): Dataset => ({
  size: n,
  get: (i: number): Sample => {
    const answer = answers[i] ?? COLOURS[i % 4];
    return { ...proto, turns: [{ role: 'user', content: '<image>\nColour?' }, { role: 'assistant', content: answer }], answer, type: 'colour' };
  },
});

const stage = { name: 'only', trainable: ['connector', 'llm'], lr: 5e-3, min_lr: 1e-3, warmup_steps: 1, steps: 8, max_slices: 1, batch_size: 2 } as Recipe['stages'][0];
const recipe = (over: Partial<Recipe> = {}): Recipe => ({ name: 'guards', seed: 1, checkpoint_every: 2, stages: [stage], ...over });
const model = () => {
  uhd.manualSeed(0);
  return new LlavaUHD(structuredClone(CONFIGS.tiny), { device: DEVICE });
};
const metrics = (out: string) => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
const run = (m: LlavaUHD, r: Recipe, o: Partial<TrainOptions> & { outDir: string }) => train(m, tok, r, { device: DEVICE, train: toy(16), ...o });

/** Overwrites one LLM weight with NaN, as an overflow in the data or a diverging update would. */
function poison(m: LlavaUHD): void {
  const w = m.llm.model.layers[0].mlp.down_proj.weight;
  ag.noGrad(() => uhd.assign(w, uhd.full(w.shape, NaN, { device: w.device })));
}

describe('non-finite steps', () => {
  it('a NaN loss skips the step (no update), and N in a row stop the run naming the last good checkpoint', async () => {
    const out = newDir();
    const m = model();
    const notices: string[] = [];
    const p = run(m, recipe({ checkpoint_every: 4, non_finite: { max_consecutive: 2 } }), {
      outDir: out,
      events: { step: (s) => s.step === 5 && poison(m), notice: (x) => notices.push(x) },
    });
    await expect(p).rejects.toThrow(TrainingDivergedError);
    await expect(p).rejects.toThrow(
      `train: stage 'only' step 7: non-finite loss NaN, gradient norm NaN; stopping: 2 such steps in a row (non_finite.max_consecutive 2). Skipped steps update no weights; the last good checkpoint is ${join(out, 'checkpoint.safetensors')} (stage 1 'only', step 4; continue from it with --resume)`,
    );
    const lines = metrics(out).filter((l) => 'step' in l);
    expect(lines.map((l) => [l.step, l.skipped ?? null])).toEqual([[1, null], [2, null], [3, null], [4, null], [5, null], [6, 'non-finite loss NaN, gradient norm NaN'], [7, 'non-finite loss NaN, gradient norm NaN']]);
    expect(notices).toContain("stage 'only' step 6: non-finite loss NaN, gradient norm NaN; the step was skipped (1 so far)");
    // the checkpoint is the one of step 4, and finite
    const header = await readSafetensorsHeader(join(out, 'checkpoint.safetensors'));
    expect(JSON.parse(header.metadata.extra!)).toMatchObject({ stage: 0, step: 4 });
    const saved = await loadSafetensors(join(out, 'checkpoint.safetensors'));
    expect(await findNonFinite(saved)).toBeNull();
    expect(existsSync(join(out, 'train.lock'))).toBe(false);
  });

  it("a checkpoint with a NaN weight is never written; 'stop' stops at the first non-finite step", async () => {
    const out = newDir();
    const m = model();
    // poisoned after step 3: step 4 is skipped, and its checkpoint would hold the NaN
    await expect(run(m, recipe(), { outDir: out, events: { step: (s) => s.step === 3 && poison(m) } })).rejects.toThrow(
      `train: stage 'only' step 4: not saving the checkpoint: model.llm.model.layers.0.mlp.down_proj.weight holds NaN (element 0); the last good checkpoint is ${join(out, 'checkpoint.safetensors')} (stage 1 'only', step 2;`,
    );
    const header = await readSafetensorsHeader(join(out, 'checkpoint.safetensors'));
    expect(JSON.parse(header.metadata.extra!)).toMatchObject({ stage: 0, step: 2 });
    expect(readdirSync(out).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const m2 = model();
    await expect(run(m2, recipe({ non_finite: { action: 'stop' } }), { outDir: newDir(), events: { step: (s) => s.step === 1 && poison(m2) } })).rejects.toThrow(
      "step 2: non-finite loss NaN, gradient norm NaN; stopping: non_finite.action is 'stop'",
    );
  });

  it('a learning rate far too high is caught, not trained through', async () => {
    const out = newDir();
    const r = recipe({ stages: [{ ...stage, lr: 1e30, min_lr: 1e30, steps: 30 }], checkpoint_every: 0, non_finite: { max_consecutive: 1 } });
    await expect(run(model(), r, { outDir: out })).rejects.toThrow(/non-finite .*stopping: 1 such steps in a row.*no checkpoint was written by this run/);
    expect(metrics(out).every((l) => l.skipped !== undefined || Number.isFinite(l.loss))).toBe(true);
  });
});

describe('resume', () => {
  it('refuses a checkpoint of another recipe, config or data, saying what differs; --force-resume goes on', async () => {
    const out = newDir();
    expect((await run(model(), recipe(), { outDir: out, stopAfter: 3, dataId: 'set A' })).stopped).toBe(true);
    const again = (r: Recipe, o: Partial<TrainOptions> = {}) => run(model(), r, { outDir: out, resume: true, dataId: 'set A', ...o });
    await expect(again(recipe({ seed: 2 }))).rejects.toThrow('seed: 1 in the checkpoint, 2 now (another data order)');
    await expect(again(recipe({ stages: [{ ...stage, lr: 1e-3 }] }))).rejects.toThrow('stages[0].lr: 0.005 in the checkpoint, 0.001 now');
    await expect(again(recipe(), { dataId: 'set B' })).rejects.toThrow('the data differs: "set A" in the checkpoint, "set B" now');
    const other = structuredClone(CONFIGS.tiny);
    other.insert_layer_id = 2;
    await expect(train(new LlavaUHD(other, { device: DEVICE }), tok, recipe(), { device: DEVICE, train: toy(16), outDir: out, resume: true, dataId: 'set A' })).rejects.toThrow('the model config differs');
    await expect(again(recipe({ seed: 2 }))).rejects.toThrow('or pass --force-resume to continue anyway');
    // a recipe too short for the checkpoint is an error, forced or not
    await expect(again(recipe({ stages: [{ ...stage, steps: 2 }] }), { forceResume: true })).rejects.toThrow("was taken at stage 1 ('only') step 2, but this recipe's stage 1 has 2 steps: this recipe is too short to continue it");
    const notices: string[] = [];
    const r = await again(recipe({ seed: 2 }), { forceResume: true, events: { notice: (m) => notices.push(m) } });
    expect(r.finalLoss).toHaveLength(1);
    expect(notices.some((n) => n.startsWith('resuming despite: seed: 1 in the checkpoint, 2 now'))).toBe(true);
    // resuming a complete run does nothing, and says so
    const done = await again(recipe({ seed: 2 }));
    expect(done.alreadyComplete).toBe(true);
    expect(metrics(out).filter((l) => 'step' in l && !('val_loss' in l)).map((l) => l.step)).toEqual([1, 2, 3, 3, 4, 5, 6, 7, 8]);
  });

  it('a folder holding a run is refused without resume; fresh deletes its files first', async () => {
    const out = newDir();
    await run(model(), recipe({ stages: [{ ...stage, steps: 2 }] }), { outDir: out });
    writeFileSync(join(out, 'notes.txt'), 'mine');
    await expect(run(model(), recipe(), { outDir: out })).rejects.toThrow(
      `train: ${out} already holds a run (checkpoint.safetensors, metrics.jsonl, stage-0-only.safetensors). Continue it with --resume, or start afresh with --fresh (which deletes those files)`,
    );
    await expect(run(model(), recipe(), { outDir: out, fresh: true, resume: true })).rejects.toThrow('resume and fresh exclude each other');
    await run(model(), recipe({ stages: [{ ...stage, steps: 3 }] }), { outDir: out, fresh: true });
    expect(metrics(out).filter((l) => 'step' in l).map((l) => l.step)).toEqual([1, 2, 3]);
    expect(readFileSync(join(out, 'notes.txt'), 'utf8')).toBe('mine');
  });

  it('an interrupt (AbortSignal) saves a checkpoint at the step boundary; resuming continues after it', async () => {
    const out = newDir();
    const stop = new AbortController();
    const r = await run(model(), recipe({ checkpoint_every: 0 }), { outDir: out, signal: stop.signal, events: { step: (s) => s.step === 3 && stop.abort() } });
    expect(r.interrupted).toBe(true);
    expect(r.checkpoint).toEqual({ path: join(out, 'checkpoint.safetensors'), stage: 0, step: 3 });
    const resumed = await run(model(), recipe({ checkpoint_every: 0 }), { outDir: out, resume: true });
    expect(resumed.interrupted).toBe(false);
    expect(metrics(out).filter((l) => 'step' in l).map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it("temp files of a killed save are removed at the next start (only ours), and another run's lock is respected", async () => {
    const out = newDir();
    await run(model(), recipe({ stages: [{ ...stage, steps: 1 }] }), { outDir: out });
    const stale = ['checkpoint.safetensors.tmp-999999-0123456789ab', 'stage-0-only.safetensors.tmp-12-abcdefabcdef'];
    for (const f of [...stale, 'data.tmp-3', 'model.safetensors.tmp-12-xyz']) writeFileSync(join(out, f), 'x');
    const notices: string[] = [];
    await run(model(), recipe({ stages: [{ ...stage, steps: 1 }] }), { outDir: out, fresh: true, events: { notice: (m) => notices.push(m) } });
    expect(notices[0]).toBe(`removed 2 temp files of an interrupted save: ${stale.join(', ')}`);
    expect(readdirSync(out).sort()).toEqual(['checkpoint.safetensors', 'curves.svg', 'data.tmp-3', 'metrics.jsonl', 'model.safetensors.tmp-12-xyz', 'stage-0-only.safetensors']);
    // a live owner (this very process, as another run would be) keeps the folder
    writeFileSync(join(out, 'train.lock'), JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), started: 'then', argv: ['uhd', 'train'] }));
    await expect(run(model(), recipe(), { outDir: out, resume: true })).rejects.toThrow(`is in use by another run (pid ${process.pid}, started then: uhd train)`);
    rmSync(join(out, 'train.lock'));
  });
});

describe('bad samples', () => {
  const answers = { 1: 'bad \ud800 text', 3: 'x'.repeat(1_000_000), 5: 'y'.repeat(700) };
  const two = (): Recipe => recipe({ checkpoint_every: 0, stages: [{ ...stage, steps: 4 }, { ...stage, name: 'packed', steps: 4, pack_length: 600 }] });

  it('are reported with their line and left out of their batch, never a crash; a resumed run skips them again', async () => {
    const out = newDir();
    const notices: string[] = [];
    const rss = process.memoryUsage().rss;
    const opts = { device: DEVICE, outDir: out, train: toy(8, answers), describeSample: (i: number) => `data.jsonl:${i + 1}`, events: { notice: (m: string) => notices.push(m) } };
    const r = await train(model(), tok, { ...two(), checkpoint_every: 1 }, { ...opts, stopAfter: 6 });
    expect(r.stopped).toBe(true);
    // the million-character answer took no gigabytes: it was refused before any tensor was made
    expect(process.memoryUsage().rss - rss).toBeLessThan(1 << 30);
    const resumed = await train(model(), tok, { ...two(), checkpoint_every: 1 }, { ...opts, resume: true });
    expect(resumed.finalLoss).toHaveLength(1); // stage 2, the one this call finished
    expect(resumed.finalLoss.every(Number.isFinite)).toBe(true);
    // stage 2's four steps of two draw all eight samples once, across the two calls
    expect([...new Set([...r.badSamples, ...resumed.badSamples])].sort()).toEqual([
      'data.jsonl:2: conversations[1] (assistant) holds a lone surrogate U+D800 at character 4: not valid Unicode text',
      expect.stringMatching(/^data\.jsonl:4: 1000\d{3} tokens \(\d+ of them visual\), over stage 'only''s limit of 8192 \(the default max_sample_tokens\)$/),
      expect.stringMatching(/^data\.jsonl:6: \d+ tokens \(\d+ of them visual\), over stage 'packed''s limit of 600 \(pack_length\)$/),
    ]);
    expect(notices.filter((n) => n.startsWith('skipped data.jsonl:6'))).toHaveLength(1);
    expect(metrics(out).filter((l) => 'bad_sample' in l).length).toBeGreaterThanOrEqual(3);
  });

  it("on_bad_sample 'fail' refuses to start, listing them", async () => {
    const out = newDir();
    await expect(train(model(), tok, { ...two(), on_bad_sample: 'fail' }, { device: DEVICE, outDir: out, train: toy(8, answers), describeSample: (i) => `data.jsonl:${i + 1}` })).rejects.toThrow(
      /^train: bad training samples \(on_bad_sample 'fail'; the first 3\):\n {2}data\.jsonl:2: conversations\[1\] \(assistant\) holds a lone surrogate U\+D800[^\n]*\n {2}data\.jsonl:4: \d+ tokens[^\n]*\n {2}data\.jsonl:6: \d+ tokens[^\n]*limit of 600 \(pack_length\)$/,
    );
    expect(existsSync(join(out, 'metrics.jsonl'))).toBe(false);
  });
});
