/**
 * A process that used WebGPU exits cleanly: `uhd info` 20 times with exit code 0 every time and
 * none of Dawn's limit notices on stderr, and a garbage collection right after `shutdown()`
 * (which used to free the Dawn instance under a pending poll: SIGSEGV / SIGABRT) is harmless.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'uhd-exit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], command = process.execPath): Promise<Run> {
  return new Promise((done, fail) => {
    // a use-after-free can also deadlock: a run that takes over 60 s counts as a failure
    const child = spawn(command, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b));
    child.stderr.on('data', (b: Buffer) => (stderr += b));
    child.on('error', fail);
    child.on('close', (code, signal) => done({ code, signal, stdout, stderr }));
  });
}

/** Runs `n` commands, `parallel` at a time. */
async function runMany(n: number, parallel: number, args: string[], command?: string): Promise<Run[]> {
  const out: Run[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < n) {
      next++;
      out.push(await run(args, command));
    }
  }));
  return out;
}

describe('exit after WebGPU work', () => {
  it('`uhd info` exits 0 twenty times out of twenty, without Dawn limit notices', async () => {
    // stderr through a pipe (bash process substitution), as in `uhd info 2>&1 | less`: spawn()'s own
    // stdio are sockets, which the notice filter cannot reopen (see kernels/device.ts)
    const runs = await runMany(20, 4, ['-c', `exec ${JSON.stringify(process.execPath)} --import tsx cli/main.ts info 2> >(cat >&2)`], 'bash');
    const bad = runs.filter((r) => r.code !== 0);
    expect(bad.map((r) => `exit ${r.code} signal ${r.signal}: ${r.stderr.slice(-300)}`)).toEqual([]);
    for (const r of runs) {
      expect(r.stdout).toContain('backend:');
      expect(r.stderr).not.toContain('artificially reduced');
    }
  }, 180_000);

  it('a garbage collection after shutdown() does not crash or hang the process', async () => {
    // before the fix this failed almost every time (SIGSEGV, SIGABRT or a deadlock): the GC freed
    // the Dawn instance while dawn.node still polled it
    const script = join(dir, 'gc-after-shutdown.mts');
    writeFileSync(script, [
      `import { initWebGPU, shutdown } from ${JSON.stringify(join(root, 'kernels', 'index.ts'))};`,
      'const info = await initWebGPU();',
      'console.log(info.backend.length > 0);',
      'shutdown();',
      '(globalThis as { gc?: () => void }).gc!();',
      'for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));',
      "console.log('exited cleanly');",
    ].join('\n'));
    const runs = await runMany(4, 2, ['--expose-gc', '--import', 'tsx', script]);
    expect(runs.map((r) => `exit ${r.code} signal ${r.signal}`)).toEqual(Array(4).fill('exit 0 signal null'));
    for (const r of runs) {
      expect(r.stdout).toBe('true\nexited cleanly\n');
      expect(r.stderr.split('\n').filter((l) => l && !l.includes('artificially reduced'))).toEqual([]);
    }
  }, 120_000);
});
