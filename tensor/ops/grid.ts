/** Ops on token grids: a view's h x w patch tokens stored row-major as [..., h*w, d]. */
import { fmt } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { contiguous } from './elementwise.js';
import { mean } from './reduce.js';

function checkGrid(op: string, x: Tensor, h: number, w: number, r: number): void {
  if (x.rank < 2) throw new Error(`${op}: x must be [..., h*w, d], got ${fmt(x.shape)}`);
  const tokens = x.shape[x.rank - 2];
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 0 || w < 0 || h * w !== tokens) {
    throw new Error(`${op}: grid ${h}x${w} does not match ${tokens} tokens of x ${fmt(x.shape)}`);
  }
  if (!Number.isInteger(r) || r < 1) throw new Error(`${op}: window size ${r} must be a positive integer`);
  if (h % r !== 0 || w % r !== 0) throw new Error(`${op}: grid ${h}x${w} is not divisible by ${r}`);
}

/** x: [..., h*w, d] viewed as [..., h/r, r, w/r, r, d] (a view, no copy). */
function windows(x: Tensor, h: number, w: number, r: number): Tensor {
  const lead = x.shape.slice(0, -2);
  return x.reshape([...lead, h / r, r, w / r, r, x.shape[x.rank - 1]]);
}

/**
 * [..., h*w, d] -> [..., (h/r)*(w/r), r*r*d]: each r x r window's tokens concatenated in
 * row-major order (for r = 2: top-left, top-right, bottom-left, bottom-right), windows row-major.
 * A strided view followed by one copy.
 */
export function pixelUnshuffle(x: Tensor, h: number, w: number, r = 2): Tensor {
  checkGrid('pixelUnshuffle', x, h, w, r);
  const n = x.rank - 2;
  const win = windows(x, h, w, r);
  const lead = [...Array(n).keys()];
  // [..., h/r, r, w/r, r, d] -> [..., h/r, w/r, r, r, d]
  const perm = win.permute([...lead, n, n + 2, n + 1, n + 3, n + 4]);
  const dense = contiguous(perm);
  const out = dense.reshape([...x.shape.slice(0, -2), (h / r) * (w / r), r * r * x.shape[x.rank - 1]]);
  for (const t of [win, perm, dense]) t.dispose();
  return out;
}

/** [..., h*w, d] -> [..., (h/2)*(w/2), d]: the mean of each 2x2 window, windows row-major. */
export function avgPool2x2(x: Tensor, h: number, w: number): Tensor {
  checkGrid('avgPool2x2', x, h, w, 2);
  const n = x.rank - 2;
  const win = windows(x, h, w, 2);
  const pooled = mean(win, [n + 1, n + 3]);
  const out = pooled.reshape([...x.shape.slice(0, -2), (h / 2) * (w / 2), x.shape[x.rank - 1]]);
  win.dispose();
  pooled.dispose();
  return out;
}
