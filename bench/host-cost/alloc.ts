/**
 * `npm run bench:host-alloc [-- --steps N]`: how much JavaScript memory one training step of the
 * main job's tiny model allocates on WebGPU, and where. V8's sampling heap profiler (every 512
 * bytes on average, objects the young and old collections freed included) runs over N steps
 * after three warm-up ones; each allocation is charged to the function that made it, a native
 * one (Array.prototype.map, a Set, an iterator) to its nearest JavaScript caller.
 *
 * Allocation is what the garbage collector pays for (a scavenge whenever the young generation
 * fills), and unlike host time it does not move with the machine's load: it is the number to
 * compare before and after a change. Prints a table; writes bench/results/host-alloc.{md,json}.
 */
import { Session } from 'node:inspector/promises';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initWebGPU, shutdown } from '../../kernels/index.js';
import { trainStepFixture } from './measure.js';
import { takeCount, WARMUP_STEPS } from '../args.js';

interface SamplingNode {
  callFrame: { functionName: string; url: string };
  selfSize: number;
  children: SamplingNode[];
}

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const args = process.argv.slice(2);
const STEPS = takeCount(args, '--steps', 3);
const WARM = WARMUP_STEPS;

/**
 * `name file` of a call frame, the file relative to the repo (packages by name). No line: under
 * tsx V8 sees the transformed code, whose line numbers are not the source's.
 */
function site(f: SamplingNode['callFrame']): string {
  if (!f.url) return `${f.functionName || '(anonymous)'} (native)`;
  const path = f.url.startsWith('file://') ? fileURLToPath(f.url) : f.url;
  const m = /node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/.exec(path);
  const where = m ? `package ${m[1]}` : path.startsWith('node:') ? path : relative(ROOT, path);
  return `${f.functionName || '(anonymous)'} ${where}`;
}

await initWebGPU();
const load0 = os.loadavg();
const train = await trainStepFixture();
const batches = Array.from({ length: WARM + STEPS }, (_, i) => train.prepare(i));
for (let i = 0; i < WARM; i++) await train.run(batches[i]);
const session = new Session();
session.connect();
await session.post('HeapProfiler.enable');
await session.post('HeapProfiler.startSampling', { samplingInterval: 512, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
let dispatches = 0;
for (let i = WARM; i < WARM + STEPS; i++) dispatches += (await train.run(batches[i])).dispatches;
const { profile } = (await session.post('HeapProfiler.stopSampling')) as { profile: { head: SamplingNode } };
session.disconnect();
train.dispose();
shutdown();

const bySite = new Map<string, number>();
let total = 0;
const walk = (n: SamplingNode, caller: string): void => {
  const own = site(n.callFrame);
  const key = n.callFrame.url ? own : `${own} <- ${caller}`;
  if (n.selfSize) bySite.set(key, (bySite.get(key) ?? 0) + n.selfSize);
  total += n.selfSize;
  for (const c of n.children) walk(c, n.callFrame.url ? own : caller);
};
walk(profile.head, '(root)');
const perStep = total / STEPS;
const top = [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 30);
const lines = [
  '# host-alloc',
  '',
  `${new Date().toISOString()} · ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, node ${process.version} · load average ${load0.map((x) => x.toFixed(2)).join(' ')}`,
  '',
  `JavaScript allocation in one training step of the main job's tiny model on WebGPU (tiny-demo stage 2, batch 8), mean of ${STEPS} steps after ${WARM} warm-up ones, V8's sampling heap profiler.`,
  `**${(perStep / 1e6).toFixed(2)} MB per step, ${(total / dispatches / 1e3).toFixed(1)} KB per dispatch** (${(dispatches / STEPS).toFixed(0)} dispatches per step).`,
  '',
  '| allocation site | KB per step |',
  '|---|---:|',
  ...top.map(([k, v]) => `| \`${k}\` | ${(v / STEPS / 1e3).toFixed(0)} |`),
  '',
];
console.log(lines.join('\n'));
const OUT = join(ROOT, 'bench', 'results');
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, 'host-alloc.md'), lines.join('\n'));
writeFileSync(join(OUT, 'host-alloc.json'), JSON.stringify({ date: new Date().toISOString(), load: load0, steps: STEPS, bytesPerStep: perStep, bytesPerDispatch: total / dispatches, dispatchesPerStep: dispatches / STEPS, top: top.map(([site, bytes]) => ({ site, bytesPerStep: bytes / STEPS })) }, null, 2));
