/** The training CLI survives a kill: --resume continues exactly where the run stopped. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
    { name: 'all', trainable: ['vit', 'compressor', 'connector', 'llm'], lr: 2e-3, min_lr: 1e-3, warmup_steps: 1, steps: 7, max_slices: 4, batch_size: 2, pack_length: 1024 },
  ],
};
const recipePath = join(dir, 'recipe.json');
writeFileSync(recipePath, JSON.stringify(recipe));

const cli = (out: string, ...extra: string[]) => ['--import', 'tsx', 'cli/main.ts', 'train', '--recipe', recipePath, '--config', 'tiny', '--out', out, ...extra];

function losses(out: string): { stage: string; step: number; loss: number }[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => 'loss' in m);
}

describe('uhd train', () => {
  it('a killed run resumed with --resume reproduces the uninterrupted losses', async () => {
    const full = join(dir, 'full');
    const r = spawnSync(process.execPath, cli(full), { encoding: 'utf8', timeout: 300_000 });
    expect(r.status, r.stderr).toBe(0);
    const want = losses(full);
    expect(want).toHaveLength(9);

    // kill after stage 2 step 3 (its last checkpoint was at step 2), while it runs
    const cut = join(dir, 'cut');
    const child = spawn(process.execPath, cli(cut), { stdio: 'ignore' });
    await new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        const m = existsSync(join(cut, 'metrics.jsonl')) ? losses(cut) : [];
        if (m.some((x) => x.stage === 'all' && x.step >= 3)) {
          clearInterval(timer);
          child.kill('SIGKILL');
          resolve();
        }
      }, 50);
      child.on('exit', () => {
        clearInterval(timer);
        reject(new Error('the run finished before it could be killed'));
      });
    });
    await new Promise((r2) => child.on('exit', r2));
    const before = losses(cut);
    expect(before.length).toBeLessThan(9);

    const resumed = spawnSync(process.execPath, cli(cut, '--resume'), { encoding: 'utf8', timeout: 300_000 });
    expect(resumed.status, resumed.stderr).toBe(0);
    const after = losses(cut).slice(before.length);
    // the resumed run restarts after the last checkpoint (an even step of stage 2), redoing at
    // most the steps taken since, and then matches the uninterrupted run exactly
    const from = after[0].step;
    expect(after[0].stage).toBe('all');
    expect(from % 2).toBe(1);
    expect(from).toBeLessThanOrEqual(before[before.length - 1].step);
    expect(after.map((m) => [m.stage, m.step, m.loss])).toEqual(want.filter((m) => m.stage === 'all' && m.step >= from).map((m) => [m.stage, m.step, m.loss]));
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
