/**
 * `npm run bench:host-calls [-- --steps N] [--warmup W] [--vit]`: where the host time of a training step
 * (or, with --vit, of bench:host's ViT encode) goes, by instrumented timers rather than sampling (which misattributes short native calls).
 * Every Dawn call the runtime makes (setPipeline, setBindGroup, dispatchWorkgroups,
 * createBindGroup, writeBuffer, createBuffer, ...) is wrapped with performance.now(), and so are
 * GpuContext's parts (dispatch, the bind-group lookups, the pool) and every backend op (the
 * kernels' front ends); GC pauses come from a 'gc' PerformanceObserver. The table gives calls and
 * self time per step for each (a call's time less that of the wrapped calls inside it); what is
 * left is the layers above the backends (tensor/, autograd/, nn/, llava-uhd/).
 *
 * The timers add ~0.1 µs per wrapped call (measured, and taken out of `the rest`), so the totals are
 * slightly above bench:host's; the split is what this bench is for. Writes
 * bench/results/host-calls{,-vit}.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { webgpuBackend } from '../../kernels/backend.js';
import { gpuContext, initWebGPU, shutdown } from '../../kernels/index.js';
import { median, speedProbeMs } from '../lab/timing.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { trainStepFixture, vitEncodeFixture, type HostCost } from './measure.js';
import { takeCount, WARMUP_STEPS } from '../args.js';

const args = process.argv.slice(2);
const STEPS = takeCount(args, '--steps', 8);
const WARMUP = takeCount(args, '--warmup', WARMUP_STEPS);
const VIT = args.includes('--vit');

/** ms: time inside the call less the time in wrapped calls made from it (self time). */
interface Counter { calls: number; ms: number; totalMs: number }
const counters = new Map<string, Counter>();
let armed = false;
/** Time spent in wrapped calls nested in the running one, to subtract from its own. */
let nested = 0;

/** Replaces `obj[name]` with a timed wrapper counted under `label` (only while armed). */
function wrap(obj: object, name: string, label: string): void {
  const o = obj as Record<string, unknown>;
  const fn = o[name] as (...a: unknown[]) => unknown;
  if (typeof fn !== 'function') return;
  const counter: Counter = { calls: 0, ms: 0, totalMs: 0 };
  counters.set(label, counter);
  o[name] = function (this: unknown, ...a: unknown[]) {
    if (!armed) return fn.apply(this, a);
    const outer = nested;
    nested = 0;
    const t0 = performance.now();
    try {
      return fn.apply(this, a);
    } finally {
      const total = performance.now() - t0;
      counter.ms += total - nested;
      counter.totalMs += total;
      counter.calls++;
      nested = outer + total;
    }
  };
}

await initWebGPU();
const c = gpuContext();
const device = c.device;
// the pass and encoder prototypes come from live objects
const enc = device.createCommandEncoder();
const pass = enc.beginComputePass();
const passProto = Object.getPrototypeOf(pass);
const encProto = Object.getPrototypeOf(enc);
pass.end();
enc.finish();
for (const m of ['setPipeline', 'setBindGroup', 'dispatchWorkgroups', 'end']) wrap(passProto, m, `pass.${m}`);
for (const m of ['beginComputePass', 'copyBufferToBuffer', 'finish']) wrap(encProto, m, `encoder.${m}`);
for (const m of ['createBindGroup', 'createBuffer', 'createCommandEncoder']) wrap(Object.getPrototypeOf(device), m, `device.${m}`);
wrap(Object.getPrototypeOf(device.queue), 'writeBuffer', 'queue.writeBuffer');
wrap(Object.getPrototypeOf(device.queue), 'submit', 'queue.submit');
wrap(Object.getPrototypeOf(c), 'dispatch', 'GpuContext.dispatch (self)');
for (const m of ['pipeline', 'soloGroup', 'sharedGroup', 'uniformSlot', 'acquireBuffer']) wrap(Object.getPrototypeOf(c), m, `GpuContext.${m}`);
wrap(Object.getPrototypeOf(c), 'releaseBuffer', 'GpuContext.releaseBuffer');
// the front ends (kernels/*.ts) as the tensor layer calls them
for (const [name, v] of Object.entries(webgpuBackend)) if (typeof v === 'function' && name !== 'sync') wrap(webgpuBackend, name, `backend.${name}`);

// the cost of the timer itself: a wrapped no-op
const probe = { f: (x: number) => x };
const bare = { f: (x: number) => x };
wrap(probe, 'f', 'probe');
counters.delete('probe');
/** µs a wrapped call costs more than a bare one, timed from outside (the wrapper's own work included). */
function wrapperOverheadUs(): number {
  const loop = (o: { f: (x: number) => number }) => {
    let best = Infinity;
    for (let rep = 0; rep < 20; rep++) {
      const t0 = performance.now();
      let acc = 0;
      for (let j = 0; j < 10000; j++) acc += o.f(j);
      best = Math.min(best, performance.now() - t0 + (acc < 0 ? 1 : 0));
    }
    return best;
  };
  const was = armed;
  armed = true;
  const wrapped = loop(probe);
  armed = was;
  return ((loop(bare) > wrapped ? 0 : wrapped - loop(bare)) * 1e3) / 10000;
}

