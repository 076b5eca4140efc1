/**
 * sum, mean and max over trailing dims. After merging, either the reduced elements of each
 * output are one dense run (a row: item = rows, SIMD over the row with four accumulators), or
 * the kept elements are dense and the reduced ones strided (columns, as a bias gradient's sum
 * over tokens: item = 16 adjacent outputs, each a vector lane, summed down the rows). Other
 * layouts are copied dense once. f32 accumulation (the reference's is float64).
 */
import type { ReduceOp } from '../../../tensor/backend.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { Func } from '../emit.js';
import { MAX_PAGES, WasmStorage } from '../memory.js';
import { Args, ARGS_PTR, runtime } from '../runtime.js';

const spec = (f: Func) => ({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES, globals: ['tid', 'scratch'] });
const COLUMNS = 16;

type Op = 'sum' | 'mean' | 'max';

function combine(f: Func, op: Op): void {
  if (op === 'max') f.f32x4_max();
  else f.f32x4_add();
}

/** Rows: args 0 rows, 1 R, 2 x, 3 row stride (elements), 4 out. */
function rowKernel(op: Op): Func {
  const f = new Func(['i32', 'i32', 'i32']);
  const [args, lo, hi] = f.params;
  const [R, x, rs, out, row, p, end, r16, c] = Array.from({ length: 9 }, () => f.local('i32'));
  const acc = [0, 1, 2, 3].map(() => f.local('v128'));
  const v = f.local('v128');
  const t = f.local('f32');
  const pad = op === 'max' ? -Infinity : 0;
  const scalar = () => (op === 'max' ? f.f32_max() : f.f32_add());
  [R, x, rs, out].forEach((l, i) => f.get(args).i32_load(4 * (i + 1)).set(l));
  f.get(R).i32(-16).i32_and().set(r16);
  f.for(row, lo, hi, 1, () => {
    f.get(x).get(row).get(rs).i32_mul().i32(2).i32_shl().i32_add().set(p);
    for (const a of acc) f.f32x4(pad).set(a);
    f.get(p).get(r16).i32(2).i32_shl().i32_add().set(end);
    f.block((exit) => f.loop((repeat) => {
      f.get(p).get(end).i32_ge_u().brIf(exit);
      acc.forEach((a, k) => {
        f.get(a).get(p).v128_load(16 * k);
        combine(f, op);
        f.set(a);
      });
      f.get(p).i32(64).i32_add().set(p).br(repeat);
    }));
    // the last R % 16 elements, one at a time
    f.f32(pad).set(t);
    f.get(R).get(r16).i32_sub().set(c);
    f.for(end, 0, c, 1, () => {
      f.get(t).get(p).get(end).i32(2).i32_shl().i32_add().f32_load();
      scalar();
      f.set(t);
    });
    f.get(acc[0]).get(acc[1]);
    combine(f, op);
    f.get(acc[2]).get(acc[3]);
    combine(f, op);
    combine(f, op);
    f.set(v);
    f.get(v).get(v).get(v).f32x4_shuffle(2, 3, 0, 1);
    combine(f, op);
    f.set(v);
    f.get(v).get(v).get(v).f32x4_shuffle(1, 0, 3, 2);
    combine(f, op);
    f.f32x4_extract_lane(0).get(t);
    scalar();
    if (op === 'mean') f.get(R).f32_convert_i32_s().f32_div();
    f.set(t);
    f.get(out).get(row).i32(2).i32_shl().i32_add().get(t).f32_store();
  });
  return f;
}

