/**
 * The training CLI survives a kill: --resume continues exactly where the run stopped; a second
 * run on the same folder is refused while the first holds its lock, and a killed run's lock and
 * temp files are cleaned up by the next start; Ctrl-C saves a checkpoint and exits 130, a second
 * Ctrl-C quits at once; a folder holding a run is not overwritten without --resume or --fresh.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'uhd-cli-train-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const recipe = {
  name: 'kill-test',
  data: { kind: 'synthetic', preset: 'tiny', train: 64, val: 0, test: 0 },
  checkpoint_every: 2,
  seed: 3,
  stages: [
    { name: 'align', trainable: ['compressor', 'connector'], lr: 2e-3, min_lr: 1e-3, warmup_steps: 1, steps: 2, max_slices: 1, batch_size: 2 },
    { name: 'all', trainable: ['vit', 'compressor', 'connector', 'llm'], lr: 2e-3, min_lr: 1e-3, warmup_steps: 1, steps: 27, max_slices: 4, batch_size: 2, pack_length: 1024 },
  ],
};
const recipePath = join(dir, 'recipe.json');
writeFileSync(recipePath, JSON.stringify(recipe));

const cli = (out: string, ...extra: string[]) => ['--import', 'tsx', 'cli/main.ts', 'train', '--recipe', recipePath, '--config', 'tiny', '--out', out, ...extra];

/** The logged losses; while the run is writing, only its complete (newline-ended) lines. */
function losses(out: string): { stage: string; step: number; loss: number }[] {
  const text = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  return complete.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l)).filter((m) => 'loss' in m);
}

/** Resolves once the run writing `out` has logged stage 'all' step >= `step` (rejects if it exits first). */
function reachStep(child: ChildProcess, out: string, step: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onExit = () => {
      clearInterval(timer);
      reject(new Error('the run finished before it could be interrupted'));
    };
    const timer = setInterval(() => {
      const m = existsSync(join(out, 'metrics.jsonl')) ? losses(out) : [];
      if (m.some((x) => x.stage === 'all' && x.step >= step)) {
        clearInterval(timer);
        child.off('exit', onExit);
        resolve();
      }
    }, 25);
    child.on('exit', onExit);
  });
}

const exited = (child: ChildProcess) => new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));

let want: { stage: string; step: number; loss: number }[] = [];

