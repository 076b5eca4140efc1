/**
 * Elementwise kernels over strided views with broadcasting: unary maps and their gradients,
 * binary ops and comparisons, where, and copies (with dtype conversion). Dims that are
 * contiguous relative to each other in every operand are merged first (a dense tensor is one
 * dim), leaving at most 6; an item is a chunk of the innermost dim of one row, and each
 * operand's innermost dim is read by its stride class, chosen when the kernel is generated:
 * dense (v128 loads), broadcast (one splat) or strided (four lane loads). No per-element
 * index arrays. The last partial vector clamps its lanes to the row's end and stores only the
 * valid ones.
 */
import type { BinaryOp, UnaryOp } from '../../../tensor/backend.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { Func, type Local } from '../emit.js';
import { MAX_PAGES, WasmStorage } from '../memory.js';
import { Args, ARGS_PTR, runtime } from '../runtime.js';
import { erf4, exp4, log4, mathTemps, sigmoid4, tanh4, type MathTemps } from './simd-math.js';

const spec = (f: Func) => ({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES, globals: ['tid', 'scratch'] });
const CHUNK = 4096;
const RANK = 6;

type Stride = 'c' | 'b' | 's';
type Kind = 'f32' | 'i32';

/** Computes the output vector from the input vectors (locals) into `out`. */
type Body = (f: Func, ins: Local[], out: Local, m: MathScratch) => void;

