/**
 * `npm run bench [-- suite ...]`: runs every suite in bench/suites (or the named ones) on the
 * CPU reference, wasm and WebGPU backends (UHD_BENCH_DEVICES to pick) and writes
 * bench/results/<suite>.{json,md}.
 */
import { appendFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { closeDevice as shutdown, openDevice } from '../backends/index.js';
import { initWebGPU } from '../kernels/index.js';
import { BENCH_DEVICES } from './harness.js';
import { runSuite, type BenchCase, type BenchRow } from './harness.js';

interface SuiteModule {
  name: string;
  cases: () => BenchCase[];
  /** Extra Markdown printed and saved after the table (e.g. ratios between cases). */
  summarize?: (rows: BenchRow[]) => string;
}

const dir = join(dirname(fileURLToPath(import.meta.url)), 'suites');
const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const quick = process.argv.includes('--quick');

let adapter = 'webgpu not opened';
if (BENCH_DEVICES.includes('webgpu')) {
  const info = await initWebGPU();
  adapter = `${info.backend}/${info.featureLevel}: ${info.description}`;
}
if (BENCH_DEVICES.includes('wasm')) await openDevice('wasm');
try {
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts')).sort()) {
    const mod = (await import(pathToFileURL(join(dir, file)).href)) as SuiteModule;
    if (wanted.length && !wanted.includes(mod.name)) continue;
    const rows = await runSuite(mod.name, mod.cases(), { adapter, maxTime: quick ? 0.5 : 2, minSamples: quick ? 2 : 5 });
    if (mod.summarize) {
      const extra = mod.summarize(rows);
      console.log(`\n${extra}\n`);
      appendFileSync(join(dirname(fileURLToPath(import.meta.url)), 'results', `${mod.name}.md`), `\n${extra}\n`);
    }
  }
} finally {
  shutdown();
}
