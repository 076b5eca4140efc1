/** CPU reference matmul: operands packed dense once, then a 4-row register-blocked i-k-j loop. */
import { typedArrayFor } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { buf, offsets } from './storage.js';

const KB = 128; // k-block: keeps a block of B's rows in cache while 4 rows of A stream over it

/** a: [...batch, M, K], b: [...batch, K, N] (batch equal after expand), out: [...batch, M, N]. */
export function matmul(a: Tensor, b: Tensor, out: Tensor): void {
  const [M, K] = a.shape.slice(-2);
  const N = b.shape[b.rank - 1];
  const batches = out.size / Math.max(M * N, 1);
  if (out.size === 0) return;
  const as = buf(a);
  const bs = buf(b);
  const o = buf(out);
  const ao = offsets(a);
  const bo = offsets(b);
  const A = typedArrayFor(a.dtype, M * K);
  const B = typedArrayFor(b.dtype, K * N);
  const acc = new Float64Array(4 * N);
  for (let bt = 0; bt < batches; bt++) {
    for (let i = 0; i < M * K; i++) A[i] = as[ao[bt * M * K + i]];
    for (let i = 0; i < K * N; i++) B[i] = bs[bo[bt * K * N + i]];
    const obase = bt * M * N;
    for (let i0 = 0; i0 < M; i0 += 4) {
      const rows = Math.min(4, M - i0);
      acc.fill(0);
      for (let k0 = 0; k0 < K; k0 += KB) {
        const k1 = Math.min(K, k0 + KB);
        for (let k = k0; k < k1; k++) {
          const brow = k * N;
          const a0 = A[i0 * K + k];
          const a1 = rows > 1 ? A[(i0 + 1) * K + k] : 0;
          const a2 = rows > 2 ? A[(i0 + 2) * K + k] : 0;
          const a3 = rows > 3 ? A[(i0 + 3) * K + k] : 0;
          for (let j = 0; j < N; j++) {
            const bv = B[brow + j];
            acc[j] += a0 * bv;
            acc[N + j] += a1 * bv;
            acc[2 * N + j] += a2 * bv;
            acc[3 * N + j] += a3 * bv;
          }
        }
      }
      for (let r = 0; r < rows; r++) {
        const orow = obase + (i0 + r) * N;
        for (let j = 0; j < N; j++) o[orow + j] = acc[r * N + j];
      }
    }
  }
}
