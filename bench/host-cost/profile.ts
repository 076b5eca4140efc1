/**
 * `npm run bench:host-profile [-- --steps N] [--warmup W] [--top K] [--cpuprofile FILE]`: where the
 * main thread's time goes in training steps of the main job's tiny model on WebGPU, by layer of
 * the code. V8's sampling profiler (node:inspector) runs over N steps after W warm-up ones (default 6); each
 * sample's self time is charged to the folder of the function it was in:
 *   kernels/ (our runtime: encoding, bind groups, uniforms), tensor/ (front ends, views, shapes),
 *   autograd/, nn/, llava-uhd/, bench/ (the fixture), the webgpu package's JS, Node internals,
 *   and `native`: time V8 saw outside JavaScript: Dawn's C++ (encoding calls, and queue.submit,
 *   where the GL backend runs the kernels), GC and the idle wait for read-backs.
 * The batches are made before the profiler starts. The same run's measure() split (submit / read-back wait / the rest) is printed beside it, so the
 * table separates our share from Dawn's. Writes bench/results/host-profile.{md,json}.
 */
import { Session } from 'node:inspector/promises';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initWebGPU, shutdown } from '../../kernels/index.js';
import { median } from '../lab/timing.js';
import { trainStepFixture, type HostCost } from './measure.js';
import { takeCount, WARMUP_STEPS } from '../args.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const LAYERS = ['kernels', 'tensor', 'autograd', 'nn', 'llava-uhd', 'backends', 'bench'] as const;

/** The layer a call frame belongs to: a top-level folder of the repo, a package, or native. */
export function layerOf(url: string, functionName: string): string {
  if (url === '') {
    if (functionName === '(garbage collector)') return 'gc';
    if (functionName === '(idle)') return 'idle';
    return 'native';
  }
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (path.includes(`${sep}node_modules${sep}`)) {
    const m = /node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/.exec(path);
    return `package ${m ? m[1] : '?'}`;
  }
  if (path.startsWith('node:')) return 'node internals';
  const rel = relative(ROOT, path).split(sep)[0];
  return (LAYERS as readonly string[]).includes(rel) ? `${rel}/` : `other (${rel})`;
}

const args = process.argv.slice(2);
const STEPS = takeCount(args, '--steps', 4);
/** Steps before the profiled ones (pipelines compile, the pool fills: see bench/args.ts). */
const WARMUP = takeCount(args, '--warmup', WARMUP_STEPS);
const cp = args.indexOf('--cpuprofile');
/** `--cpuprofile FILE`: also write V8's raw profile (opens in Chrome DevTools' Performance panel). */
const CPUPROFILE = cp >= 0 ? args[cp + 1] : null;
if (cp >= 0 && !CPUPROFILE) throw new Error('--cpuprofile: give a file name');
/** `--top K`: how many functions the table lists (default 15). */
const TOP = takeCount(args, '--top', 15);

await initWebGPU();
const load0 = os.loadavg();
const train = await trainStepFixture();
for (let i = 0; i < WARMUP; i++) await train.step(i); // warm: pipelines compile, the pool fills
const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 100 });
// the batches are made first (image resampling, scene rendering: data loading, not host cost per
// dispatch), so the profile holds only the measured steps
const batches = Array.from({ length: STEPS }, (_, i) => train.prepare(WARMUP + i));
await session.post('Profiler.start');
const runs: HostCost[] = [];
for (const b of batches) runs.push(await train.run(b));
const { profile } = (await session.post('Profiler.stop')) as { profile: Profile };
session.disconnect();
if (CPUPROFILE) writeFileSync(CPUPROFILE, JSON.stringify(profile));
train.dispose();
shutdown();
const load1 = os.loadavg();

// self time per node = its samples' time deltas
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
for (let i = 0; i < profile.samples.length; i++) selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
const layers = new Map<string, number>();
const functions = new Map<string, number>();
for (const [id, us] of selfUs) {
  const f = byId.get(id)!.callFrame;
  const layer = layerOf(f.url, f.functionName);
  layers.set(layer, (layers.get(layer) ?? 0) + us);
  const name = `${f.functionName || '(anonymous)'} ${f.url ? `${relative(ROOT, f.url.startsWith('file://') ? fileURLToPath(f.url) : f.url)}` : `(${layer})`}`;
  functions.set(name, (functions.get(name) ?? 0) + us);
}
const totalUs = [...layers.values()].reduce((a, b) => a + b, 0);
const perStep = (us: number) => us / 1e3 / STEPS;
const dispatches = median(runs.map((r) => r.dispatches));
const m = {
  wallMs: median(runs.map((r) => r.wallMs)),
  submitMs: median(runs.map((r) => r.submitMs)),
  waitMs: median(runs.map((r) => r.waitMs)),
  hostMs: median(runs.map((r) => r.hostMs)),
};
const ours = ['kernels/', 'tensor/', 'autograd/', 'nn/', 'llava-uhd/', 'backends/'].reduce((a, l) => a + (layers.get(l) ?? 0), 0);

const lines = [
  '# host-profile',
  '',
  `${new Date().toISOString()} · ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, node ${process.version} · load average ${load0.map((x) => x.toFixed(2)).join(' ')} before, ${load1.map((x) => x.toFixed(2)).join(' ')} after`,
  '',
  `One training step of the main job's tiny model on WebGPU (tiny-demo stage 2, batch 8), ${STEPS} steps after ${WARMUP} warm-up ones, V8's sampling profiler at 100 µs.`,
  `measure() per step (median): wall ${m.wallMs.toFixed(0)} ms = inside queue.submit ${m.submitMs.toFixed(0)} ms (Dawn's GL backend runs the kernels there) + read-back waits ${m.waitMs.toFixed(0)} ms + the rest ${m.hostMs.toFixed(0)} ms; ${dispatches} dispatches.`,
  `Our JavaScript (kernels/ tensor/ autograd/ nn/ llava-uhd/ backends/, self time): ${perStep(ours).toFixed(1)} ms per step = **${((1e3 * perStep(ours)) / dispatches).toFixed(1)} µs per dispatch**.`,
  '',
  '| layer (self time) | ms per step | share |',
  '|---|---:|---:|',
  ...[...layers].sort((a, b) => b[1] - a[1]).map(([l, us]) => `| ${l} | ${perStep(us).toFixed(1)} | ${((100 * us) / totalUs).toFixed(1)}% |`),
  '',
  '`native` is time outside JavaScript: Dawn (its encoding calls and queue.submit, where the kernels run on llvmpipe) and the wait for read-backs.',
  '',
  '| top functions by self time | ms per step |',
  '|---|---:|',
  ...[...functions].sort((a, b) => b[1] - a[1]).slice(0, TOP).map(([f, us]) => `| \`${f}\` | ${perStep(us).toFixed(2)} |`),
  '',
];
const OUT = join(ROOT, 'bench', 'results');
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, 'host-profile.md'), lines.join('\n'));
writeFileSync(
  join(OUT, 'host-profile.json'),
  JSON.stringify({ date: new Date().toISOString(), load: [load0, load1], steps: STEPS, measure: m, dispatches, oursMsPerStep: perStep(ours), oursUsPerDispatch: (1e3 * perStep(ours)) / dispatches, layersMsPerStep: Object.fromEntries([...layers].map(([l, us]) => [l, perStep(us)])), topFunctions: [...functions].sort((a, b) => b[1] - a[1]).slice(0, 30).map(([f, us]) => ({ f, msPerStep: perStep(us) })) }, null, 2),
);
console.log(lines.join('\n'));