interface MathScratch {
  t: MathTemps;
  u: Local;
  w: Local;
  y: Local;
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** y = tanh(sqrt(2/pi) (x + 0.044715 x^3)) into m.y (for gelu and its derivative). */
function geluTanhInner(f: Func, x: Local, m: MathScratch): void {
  f.get(x).get(x).get(x).f32x4_mul().get(x).f32x4_mul().f32x4(0.044715).f32x4_mul().f32x4_add().f32x4(SQRT_2_OVER_PI).f32x4_mul().set(m.y);
  tanh4(f, m.y, m.t, m.u, m.w);
  f.set(m.y);
}

const UNARY_BODIES: Record<UnaryOp, Body> = {
  neg: (f, [x], o) => void f.get(x).f32x4_neg().set(o),
  abs: (f, [x], o) => void f.get(x).f32x4_abs().set(o),
  exp: (f, [x], o, m) => { exp4(f, x, m.t); f.set(o); },
  log: (f, [x], o, m) => { log4(f, x, m.t, m.u); f.set(o); },
  sqrt: (f, [x], o) => void f.get(x).f32x4_sqrt().set(o),
  rsqrt: (f, [x], o) => void f.f32x4(1).get(x).f32x4_sqrt().f32x4_div().set(o),
  tanh: (f, [x], o, m) => { tanh4(f, x, m.t, m.u, m.w); f.set(o); },
  sigmoid: (f, [x], o, m) => { sigmoid4(f, x, m.t, m.u); f.set(o); },
  // x > 0 ? x : 0 (NaN -> 0, as the reference)
  relu: (f, [x], o) => void f.f32x4(0).get(x).f32x4_pmax().set(o),
  // 0.5 x (1 + tanh u) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): one exp, one division
  gelu: (f, [x], o, m) => {
    f.get(x).get(x).get(x).f32x4_mul().get(x).f32x4_mul().f32x4(0.044715).f32x4_mul().f32x4_add().f32x4(-2 * SQRT_2_OVER_PI).f32x4_mul().set(m.y);
    exp4(f, m.y, m.t);
    f.set(m.y);
    f.get(x).f32x4(1).get(m.y).f32x4_add().f32x4_div().set(o);
  },
  geluErf: (f, [x], o, m) => {
    f.get(x).f32x4(Math.SQRT1_2).f32x4_mul().set(m.y);
    erf4(f, m.y, m.t, m.u, m.w);
    f.f32x4(1).f32x4_add().get(x).f32x4_mul().f32x4(0.5).f32x4_mul().set(o);
  },
  silu: (f, [x], o, m) => { sigmoid4(f, x, m.t, m.u); f.get(x).f32x4_mul().set(o); },
};

/** gy * f'(x): inputs [x, gy]. */
const UNARY_GRAD_BODIES: Record<UnaryOp, Body> = {
  neg: (f, [, g], o) => void f.get(g).f32x4_neg().set(o),
  // sign(x) g: +1, -1, or 0 at 0
  abs: (f, [x, g], o) => {
    f.f32x4(1).get(x).i32x4(0x80000000).v128_and().v128_or();
    f.f32x4(0).get(x).f32x4(0).f32x4_ne().v128_bitselect().get(g).f32x4_mul().set(o);
  },
  exp: (f, [x, g], o, m) => { exp4(f, x, m.t); f.get(g).f32x4_mul().set(o); },
  log: (f, [x, g], o) => void f.get(g).get(x).f32x4_div().set(o),
  sqrt: (f, [x, g], o) => void f.get(g).f32x4(0.5).f32x4_mul().get(x).f32x4_sqrt().f32x4_div().set(o),
  rsqrt: (f, [x, g], o) => void f.get(g).f32x4(-0.5).f32x4_mul().get(x).get(x).f32x4_sqrt().f32x4_mul().f32x4_div().set(o),
  tanh: (f, [x, g], o, m) => {
    tanh4(f, x, m.t, m.u, m.w);
    f.set(m.y);
    f.f32x4(1).get(m.y).get(m.y).f32x4_mul().f32x4_sub().get(g).f32x4_mul().set(o);
  },
  sigmoid: (f, [x, g], o, m) => {
    sigmoid4(f, x, m.t, m.u);
    f.set(m.y);
    f.f32x4(1).get(m.y).f32x4_sub().get(m.y).f32x4_mul().get(g).f32x4_mul().set(o);
  },
  relu: (f, [x, g], o) => void f.get(g).f32x4(0).get(x).f32x4(0).f32x4_gt().v128_bitselect().set(o),
  gelu: (f, [x, g], o, m) => {
    // 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2)
    geluTanhInner(f, x, m);
    f.get(m.y).f32x4(1).f32x4_add().f32x4(0.5).f32x4_mul();
    f.f32x4(1).get(m.y).get(m.y).f32x4_mul().f32x4_sub().get(x).f32x4_mul().f32x4(0.5 * SQRT_2_OVER_PI).f32x4_mul();
    f.get(x).get(x).f32x4_mul().f32x4(3 * 0.044715).f32x4_mul().f32x4(1).f32x4_add().f32x4_mul();
    f.f32x4_add().get(g).f32x4_mul().set(o);
  },
  geluErf: (f, [x, g], o, m) => {
    // 0.5 (1 + erf(x / sqrt 2)) + x e^(-x^2/2) / sqrt(2 pi)
    f.get(x).f32x4(Math.SQRT1_2).f32x4_mul().set(m.y);
    erf4(f, m.y, m.t, m.u, m.w);
    f.f32x4(1).f32x4_add().f32x4(0.5).f32x4_mul().set(m.y);
    f.get(x).get(x).f32x4_mul().f32x4(-0.5).f32x4_mul().set(m.w);
    exp4(f, m.w, m.t);
    f.get(x).f32x4_mul().f32x4(1 / Math.sqrt(2 * Math.PI)).f32x4_mul().get(m.y).f32x4_add().get(g).f32x4_mul().set(o);
  },
  silu: (f, [x, g], o, m) => {
    // s + x s (1 - s)
    sigmoid4(f, x, m.t, m.u);
    f.set(m.y);
    f.get(m.y).get(x).get(m.y).f32x4_mul().f32x4(1).get(m.y).f32x4_sub().f32x4_mul().f32x4_add().get(g).f32x4_mul().set(o);
  },
};

const F32_BINARY: Partial<Record<BinaryOp, Body>> = {
  add: (f, [a, b], o) => void f.get(a).get(b).f32x4_add().set(o),
  sub: (f, [a, b], o) => void f.get(a).get(b).f32x4_sub().set(o),
  mul: (f, [a, b], o) => void f.get(a).get(b).f32x4_mul().set(o),
  div: (f, [a, b], o) => void f.get(a).get(b).f32x4_div().set(o),
  maximum: (f, [a, b], o) => void f.get(a).get(b).f32x4_max().set(o),
  minimum: (f, [a, b], o) => void f.get(a).get(b).f32x4_min().set(o),
  eq: (f, [a, b], o) => void f.get(a).get(b).f32x4_eq().f32x4(1).v128_and().set(o),
  ne: (f, [a, b], o) => void f.get(a).get(b).f32x4_ne().f32x4(1).v128_and().set(o),
  lt: (f, [a, b], o) => void f.get(a).get(b).f32x4_lt().f32x4(1).v128_and().set(o),
  le: (f, [a, b], o) => void f.get(a).get(b).f32x4_le().f32x4(1).v128_and().set(o),
  gt: (f, [a, b], o) => void f.get(a).get(b).f32x4_gt().f32x4(1).v128_and().set(o),
  ge: (f, [a, b], o) => void f.get(a).get(b).f32x4_ge().f32x4(1).v128_and().set(o),
};

const I32_BINARY: Partial<Record<BinaryOp, Body>> = {
  add: (f, [a, b], o) => void f.get(a).get(b).i32x4_add().set(o),
  sub: (f, [a, b], o) => void f.get(a).get(b).i32x4_sub().set(o),
  mul: (f, [a, b], o) => void f.get(a).get(b).i32x4_mul().set(o),
  maximum: (f, [a, b], o) => void f.get(a).get(b).i32x4_max_s().set(o),
  minimum: (f, [a, b], o) => void f.get(a).get(b).i32x4_min_s().set(o),
  eq: (f, [a, b], o) => void f.get(a).get(b).i32x4_eq().i32x4(1).v128_and().set(o),
  ne: (f, [a, b], o) => void f.get(a).get(b).i32x4_ne().i32x4(1).v128_and().set(o),
  lt: (f, [a, b], o) => void f.get(a).get(b).i32x4_lt_s().i32x4(1).v128_and().set(o),
  le: (f, [a, b], o) => void f.get(a).get(b).i32x4_le_s().i32x4(1).v128_and().set(o),
  gt: (f, [a, b], o) => void f.get(a).get(b).i32x4_gt_s().i32x4(1).v128_and().set(o),
  ge: (f, [a, b], o) => void f.get(a).get(b).i32x4_ge_s().i32x4(1).v128_and().set(o),
};

/**
 * The map kernel: out = body(inputs) over [n0, ..., n5]. args: RANK sizes, chunks per row,
 * then per operand (output first) its byte address and RANK element strides.
 */
function mapKernel(classes: readonly Stride[], body: Body): Func {
  const f = new Func(['i32', 'i32', 'i32']);
  const [args, lo, hi] = f.params;
  const nOps = classes.length; // output, then inputs
  const n = Array.from({ length: RANK }, () => f.local('i32'));
  const per = f.local('i32');
  const ptr = Array.from({ length: nOps }, () => f.local('i32'));
  const st = Array.from({ length: nOps }, () => Array.from({ length: RANK }, () => f.local('i32')));
  const base = Array.from({ length: nOps }, () => f.local('i32'));
  const [item, row, c0, c1, j, idx, r] = Array.from({ length: 7 }, () => f.local('i32'));
  const ins = Array.from({ length: nOps - 1 }, () => f.local('v128'));
  const out = f.local('v128');
  const m: MathScratch = { t: mathTemps(f), u: f.local('v128'), w: f.local('v128'), y: f.local('v128') };
  n.forEach((l, d) => f.get(args).i32_load(4 * d).set(l));
  f.get(args).i32_load(4 * RANK).set(per);
  const W = RANK + 1; // words per operand: address, then RANK strides
  for (let k = 0; k < nOps; k++) {
    f.get(args).i32_load(4 * (RANK + 1 + W * k)).set(ptr[k]);
    // strides in bytes
    st[k].forEach((l, d) => f.get(args).i32_load(4 * (RANK + 2 + W * k + d)).i32(2).i32_shl().set(l));
  }
  f.for(item, lo, hi, 1, () => {
    f.get(item).get(per).i32_div_u().set(row);
    f.get(item).get(per).i32_rem_u().i32(CHUNK).i32_mul().set(c0);
    f.get(c0).i32(CHUNK).i32_add().set(c1);
    f.get(c1).get(n[RANK - 1]).i32_gt_s().if(() => void f.get(n[RANK - 1]).set(c1));
    // row -> (i0, ..., i4); base_k = ptr_k + sum_d i_d s_d + c0 s_inner
    for (let k = 0; k < nOps; k++) f.get(ptr[k]).get(c0).get(st[k][RANK - 1]).i32_mul().i32_add().set(base[k]);
    f.get(row).set(r);
    for (let d = RANK - 2; d >= 0; d--) {
      for (let k = 0; k < nOps; k++) f.get(base[k]).get(r).get(n[d]).i32_rem_u().get(st[k][d]).i32_mul().i32_add().set(base[k]);
      f.get(r).get(n[d]).i32_div_u().set(r);
    }
    // broadcast inputs: one splat per item
    classes.forEach((c, k) => {
      if (k > 0 && c === 'b') f.get(base[k]).v128_load32_splat().set(ins[k - 1]);
    });
    const step = (tail: boolean) => {
      for (let k = 1; k < nOps; k++) {
        const c = classes[k];
        if (c === 'b') continue;
        if (c === 'c' && !tail) {
          f.get(base[k]).get(j).i32(2).i32_shl().i32_add().v128_load().set(ins[k - 1]);
          continue;
        }
        // lane loads: element min(j + l, c1 - 1)
        f.f32x4(0).set(ins[k - 1]);
        for (let l = 0; l < 4; l++) {
          f.get(j).i32(l).i32_add().get(c1).i32(1).i32_sub().get(j).i32(l).i32_add().get(c1).i32(1).i32_sub().i32_lt_s().select().set(idx);
          f.get(ins[k - 1]).get(base[k]).get(idx).get(st[k][RANK - 1]).i32_mul().i32_add().f32_load().f32x4_replace_lane(l).set(ins[k - 1]);
        }
      }
      body(f, ins, out, m);
      if (classes[0] === 'c' && !tail) {
        f.get(base[0]).get(j).i32(2).i32_shl().i32_add().get(out).v128_store();
        return;
      }
      for (let l = 0; l < 4; l++) {
        const store = () => void f.get(base[0]).get(j).i32(l).i32_add().get(st[0][RANK - 1]).i32_mul().i32_add().get(out).f32x4_extract_lane(l).f32_store();
        if (tail) f.get(j).i32(l).i32_add().get(c1).i32_lt_s().if(store);
        else store();
      }
    };
    // vectors while 4 fit, then the tail (j counts from the chunk's start)
    f.get(c1).get(c0).i32_sub().set(c1);
    f.i32(0).set(j);
    f.block((exit) => {
      f.loop((repeat) => {
        f.get(j).i32(4).i32_add().get(c1).i32_gt_s().brIf(exit);
        step(false);
        f.get(j).i32(4).i32_add().set(j).br(repeat);
      });
    });
    f.get(j).get(c1).i32_lt_s().if(() => step(true));
  });
  return f;
}

/** Merges dims contiguous in every operand; drops size-1 dims. Null when more than RANK remain. */
function coalesce(shape: readonly number[], strides: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } | null {
  const dims: { n: number; s: number[] }[] = [];
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const s = strides.map((x) => x[d]);
    const last = dims[dims.length - 1];
    if (last && strides.every((_, k) => last.s[k] === s[k] * shape[d])) {
      last.n *= shape[d];
      last.s = s;
    } else dims.push({ n: shape[d], s });
  }
  if (dims.length > RANK) return null;
  while (dims.length < RANK) dims.unshift({ n: 1, s: strides.map(() => 0) });
  return { shape: dims.map((x) => x.n), strides: strides.map((_, k) => dims.map((x) => x.s[k])) };
}