/** Columns: args 0 K (outputs), 1 R, 2 x, 3 reduced stride (elements), 4 out; item = COLUMNS outputs. */
function columnKernel(op: Op): Func {
  const f = new Func(['i32', 'i32', 'i32']);
  const [args, lo, hi] = f.params;
  const [K, R, x, rs, out, item, j0, n, r, p, l] = Array.from({ length: 11 }, () => f.local('i32'));
  const acc = [0, 1, 2, 3].map(() => f.local('v128'));
  const pad = op === 'max' ? -Infinity : 0;
  [K, R, x, rs, out].forEach((loc, i) => f.get(args).i32_load(4 * i).set(loc));
  f.get(rs).i32(2).i32_shl().set(rs);
  f.for(item, lo, hi, 1, () => {
    f.get(item).i32(COLUMNS).i32_mul().set(j0);
    f.get(K).get(j0).i32_sub().set(n);
    f.get(n).i32(COLUMNS).i32_ge_s().if(() => {
      for (const a of acc) f.f32x4(pad).set(a);
      f.get(x).get(j0).i32(2).i32_shl().i32_add().set(p);
      f.for(r, 0, R, 1, () => {
        acc.forEach((a, k) => {
          f.get(a).get(p).v128_load(16 * k);
          combine(f, op);
          f.set(a);
        });
        f.get(p).get(rs).i32_add().set(p);
      });
      acc.forEach((a, k) => {
        f.get(out).get(j0).i32(2).i32_shl().i32_add().get(a);
        if (op === 'mean') f.get(R).f32_convert_i32_s().f32x4_splat().f32x4_div();
        f.v128_store(16 * k);
      });
    }, () => {
      // the last columns, one at a time
      f.for(l, 0, n, 1, () => {
        f.f32x4(pad).set(acc[0]);
        f.get(x).get(j0).get(l).i32_add().i32(2).i32_shl().i32_add().set(p);
        f.for(r, 0, R, 1, () => {
          f.get(acc[0]).get(p).f32_load().f32x4_splat();
          combine(f, op);
          f.set(acc[0]);
          f.get(p).get(rs).i32_add().set(p);
        });
        f.get(out).get(j0).get(l).i32_add().i32(2).i32_shl().i32_add().get(acc[0]).f32x4_extract_lane(0);
        if (op === 'mean') f.get(R).f32_convert_i32_s().f32_div();
        f.f32_store();
      });
    });
  });
  return f;
}

/** One merged (size, stride) for dims [from, to) of t, or null when they do not merge. */
function merged(t: Tensor, from: number, to: number): { n: number; s: number } | null {
  let n = 1;
  let s = 0;
  for (let d = to - 1; d >= from; d--) {
    if (t.shape[d] === 1) continue;
    if (n === 1) {
      n = t.shape[d];
      s = t.strides[d];
    } else if (t.strides[d] === s * n) n *= t.shape[d];
    else return null;
  }
  return { n, s: n === 1 ? 1 : s };
}

const ptrOf = (t: Tensor): number => (t.storage as WasmStorage).ptr + 4 * t.offset;

/** False when this op has no kernel here (argmax, int32). */
export function reduce(op: ReduceOp, x: Tensor, reducedRank: number, out: Tensor): boolean {
  if (op === 'argmax' || x.dtype !== 'float32') return false;
  if (out.size === 0) return true;
  const rt = runtime();
  const split = x.rank - reducedRank;
  let src = x;
  let kept = merged(x, 0, split);
  let red = merged(x, split, x.rank);
  const columns = kept && red && kept.s === 1 && red.n > 1 && kept.n >= 4;
  if (!columns && (!kept || !red || red.s !== 1)) {
    src = x.contiguous();
    kept = merged(src, 0, split)!;
    red = merged(src, split, src.rank)!;
  }
  try {
    const R = red!.n;
    if (R === 0) {
      (out.storage as WasmStorage).data.fill(op === 'max' ? -Infinity : op === 'mean' ? NaN : 0, out.offset, out.offset + out.size);
      return true;
    }
    const args = new Args(rt);
    if (columns) {
      args.i32s(0, [kept!.n, R, ptrOf(src), red!.s, ptrOf(out)]);
      const k = rt.pool.kernel(`reduce.columns.${op}`, () => spec(columnKernel(op)));
      rt.pool.run(k, ARGS_PTR, Math.ceil(kept!.n / COLUMNS), Math.max(1, Math.floor(4096 / R)), out.size * R >= 1 << 15);
    } else {
      args.i32s(0, [out.size, R, ptrOf(src), kept!.n === 1 ? 0 : kept!.s, ptrOf(out)]);
      const k = rt.pool.kernel(`reduce.rows.${op}`, () => spec(rowKernel(op)));
      rt.pool.run(k, ARGS_PTR, out.size, Math.max(1, Math.floor(16384 / R)), out.size * R >= 1 << 15);
    }
    return true;
  } finally {
    if (src !== x) src.dispose();
  }
}
