/**
 * CPU reference matmul. Per batch entry both operands are packed into float64 panels (4 rows
 * of a, 4 cols of b, k-major), then each 4x4 block of the output is a K-long sum held in 16
 * local float64 accumulators. Strided and broadcast views are read through their strides; a
 * broadcast operand is packed once and reused across the batch entries that share it.
 */
import type { TypedArray } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { buf } from './storage.js';

/** Column panels of b per cache block: JB * 4 cols * K float64s stay in L2 across a's panels. */
const JB = 16;

/**
 * Packs the X x K matrix whose element (x, k) is src[base + x*sx + k*sk] into panels of 4 x's:
 * dst[(x >> 2) * 4K + 4k + (x & 3)]. Rows past X (up to a multiple of 4) are zero.
 */
function packPanels(src: TypedArray, base: number, X: number, K: number, sx: number, sk: number, dst: Float64Array): void {
  dst.fill(0);
  for (let x = 0; x < X; x++) {
    const at = (x >> 2) * 4 * K + (x & 3);
    for (let k = 0; k < K; k++) dst[at + 4 * k] = src[base + x * sx + k * sk];
  }
}

/** Storage offset of the first element of each batch entry's matrix, in row-major batch order. */
function batchOffsets(t: Tensor, batchShape: readonly number[]): Float64Array {
  const count = batchShape.reduce((x, y) => x * y, 1);
  const out = new Float64Array(count);
  const idx = new Array<number>(batchShape.length).fill(0);
  for (let i = 0; i < count; i++) {
    let off = t.offset;
    for (let d = 0; d < idx.length; d++) off += idx[d] * t.strides[d];
    out[i] = off;
    for (let d = idx.length - 1; d >= 0 && ++idx[d] === batchShape[d]; d--) idx[d] = 0;
  }
  return out;
}

/** a: [...batch, M, K], b: [...batch, K, N] (batch equal after expand), out: contiguous [...batch, M, N]. */
export function matmul(a: Tensor, b: Tensor, out: Tensor): void {
  if (out.size === 0) return;
  const r = a.rank;
  const [M, K] = a.shape.slice(-2);
  const N = b.shape[r - 1];
  const batchShape = out.shape.slice(0, -2);
  const [aRow, aCol] = a.strides.slice(-2);
  const [bRow, bCol] = b.strides.slice(-2);
  const aBases = batchOffsets(a, batchShape);
  const bBases = batchOffsets(b, batchShape);
  const as = buf(a);
  const bs = buf(b);
  const o = buf(out);
  const A = new Float64Array(Math.ceil(M / 4) * 4 * K);
  const B = new Float64Array(Math.ceil(N / 4) * 4 * K);
  const block = new Float64Array(16);
  let packedA = -1;
  let packedB = -1;
  for (let bt = 0; bt < aBases.length; bt++) {
    if (aBases[bt] !== packedA) packPanels(as, (packedA = aBases[bt]), M, K, aRow, aCol, A);
    if (bBases[bt] !== packedB) packPanels(bs, (packedB = bBases[bt]), N, K, bCol, bRow, B);
    const obase = out.offset + bt * M * N;
    for (let j0 = 0; j0 < N; j0 += 4 * JB) {
      const j1 = Math.min(N, j0 + 4 * JB);
      for (let i = 0; i < M; i += 4) {
        for (let j = j0; j < j1; j += 4) {
          let pa = i * K; // panel i/4 starts at (i/4) * 4K
          let pb = j * K;
          let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
          let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
          for (let k = 0; k < K; k++, pa += 4, pb += 4) {
            const a0 = A[pa], a1 = A[pa + 1], a2 = A[pa + 2], a3 = A[pa + 3];
            const b0 = B[pb], b1 = B[pb + 1], b2 = B[pb + 2], b3 = B[pb + 3];
            c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
            c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
            c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
            c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
          }
          block[0] = c00; block[1] = c01; block[2] = c02; block[3] = c03;
          block[4] = c10; block[5] = c11; block[6] = c12; block[7] = c13;
          block[8] = c20; block[9] = c21; block[10] = c22; block[11] = c23;
          block[12] = c30; block[13] = c31; block[14] = c32; block[15] = c33;
          for (let ri = 0; ri < 4 && i + ri < M; ri++) {
            for (let cj = 0; cj < 4 && j + cj < N; cj++) o[obase + (i + ri) * N + j + cj] = block[ri * 4 + cj];
          }
        }
      }
    }
  }
}
