/**
 * gather and scatterAdd on the shared memory, in TypeScript loops over up to 3 dims (no
 * per-element index arrays): an embedding lookup is a row copy per token, its gradient a row
 * add. Out-of-range indices throw as the CPU reference does, naming the index and the dim.
 */
import { fmt } from '../../../tensor/shape.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { WasmStorage } from '../memory.js';

const data = (t: Tensor) => (t.storage as WasmStorage).data;

/** Visits every element of index (rank <= 3) with its coordinates' offsets; false for higher ranks. */
function eachIndex(op: string, x: Tensor, dim: number, index: Tensor, visit: (xOff: number, c0: number, c1: number, c2: number) => void): boolean {
  if (index.rank > 3) return false;
  const shape = [1, 1, 1];
  const is = [0, 0, 0];
  const xs = [0, 0, 0];
  const pad = 3 - index.rank;
  for (let d = 0; d < index.rank; d++) {
    shape[pad + d] = index.shape[d];
    is[pad + d] = index.strides[d];
    xs[pad + d] = x.strides[d];
  }
  const id = data(index);
  const dd = pad + dim;
  const size = x.shape[dim];
  for (let a = 0; a < shape[0]; a++) {
    for (let b = 0; b < shape[1]; b++) {
      for (let c = 0; c < shape[2]; c++) {
        const j = id[index.offset + a * is[0] + b * is[1] + c * is[2]];
        if (j < 0 || j >= size) throw new Error(`${op}: index ${j} out of range for dim ${dim} of size ${size} (x ${fmt(x.shape)})`);
        visit(x.offset + (dd === 0 ? j : a) * xs[0] + (dd === 1 ? j : b) * xs[1] + (dd === 2 ? j : c) * xs[2], a, b, c);
      }
    }
  }
  return true;
}

/** out (fresh, contiguous, index's shape) = x gathered along dim. */
export function gather(x: Tensor, dim: number, index: Tensor, out: Tensor): boolean {
  const xd = data(x);
  const o = data(out);
  let at = out.offset;
  return eachIndex('gather', x, dim, index, (xOff) => {
    o[at++] = xd[xOff];
  });
}

/** out (fresh, contiguous) = x, then out[... index ...] += src. */
export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor, out: Tensor, copy: (x: Tensor, out: Tensor) => void): boolean {
  if (index.rank > 3) return false;
  copy(x, out);
  const sd = data(src);
  const o = data(out);
  const pad = 3 - index.rank;
  const ss = [0, 0, 0];
  for (let d = 0; d < index.rank; d++) ss[pad + d] = src.strides[d];
  return eachIndex('scatterAdd', out, dim, index, (oOff, a, b, c) => {
    o[oOff] += sd[src.offset + a * ss[0] + b * ss[1] + c * ss[2]];
  });
}