const strideClass = (s: number): Stride => (s === 1 ? 'c' : s === 0 ? 'b' : 's');
const ptrOf = (t: Tensor): number => (t.storage as WasmStorage).ptr + 4 * t.offset;

/** Runs `body` over out (any view) and inputs (views of out's shape). False when the views need more than 6 dims. */
function map(key: string, out: Tensor, inputs: readonly Tensor[], body: Body): boolean {
  if (out.size === 0) return true;
  const ops = [out, ...inputs];
  const c = coalesce(out.shape, ops.map((t) => t.strides));
  if (!c) return false;
  const rt = runtime();
  const classes = c.strides.map((s) => strideClass(s[RANK - 1]));
  // the output's innermost dim must be written lane by lane unless dense
  if (classes[0] === 'b') classes[0] = 's';
  const k = rt.pool.kernel(`map.${key}.${classes.join('')}`, () => spec(mapKernel(classes, body)));
  const inner = c.shape[RANK - 1];
  const per = Math.ceil(inner / CHUNK);
  const rows = c.shape.slice(0, -1).reduce((x, y) => x * y, 1);
  const args = new Args(rt).i32s(0, [...c.shape, per]);
  ops.forEach((t, i) => args.i32(RANK + 1 + (RANK + 1) * i, ptrOf(t)).i32s(RANK + 2 + (RANK + 1) * i, c.strides[i]));
  rt.pool.run(k, ARGS_PTR, rows * per, Math.max(1, Math.floor(CHUNK / Math.min(CHUNK, inner))), out.size >= 1 << 15);
  return true;
}

