/**
 * All cores on one shared memory: the main thread and `threads - 1` worker_threads, each with
 * its own instance of every kernel module (instances are per thread; the memory is one).
 *
 * A kernel call is a job: a kernel, an argument block in the memory, and `n` work items
 * (matmul tiles, attention (head, query block) pairs, rows, element chunks) handed out in
 * chunks from an atomic counter. The main thread announces the job, works on it itself, and
 * waits only for the workers that joined before it ran out of items, so a sleeping or
 * descheduled worker never delays an op, and small ops run on the main thread alone. Ops are
 * synchronous: when a kernel call returns its output is written (hence synchronous read-back).
 *
 * The job word packs (sequence << 16) | closed << 15 | joined: a worker joins by
 * compare-and-swap while the job is open; the main thread closes it when the items are gone.
 * Workers start on the first parallel job (a process that only opens the backend, such as
 * `uhd info`, starts none), are unref'd (Node exits without a shutdown), and `close()` ends them.
 */
import { availableParallelism } from 'node:os';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { encodeModule, type ModuleSpec } from './emit.js';
import type { WasmHeap } from './memory.js';

const JOB = 0;
const DONE = 1;
const KERNEL = 2;
const ARGS = 3;
const ITEMS = 4;
const CHUNK = 5;
const NEXT = 6;
const QUIT = 7;
const FAILED = 8;
const CLOSED = 0x8000;

/** Each thread's scratch (packed matmul panels, attention's transposed keys). */
export const SCRATCH_BYTES = 4 << 20;
/** Where the argument block of the current call lives (below the heap's first block). */
export const ARGS_PTR = 1024;
export const ARGS_BYTES = 3072;

/** A worker's loop (plain JavaScript: it runs from a string, under any loader). */
const WORKER_SOURCE = `
const { workerData, receiveMessageOnPort } = require('node:worker_threads');
const { memory, control, port, tid, scratch, spin } = workerData;
const ctl = new Int32Array(control);
const fns = [];
const drain = () => {
  for (let m; (m = receiveMessageOnPort(port)); ) {
    const { id, module } = m.message;
    fns[id] = new WebAssembly.Instance(module, { env: { memory, tid, scratch } }).exports.run;
  }
};
let seen = 0;
for (;;) {
  let w = Atomics.load(ctl, ${JOB});
  for (let s = 0; (w >>> 16) === seen; s++) {
    if (s > spin) Atomics.wait(ctl, ${JOB}, w);
    w = Atomics.load(ctl, ${JOB});
  }
  seen = w >>> 16;
  if (Atomics.load(ctl, ${QUIT})) break;
  let joined = false;
  while ((w >>> 16) === seen && !(w & ${CLOSED})) {
    const r = Atomics.compareExchange(ctl, ${JOB}, w, w + 1);
    if (r === w) { joined = true; break; }
    w = r;
  }
  if (!joined) continue;
  drain();
  try {
    const fn = fns[ctl[${KERNEL}]], args = ctl[${ARGS}], n = ctl[${ITEMS}], chunk = ctl[${CHUNK}];
    for (let i; (i = Atomics.add(ctl, ${NEXT}, chunk)) < n; ) fn(args, i, Math.min(i + chunk, n));
  } catch (e) {
    Atomics.store(ctl, ${FAILED}, 1);
  }
  Atomics.add(ctl, ${DONE}, 1);
  Atomics.notify(ctl, ${DONE});
}
`;

export type KernelFn = (args: number, lo: number, hi: number) => void;

/** A compiled kernel: its id in every thread's table and the main thread's instance. */
export interface Kernel {
  readonly id: number;
  readonly name: string;
  readonly run: KernelFn;
}

export class Pool {
  readonly threads: number;
  private readonly control = new Int32Array(new SharedArrayBuffer(64));
  private workers: Worker[] = [];
  private ports: MessagePort[] = [];
  private seq = 0;
  private kernels = new Map<string, Kernel>();
  private modules: WebAssembly.Module[] = [];
  readonly scratch: number[];
  /** Kernel calls so far, and how many ran on more than one thread (for tests and profiles). */
  calls = 0;
  parallelCalls = 0;
  /** Per kernel: calls, parallel calls, ms in it, ms of that waiting for workers (UHD_WASM_PROFILE=1). */
  readonly profile = process.env.UHD_WASM_PROFILE ? new Map<string, { calls: number; parallel: number; ms: number; waitMs: number; joined: number }>() : null;

  private started = false;

  constructor(private readonly heap: WasmHeap, threads = availableParallelism(), private readonly spin = 4000) {
    this.threads = Math.max(1, threads);
    this.scratch = Array.from({ length: this.threads }, () => heap.alloc(SCRATCH_BYTES, 'wasm scratch').ptr);
  }

  /** Whether the worker threads run (they start on the first parallel job). */
  get running(): boolean {
    return this.started && this.workers.length > 0;
  }

