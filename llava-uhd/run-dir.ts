/**
 * A training run's folder (`uhd train --out DIR`): the files a run writes there, whether a folder
 * already holds one, and the lock that keeps two runs from writing into one folder at once.
 *
 * The lock is `DIR/train.lock`, created exclusively, holding the owner's pid, host, start time
 * and command line. A lock whose pid is dead on this host (or now belongs to another process:
 * the start time in /proc differs) is stale, from a run that was killed, and is taken over. A
 * lock from another host cannot be checked from here; the message says which file to delete.
 */
import { closeSync, existsSync, linkSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const LOCK_FILE = 'train.lock';
export const CHECKPOINT_FILE = 'checkpoint.safetensors';
export const METRICS_FILE = 'metrics.jsonl';
/** The weights at the end of stage i: `stage-<i>-<name>.safetensors`. */
const STAGE_WEIGHTS = /^stage-\d+-.+\.safetensors$/;

/** The files of a run found in `dir` (checkpoint, metrics, stage weights), sorted; empty if none. */
export function runFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f === CHECKPOINT_FILE || f === METRICS_FILE || STAGE_WEIGHTS.test(f)).sort();
}

/** Deletes the run files of `dir` (nothing else in it); returns their names. */
export function clearRun(dir: string): string[] {
  const files = runFiles(dir);
  for (const f of files) rmSync(join(dir, f), { force: true });
  return files;
}

export interface LockOwner {
  pid: number;
  host: string;
  /** ISO time the run started. */
  started: string;
  /** The process start time from /proc (clock ticks since boot), to tell a reused pid apart. */
  procStart?: string;
  argv: string[];
}

/** Whether process `pid` exists (a process of another user counts). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Field 22 of /proc/<pid>/stat: when the process started (Linux only). */
function procStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Why the lock's owner is gone, or null when it may still be running. */
function staleReason(o: LockOwner): string | null {
  if (o.host !== hostname()) return null;
  if (!Number.isInteger(o.pid) || o.pid <= 0) return `it names no valid pid (${JSON.stringify(o.pid)})`;
  if (!alive(o.pid)) return `pid ${o.pid} is not running`;
  if (o.procStart !== undefined) {
    const now = procStart(o.pid);
    if (now !== undefined && now !== o.procStart) return `pid ${o.pid} is now another process`;
  }
  return null;
}

export class RunLockedError extends Error {}

export interface RunLock {
  path: string;
  /** A stale lock that was taken over, described (null when there was none). */
  recovered: string | null;
  release(): void;
}

/** Takes the lock of `dir` (which must exist), or throws RunLockedError naming its owner. */
export function acquireRunLock(dir: string): RunLock {
  const path = join(dir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, host: hostname(), started: new Date().toISOString(), procStart: procStart(process.pid), argv: process.argv.slice(1) };
  const text = JSON.stringify(me, null, 1) + '\n';
  let recovered: string | null = null;
  for (let attempt = 0; attempt < 5; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`train: cannot create the lock ${path}: ${(e as Error).message}`);
      const held = readFileSync(path, 'utf8');
      let owner: LockOwner | null = null;
      try {
        owner = JSON.parse(held) as LockOwner;
      } catch {
        // being written right now, or garbage: a fresh one is left alone, an old one is stale
        if (Date.now() - statSync(path).mtimeMs < 10_000) throw new RunLockedError(`train: ${dir} is being locked by another run right now (${path}); try again`);
      }
      const why = owner ? staleReason(owner) : 'it is unreadable';
      if (!why) {
        const o = owner!;
        const where = o.host === hostname() ? `pid ${o.pid}` : `pid ${o.pid} on host ${o.host}`;
        const hint = o.host === hostname() ? '' : ` If no run is active there, delete ${path}.`;
        throw new RunLockedError(`train: ${dir} is in use by another run (${where}, started ${o.started}: ${o.argv.join(' ')}). Wait for it to finish, or use another --out.${hint}`);
      }
      // take the stale lock over: move it aside, and put it back if it changed in between
      const aside = `${path}.stale-${process.pid}`;
      try {
        renameSync(path, aside);
      } catch {
        continue; // someone else moved it
      }
      if (readFileSync(aside, 'utf8') !== held) {
        try {
          linkSync(aside, path);
        } catch {
          // the folder was locked again meanwhile
        }
        unlinkSync(aside);
        continue;
      }
      unlinkSync(aside);
      recovered = `took over the stale lock ${path} (${why})`;
      continue;
    }
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      process.off('exit', release);
      try {
        if (readFileSync(path, 'utf8') === text) unlinkSync(path);
      } catch {
        // already gone
      }
    };
    // an exit without `release` (an uncaught error, process.exit) still frees the folder
    process.on('exit', release);
    return { path, recovered, release };
  }
  throw new RunLockedError(`train: could not lock ${dir} (${path} keeps changing); is another run starting there?`);
}
