/** CPU reference: gather and scatter-add (PyTorch semantics). */
import { contiguousStrides, fmt } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { copy } from './elementwise.js';
import { buf, offsets } from './storage.js';

/** For each element of `index` (row-major), the storage offset in `x` it addresses along `dim`. */
function targets(op: string, x: Tensor, dim: number, index: Tensor): Int32Array {
  const is = buf(index);
  const io = offsets(index);
  const out = new Int32Array(io.length);
  const istr = contiguousStrides(index.shape);
  for (let i = 0; i < io.length; i++) {
    let off = x.offset;
    let rem = i;
    for (let d = 0; d < index.rank; d++) {
      const c = Math.floor(rem / istr[d]);
      rem -= c * istr[d];
      if (d === dim) {
        const j = is[io[i]];
        if (j < 0 || j >= x.shape[dim]) {
          throw new Error(`${op}: index ${j} out of range for dim ${dim} of size ${x.shape[dim]} (x ${fmt(x.shape)})`);
        }
        off += j * x.strides[d];
      } else off += c * x.strides[d];
    }
    out[i] = off;
  }
  return out;
}

/** out[c] = x[c with c[dim] = index[c]] over index's shape; throws on an out-of-range index. */
export function gather(x: Tensor, dim: number, index: Tensor, out: Tensor): void {
  const xs = buf(x);
  const o = buf(out);
  const t = targets('gather', x, dim, index);
  for (let i = 0; i < t.length; i++) o[i] = xs[t[i]];
}

/** out = x, then out[c with c[dim] = index[c]] += src[c] over index's shape; throws on an out-of-range index. */
export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor, out: Tensor): void {
  const o = buf(out);
  // out is fresh and contiguous: a contiguous x (a zero gradient table) copies in one call
  if (x.isContiguous && x.dtype === out.dtype) o.set(buf(x));
  else copy(x, out);
  const ss = buf(src);
  // src may be larger than index: only its leading index.shape block is used
  const srcView = src.slice(...index.shape.map((n) => [0, n] as const));
  const so = offsets(srcView);
  srcView.dispose();
  const t = targets('scatterAdd', out, dim, index);
  for (let i = 0; i < t.length; i++) o[t[i]] += ss[so[i]];
}
