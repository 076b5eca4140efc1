/**
 * A browser-like `Worker` on worker_threads, so that jax-js's wasm backend runs in its fastest
 * configuration here: its kernels on a pool of Web Workers over a shared memory (it looks for
 * `globalThis.Worker` and uses one thread without it). Just what it uses: `new Worker(blobUrl)`
 * with a classic script that sets `self.onmessage` and calls `postMessage`, `onmessage`,
 * `onerror`, `postMessage` (structured clone: shared memories and modules pass through) and
 * `terminate`. Threads are unref'd so Node still exits. Also sets
 * `navigator.hardwareConcurrency` (Node 20 has no navigator) to the real core count.
 */
import { resolveObjectURL } from 'node:buffer';
import os from 'node:os';
import { Worker as NodeWorker } from 'node:worker_threads';

/** The thread's side: the first message is the script, later ones go to `self.onmessage`. */
const BOOTSTRAP = `
const { parentPort } = require('node:worker_threads');
globalThis.self = globalThis;
globalThis.postMessage = (m) => parentPort.postMessage(m);
let loaded = false;
parentPort.on('message', (m) => {
  if (loaded) return self.onmessage({ data: m });
  loaded = true;
  (0, eval)(m);
});
`;

class WebWorker {
  onmessage: ((e: { data: unknown }) => void) | null = null;
  onerror: ((e: { message: string }) => void) | null = null;
  private readonly thread: NodeWorker;
  private pending: unknown[] | null = [];

  constructor(url: string | URL) {
    this.thread = new NodeWorker(BOOTSTRAP, { eval: true });
    this.thread.unref();
    this.thread.on('message', (data) => this.onmessage?.({ data }));
    this.thread.on('error', (e: Error) => this.onerror?.({ message: e.message }));
    const blob = resolveObjectURL(String(url));
    if (!blob) throw new Error(`Worker: ${String(url)} is not a blob: URL this shim can read`);
    void blob.text().then((source) => {
      this.thread.postMessage(source); // the bootstrap takes the first message as the script
      for (const m of this.pending!) this.thread.postMessage(m);
      this.pending = null;
    });
  }

  postMessage(message: unknown): void {
    if (this.pending) this.pending.push(message);
    else this.thread.postMessage(message);
  }

  terminate(): void {
    void this.thread.terminate();
  }
}

/** Installs the shim where there is no `Worker` (Node); returns the worker count jax-js will use. */
export function installWebWorker(): number {
  const g = globalThis as { Worker?: unknown; navigator?: { hardwareConcurrency?: number } };
  g.Worker ??= WebWorker;
  const cores = os.availableParallelism();
  if (!g.navigator) Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
  if (!g.navigator!.hardwareConcurrency) Object.defineProperty(g.navigator, 'hardwareConcurrency', { value: cores, configurable: true });
  return g.navigator!.hardwareConcurrency ?? cores;
}
