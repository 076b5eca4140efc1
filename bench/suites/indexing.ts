/**
 * Indexing and token-grid ops, in GB/s: an embedding lookup (indexSelect), an embedding's
 * backward (scatterAdd of [N, d] rows into a [vocab, d] table through ids expanded from
 * [N, 1]), and the 2x2 merges on a SigLIP-width token grid (pixelUnshuffle, avgPool2x2).
 * Bytes count what each op must read and write once, not cache traffic.
 */
import { BENCH_DEVICES, type BenchCase } from '../harness.js';
import * as uhd from '../../tensor/index.js';

export const name = 'indexing';

/** Embedding table and batch: a Qwen-like vocab slice at width 1024 (128 MB, under the 128 MiB binding limit of llvmpipe). */
const VOCAB = 32000;
const D = 1024;
const N = 2048;
/** Four 32x32 views at SigLIP width. */
const VIEWS = 4;
const GRID = 32;
const WIDTH = 1152;

/** N token ids in [0, VOCAB), skewed toward small ids (as real text is), so rows repeat. */
function tokenIds(): Int32Array {
  let s = 0x9e3779b9;
  return Int32Array.from({ length: N }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const u = (s >>> 0) / 4294967296;
    return Math.floor(VOCAB * u * u * u);
  });
}

export function cases(): BenchCase[] {
  const out: BenchCase[] = [];
  const tokens = GRID * GRID;
  const gridNumel = VIEWS * tokens * WIDTH;
  for (const device of BENCH_DEVICES) {
    out.push({
      name: `indexSelect ${N} rows of [${VOCAB},${D}]`,
      device,
      // rows read + rows written + ids
      bytes: 2 * N * D * 4 + N * 4,
      setup: () => {
        // The values do not change the timing: a filled table is cheaper to build than a random one.
        const table = uhd.full([VOCAB, D], 0.5, { device });
        const ids = uhd.tensor(tokenIds(), { device });
        return () => uhd.indexSelect(table, 0, ids);
      },
    });
    out.push({
      name: `scatterAdd embedding backward [${N},${D}] into [${VOCAB},${D}]`,
      device,
      // out = copy of the table (read + write), then per src element: src read, out read + write; ids
      bytes: 2 * VOCAB * D * 4 + 3 * N * D * 4 + N * 4,
      setup: () => {
        const table = uhd.zeros([VOCAB, D], { device });
        const grad = uhd.randn([N, D], { device });
        const ids = uhd.tensor(tokenIds(), { shape: [N, 1], device });
        const index = ids.expand([N, D]);
        return () => uhd.scatterAdd(table, 0, index, grad);
      },
    });
    out.push({
      name: `pixelUnshuffle [${VIEWS},${tokens},${WIDTH}] ${GRID}x${GRID}`,
      device,
      bytes: 2 * gridNumel * 4,
      setup: () => {
        const x = uhd.randn([VIEWS, tokens, WIDTH], { device });
        return () => uhd.pixelUnshuffle(x, GRID, GRID);
      },
    });
    out.push({
      name: `avgPool2x2 [${VIEWS},${tokens},${WIDTH}] ${GRID}x${GRID}`,
      device,
      bytes: gridNumel * 4 + (gridNumel / 4) * 4,
      setup: () => {
        const x = uhd.randn([VIEWS, tokens, WIDTH], { device });
        return () => uhd.avgPool2x2(x, GRID, GRID);
      },
    });
  }
  return out;
}