/** Every GC pause V8 reports (a 'gc' PerformanceObserver, delivered late), charged to steps by start time. */
const gcPauses: { start: number; ms: number; kind: string }[] = [];
const GC_KINDS: Record<number, string> = { [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor (scavenge)', [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major (mark-compact)', [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental marking', [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak callbacks' };
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcPauses.push({ start: e.startTime, ms: e.duration, kind: GC_KINDS[(e as unknown as { detail: { kind: number } }).detail.kind] ?? 'other' });
});
gcObserver.observe({ entryTypes: ['gc'] });
const load0 = os.loadavg();
const rows: { wall: number; host: number; dispatches: number; per: Map<string, Counter>; window: [number, number] }[] = [];
try {
  // the setting: the training step (default) or, with --vit, bench:host's ViT encode
  const train: { prepare: (i: number) => unknown; run: (batch: never) => Promise<HostCost>; dispose: () => void } = VIT
    ? await vitEncodeFixture(CONFIGS.tiny, 448).then((v) => ({ prepare: () => undefined, run: () => v.encode(), dispose: v.dispose }))
    : await trainStepFixture();
  for (let i = 0; i < WARMUP + STEPS; i++) {
    const batch = train.prepare(i); // untimed, as in bench:host
    for (const k of counters.values()) { k.calls = 0; k.ms = 0; k.totalMs = 0; }
    armed = i >= WARMUP;
    const t0 = performance.now();
    const r = await train.run(batch as never);
    const t1 = performance.now();
    armed = false;
    if (i >= WARMUP) rows.push({ wall: r.wallMs, host: r.hostMs, dispatches: r.dispatches, per: new Map([...counters].map(([k, v]) => [k, { ...v }])), window: [t0, t1] });
  }
  train.dispose();
} finally {
  shutdown();
}
await new Promise((r) => setTimeout(r, 50)); // the last GC entries arrive
gcObserver.disconnect();
for (const row of rows) {
  for (const p of gcPauses) {
    if (p.start < row.window[0] || p.start >= row.window[1]) continue;
    const label = `gc: ${p.kind}`;
    if (!counters.has(label)) counters.set(label, { calls: 0, ms: 0, totalMs: 0 });
    const k = row.per.get(label) ?? { calls: 0, ms: 0, totalMs: 0 };
    k.calls++;
    k.ms += p.ms;
    k.totalMs += p.ms;
    row.per.set(label, k);
  }
}
const load1 = os.loadavg();
const speed = speedProbeMs();
const med = (f: (r: (typeof rows)[number]) => number) => median(rows.map(f));
/** GC pauses are rare and long: their mean per step, not the median (often 0). */
const mean = (f: (r: (typeof rows)[number]) => number) => rows.reduce((s, r) => s + f(r), 0) / rows.length;
const dispatches = med((r) => r.dispatches);
const host = med((r) => r.host);
const out: string[] = [];
out.push(`# host-calls${VIT ? ' (ViT encode)' : ''}\n\n${new Date().toISOString()} · load average ${load0.map((x) => x.toFixed(2)).join(' ')} before, ${load1.map((x) => x.toFixed(2)).join(' ')} after · speed probe ${speed.toFixed(1)} ms (bench/lab/timing.ts) · median of ${STEPS} steps after ${WARMUP} warm-up ones\n`);
out.push(`${VIT ? 'ViT encode' : 'train step'}: ${dispatches} dispatches, host ${host.toFixed(1)} ms (= ${((1e3 * host) / dispatches).toFixed(1)} µs per dispatch), wall ${med((r) => r.wall).toFixed(0)} ms\n`);
out.push('| call | calls per step | self ms per step | self µs per call | self µs per dispatch | µs per call with what it calls |');
out.push('|---|---:|---:|---:|---:|---:|');
for (const label of counters.keys()) {
  const avg = label.startsWith('gc:') ? mean : med;
  const calls = avg((r) => r.per.get(label)?.calls ?? 0);
  const ms = avg((r) => r.per.get(label)?.ms ?? 0);
  const totalMs = avg((r) => r.per.get(label)?.totalMs ?? 0);
  if (calls === 0) continue;
  const perStep = calls.toFixed(label.startsWith('gc:') ? 2 : 0);
  out.push(`| ${label} | ${perStep} | ${ms.toFixed(2)} | ${((1e3 * ms) / calls).toFixed(2)} | ${((1e3 * ms) / dispatches).toFixed(2)} | ${((1e3 * totalMs) / calls).toFixed(2)} |`);
}
let timed = 0;
let wrappedCalls = 0;
for (const label of counters.keys()) if (!label.startsWith('gc:')) wrappedCalls += med((r) => r.per.get(label)?.calls ?? 0);
const overhead = wrapperOverheadUs();
for (const label of counters.keys()) if (label !== 'queue.submit') timed += (label.startsWith('gc:') ? mean : med)((r) => r.per.get(label)?.ms ?? 0);
out.push(`\n${gcPauses.length} GC pauses seen in all (GC rows: mean per step)`);
const wrapMs = (wrappedCalls * overhead) / 1e3;
out.push(`the timers: ${wrappedCalls.toFixed(0)} wrapped calls per step, ${overhead.toFixed(2)} µs each = ${wrapMs.toFixed(1)} ms per step (in the host time above)`);
const rest = host - timed - wrapMs;
out.push(`the rest of host time (tensor/, autograd/, nn/, llava-uhd/ above the backend): ${rest.toFixed(1)} ms per step = ${((1e3 * rest) / dispatches).toFixed(1)} µs per dispatch`);
const text = out.join('\n') + '\n';
const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, VIT ? 'host-calls-vit.md' : 'host-calls.md'), text);
console.log(text);
