/**
 * numpy (matmul, softmax, layerNorm) and torch on the CPU (the transformer block forward and
 * forward+backward) through /usr/bin/python3 (python_peer.py): the native-library reference
 * for what this machine can do. Optional: without that interpreter, numpy or torch, one row
 * says so. Calls are timed inside Python (no IPC in the times); outputs come back as files and
 * are checked against ours like every peer's. Which BLAS numpy links is reported: on this
 * machine it is the reference BLAS, far from OpenBLAS, so onnxruntime's MLAS is the limit.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { reason, type Opened, type Prepared, type Runner } from './runner.js';
import type { Timing, TimingOptions } from './timing.js';
import { BLOCK_PARAM_NAMES, type Workload } from './workloads.js';

const PYTHON = '/usr/bin/python3';
const SCRIPT = fileURLToPath(new URL('./python_peer.py', import.meta.url));

interface Reply {
  ok: boolean;
  error?: string;
  medianMs?: number;
  samples?: number;
  outputs?: string[];
  numpy?: string;
  torch?: string;
  torchThreads?: number;
  blas?: string;
}

class PythonPeer {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly replies: ((r: Reply) => void)[] = [];
  private queue: Promise<unknown> = Promise.resolve();

  constructor() {
    this.proc = spawn(PYTHON, ['-u', SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.unref();
    createInterface({ input: this.proc.stdout }).on('line', (line) => this.replies.shift()?.(JSON.parse(line) as Reply));
    this.proc.on('exit', () => {
      for (const r of this.replies.splice(0)) r({ ok: false, error: 'python exited' });
    });
  }

  request(req: object): Promise<Reply> {
    const next = this.queue.then(() => new Promise<Reply>((resolve) => {
      this.replies.push(resolve);
      this.proc.stdin.write(JSON.stringify(req) + '\n');
    }));
    this.queue = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.proc.stdin.end();
    this.proc.kill();
  }
}

function writeInputs(dir: string, w: Workload['work']): object {
  const put = (name: string, data: Float32Array) => writeFileSync(join(dir, name), data);
  switch (w.kind) {
    case 'matmul':
      put('a.bin', w.a);
      put('b.bin', w.b);
      return { kind: w.kind, n: w.n };
    case 'softmax':
      put('x.bin', w.x);
      return { kind: w.kind, rows: w.rows, cols: w.cols };
    case 'layerNorm':
      put('x.bin', w.x);
      put('weight.bin', w.weight);
      put('bias.bin', w.bias);
      return { kind: w.kind, rows: w.rows, cols: w.cols };
    case 'block':
      put('x.bin', w.x);
      w.params.forEach((p, i) => put(`p${i}.bin`, p.data));
      return { kind: w.kind, train: w.train, seq: w.seq, dim: w.dim, heads: w.heads, paramNames: BLOCK_PARAM_NAMES, paramShapes: w.params.map((p) => p.shape) };
  }
}

function runner(peer: PythonPeer, library: string, backend: string, note: string, covers: (w: Workload) => boolean): Runner {
  return {
    library,
    backend,
    note,
    covers,
    async prepare({ work }: Workload): Promise<Prepared> {
      const dir = mkdtempSync(join(tmpdir(), 'uhd-peer-'));
      const spec = writeInputs(dir, work);
      const call = async (timing: TimingOptions) => {
        const r = await peer.request({ work: spec, dir, timing });
        if (!r.ok) throw new Error(r.error ?? 'python peer failed');
        return r;
      };
      return {
        async run() {
          await call({ warmup: 0, minSamples: 1, maxSamples: 1, maxTime: 0 });
        },
        async outputs() {
          const r = await call({ warmup: 0, minSamples: 1, maxSamples: 1, maxTime: 0 });
          return r.outputs!.map((p) => {
            const b = readFileSync(p); // small files share a pooled ArrayBuffer: take just this one's bytes
            return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice();
          });
        },
        async timed(timing: TimingOptions) {
          const r = await call(timing);
          return { medianMs: r.medianMs!, samples: r.samples! } satisfies Timing;
        },
        dispose() {
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  };
}

let opened: PythonPeer | null = null;

/** The numpy and torch runners, or rows saying why they cannot run. */
export async function openPython(): Promise<Opened[]> {
  if (!existsSync(PYTHON)) return [{ library: 'numpy / torch', backend: 'cpu', reason: `${PYTHON} not found (optional peer)` }];
  try {
    opened = new PythonPeer();
    const d = await opened.request({ describe: true });
    if (!d.ok) throw new Error(d.error);
    const blas = d.blas ?? 'unknown';
    const reference = /\/blas\/libblas/.test(blas);
    return [
      runner(opened, `numpy ${d.numpy}`, 'cpu', `${PYTHON}; BLAS ${blas}${reference ? ' (the reference BLAS, not OpenBLAS: not this machine\'s limit)' : ''}; timed inside Python`, (w) => w.work.kind !== 'block'),
      runner(opened, `torch ${d.torch}`, 'cpu', `${PYTHON}; ${d.torchThreads} intra-op thread(s), its own BLAS build; timed inside Python`, (w) => w.work.kind === 'block'),
    ];
  } catch (e) {
    return [{ library: 'numpy / torch', backend: 'cpu', reason: `optional peer: ${reason(e)}` }];
  }
}

export function closePython(): void {
  opened?.close();
  opened = null;
}