describe('uhd train', () => {
  it('a killed run resumed with --resume reproduces the uninterrupted losses; its lock and temp files are cleaned up', async () => {
    const full = join(dir, 'full');
    const r = spawnSync(process.execPath, cli(full), { encoding: 'utf8', timeout: 300_000 });
    expect(r.status, r.stderr).toBe(0);
    want = losses(full);
    expect(want).toHaveLength(29);

    // kill after stage 2 step 3 (its last checkpoint was at step 2), while it runs
    const cut = join(dir, 'cut');
    const child = spawn(process.execPath, cli(cut), { stdio: 'ignore' });
    const done = exited(child);
    await reachStep(child, cut, 1);
    // meanwhile a second run on the same folder is refused, naming the owner
    const second = spawnSync(process.execPath, cli(cut, '--resume'), { encoding: 'utf8', timeout: 120_000 });
    expect(second.status).toBe(1);
    expect(second.stderr).toContain(`is in use by another run (pid ${child.pid}`);
    await reachStep(child, cut, 3);
    child.kill('SIGKILL');
    await done;
    const before = losses(cut);
    expect(before.length).toBeLessThan(29);
    // what a save killed midway leaves (ours by name), and a file that is not ours
    writeFileSync(join(cut, 'checkpoint.safetensors.tmp-4194300-0123456789ab'), 'partial');
    writeFileSync(join(cut, 'notes.tmp-1'), 'mine');

    const resumed = spawnSync(process.execPath, cli(cut, '--resume'), { encoding: 'utf8', timeout: 300_000 });
    expect(resumed.status, resumed.stderr).toBe(0);
    expect(resumed.stderr).toContain(`took over the stale lock ${join(cut, 'train.lock')} (pid ${child.pid} is not running)`);
    // the planted temp file, and the killed run's own when the kill fell inside a save (likely on a fast backend)
    expect(resumed.stderr).toMatch(/removed (1 temp file|2 temp files) of an interrupted save: (.*, )?checkpoint\.safetensors\.tmp-4194300-0123456789ab/);
    expect(readdirSync(cut).sort()).toEqual(['checkpoint.safetensors', 'curves.svg', 'metrics.jsonl', 'notes.tmp-1', 'stage-0-align.safetensors', 'stage-1-all.safetensors']);
    const after = losses(cut).slice(before.length);
    // the resumed run restarts after the last checkpoint (an even step of stage 2), redoing at
    // most the steps taken since (none when the kill fell just after a checkpoint), skipping
    // none, and then matches the uninterrupted run exactly
    const from = after[0].step;
    expect(after[0].stage).toBe('all');
    expect(from % 2).toBe(1);
    expect(from).toBeLessThanOrEqual(before[before.length - 1].step + 1);
    expect(after.map((m) => [m.stage, m.step, m.loss])).toEqual(want.filter((m) => m.stage === 'all' && m.step >= from).map((m) => [m.stage, m.step, m.loss]));
  });

  it('Ctrl-C saves a checkpoint at the step boundary and exits 130; --resume then matches the uninterrupted run', async () => {
    const out = join(dir, 'sigint');
    const child = spawn(process.execPath, cli(out), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b));
    const done = exited(child);
    await reachStep(child, out, 3);
    child.kill('SIGINT');
    const { code, signal } = await done;
    expect({ code, signal }, stderr).toEqual({ code: 130, signal: null });
    const before = losses(out);
    const last = before[before.length - 1];
    expect(last.stage).toBe('all');
    expect(stderr).toContain(`interrupted: checkpoint ${join(out, 'checkpoint.safetensors')} (stage 2, step ${last.step})`);
    expect(existsSync(join(out, 'train.lock'))).toBe(false);
    const resumed = spawnSync(process.execPath, cli(out, '--resume'), { encoding: 'utf8', timeout: 300_000 });
    expect(resumed.status, resumed.stderr).toBe(0);
    // nothing is redone: the run continues at the step after the interrupt, exactly as the full run
    expect(losses(out).map((m) => [m.stage, m.step, m.loss])).toEqual(want.map((m) => [m.stage, m.step, m.loss]));
  });

  it('a second Ctrl-C quits at once, and a folder holding a run is refused without --resume or --fresh', async () => {
    const out = join(dir, 'sigint2');
    const child = spawn(process.execPath, cli(out), { stdio: 'ignore' });
    const done = exited(child);
    await reachStep(child, out, 1);
    child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGINT');
    const t0 = Date.now();
    const { code, signal } = await done;
    expect(code === 130 || signal === 'SIGINT', `exit ${code} ${signal}`).toBe(true);
    expect(Date.now() - t0).toBeLessThan(10_000);

    const again = spawnSync(process.execPath, cli(join(dir, 'full')), { encoding: 'utf8', timeout: 120_000 });
    expect(again.status).toBe(1);
    expect(again.stderr).toContain(`train: ${join(dir, 'full')} already holds a run (checkpoint.safetensors, metrics.jsonl, stage-0-align.safetensors, stage-1-all.safetensors). Continue it with --resume, or start afresh with --fresh`);
    expect(losses(join(dir, 'full'))).toHaveLength(29);
  });

  it('a bad recipe fails before training, naming the field', () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ ...recipe, stages: [{ ...recipe.stages[0], trainable: ['vit', 'nose'] }] }));
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'train', '--recipe', bad, '--out', join(dir, 'bad')], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("stages[0].trainable[1] 'nose' is not a module");
    const missing = spawnSync(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'train', '--recipe', join(dir, 'nope.json')], { encoding: 'utf8', timeout: 60_000 });
    expect(missing.stderr).toContain("recipe: '");
  });
});