  /** Starts the workers, handing each every kernel compiled so far. */
  private start(): void {
    this.started = true;
    const { heap, spin } = this;
    for (let tid = 1; tid < this.threads; tid++) {
      const { port1, port2 } = new MessageChannel();
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { memory: heap.memory, control: this.control.buffer, port: port2, tid, scratch: this.scratch[tid], spin },
        transferList: [port2],
      });
      worker.unref();
      port1.unref();
      this.modules.forEach((module, id) => port1.postMessage({ id, module }));
      this.workers.push(worker);
      this.ports.push(port1);
    }
  }

  /** The kernel built by `build` (a module exporting `run(args, lo, hi)`), compiled once per key. */
  kernel(key: string, build: () => ModuleSpec): Kernel {
    const have = this.kernels.get(key);
    if (have) return have;
    const bytes = encodeModule({ ...build(), name: key });
    let module: WebAssembly.Module;
    try {
      module = new WebAssembly.Module(bytes);
    } catch (e) {
      throw new Error(`wasm: the generated kernel '${key}' does not compile: ${(e as Error).message}`);
    }
    const id = this.modules.length;
    this.modules.push(module);
    const instance = new WebAssembly.Instance(module, { env: { memory: this.heap.memory, tid: 0, scratch: this.scratch[0] } });
    for (const p of this.ports) p.postMessage({ id, module });
    const k: Kernel = { id, name: key, run: instance.exports.run as KernelFn };
    this.kernels.set(key, k);
    return k;
  }

  get kernelCount(): number {
    return this.kernels.size;
  }

  /** The keys of the kernels compiled so far (tests check which path an op took). */
  kernelNames(): string[] {
    return [...this.kernels.keys()];
  }

  /**
   * Runs items [0, n) of `k` with its arguments at `args`, `chunk` items at a time; on the
   * main thread alone when `parallel` is false or there is one chunk.
   */
  run(k: Kernel, args: number, n: number, chunk: number, parallel = true): void {
    this.calls++;
    if (n <= 0) return;
    chunk = Math.max(1, Math.floor(chunk));
    const t0 = this.profile ? performance.now() : 0;
    let entry = this.profile?.get(k.name);
    if (this.profile && !entry) this.profile.set(k.name, (entry = { calls: 0, parallel: 0, ms: 0, waitMs: 0, joined: 0 }));
    if (entry) entry.calls++;
    if (parallel && !this.started && this.threads > 1 && n > chunk) this.start();
    if (!parallel || this.threads === 1 || n <= chunk) {
      k.run(args, 0, n);
      if (entry) entry.ms += performance.now() - t0;
      return;
    }
    if (entry) entry.parallel++;
    this.parallelCalls++;
    const c = this.control;
    c[KERNEL] = k.id;
    c[ARGS] = args;
    c[ITEMS] = n;
    c[CHUNK] = chunk;
    c[DONE] = 0;
    c[FAILED] = 0;
    Atomics.store(c, NEXT, 0);
    this.seq = (this.seq + 1) & 0xffff || 1;
    Atomics.store(c, JOB, this.seq << 16);
    Atomics.notify(c, JOB);
    let error: unknown = null;
    try {
      for (let i; (i = Atomics.add(c, NEXT, chunk)) < n; ) k.run(args, i, Math.min(i + chunk, n));
    } catch (e) {
      error = e;
      Atomics.store(c, NEXT, n); // the others stop taking items
    }
    // close the job: no worker joins after this; wait for those that did
    let w = Atomics.load(c, JOB);
    for (;;) {
      const r = Atomics.compareExchange(c, JOB, w, w | CLOSED);
      if (r === w) break;
      w = r;
    }
    const joined = w & 0x7fff;
    const t1 = entry ? performance.now() : 0;
    // a short spin, then sleep: a worker descheduled on a busy machine gets the core back
    for (let s = 0, d; (d = Atomics.load(c, DONE)) < joined; s++) if (s > 200) Atomics.wait(c, DONE, d, 2);
    if (entry) {
      const t2 = performance.now();
      entry.ms += t2 - t0;
      entry.waitMs += t2 - t1;
      entry.joined += joined;
    }
    if (error) throw error;
    if (c[FAILED]) throw new Error(`wasm: kernel '${k.name}' failed on a worker thread`);
  }

  /**
   * Ends the workers. Their loops see QUIT and return; each worker is ref'd again so that Node
   * waits for it to be gone before exiting (a worker torn down during exit, while Dawn's threads
   * are being destroyed, can crash the process).
   */
  close(): void {
    Atomics.store(this.control, QUIT, 1);
    this.seq = (this.seq + 1) & 0xffff || 1;
    Atomics.store(this.control, JOB, this.seq << 16);
    Atomics.notify(this.control, JOB);
    for (const w of this.workers) w.ref();
    this.workers = [];
    for (const p of this.ports) p.close();
    this.ports = [];
  }
}