export function unary(op: UnaryOp, x: Tensor, out: Tensor): boolean {
  return map(`unary.${op}`, out, [x], UNARY_BODIES[op]);
}

export function unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor, out: Tensor): boolean {
  return map(`unaryGrad.${op}`, out, [x, gy], UNARY_GRAD_BODIES[op]);
}

/** False when the op has no kernel for this dtype (pow; int32 div). */
export function binary(op: BinaryOp, a: Tensor, b: Tensor, out: Tensor): boolean {
  const kind: Kind = a.dtype === 'int32' ? 'i32' : 'f32';
  const body = (kind === 'f32' ? F32_BINARY : I32_BINARY)[op];
  return !!body && map(`binary.${kind}.${op}`, out, [a, b], body);
}

export function where(cond: Tensor, a: Tensor, b: Tensor, out: Tensor): boolean {
  const floatCond = cond.dtype !== 'int32';
  return map(`where.${floatCond ? 'f' : 'i'}`, out, [cond, a, b], (f, [c, x, y], o) => {
    f.get(x).get(y).get(c);
    if (floatCond) f.f32x4(0).f32x4_ne();
    else f.i32x4(0).i32x4_ne();
    f.v128_bitselect().set(o);
  });
}

/** out (any view) = x with dtype conversion (float -> int32 truncates toward zero). */
export function copy(x: Tensor, out: Tensor): boolean {
  const conv = x.dtype === out.dtype ? 'same' : out.dtype === 'int32' ? 'toInt' : 'toFloat';
  return map(`copy.${conv}`, out, [x], (f, [v], o) => {
    f.get(v);
    if (conv === 'toInt') f.i32x4_trunc_sat_f32x4_s();
    else if (conv === 'toFloat') f.f32x4_convert_i32x4_s();
    f.set(o);
  });
}

/**
 * A fused linear layer's epilogue over out [M, N] (any view), in one pass: out = act(z + bias)
 * + residual, with z [M, N], bias broadcast over rows ([M, N] view with row stride 0) and
 * residual optional. `act` 'none' with no residual is the bias add alone.
 */
export function linearEpilogue(act: 'none' | 'gelu' | 'geluErf', z: Tensor, bias: Tensor | null, residual: Tensor | null, out: Tensor): boolean {
  const inputs = [z, ...(bias ? [bias] : []), ...(residual ? [residual] : [])];
  const key = `linear.${act}.${bias ? 'b' : ''}${residual ? 'r' : ''}`;
  return map(key, out, inputs, (f, ins, o, m) => {
    const [zv] = ins;
    if (bias) f.get(zv).get(ins[1]).f32x4_add().set(zv);
    if (act === 'none') f.get(zv).set(o);
    else UNARY_BODIES[act](f, [zv], o, m);
    if (residual) f.get(o).get(ins[ins.length - 1]).f32x4_add().set(o);
  });
}
