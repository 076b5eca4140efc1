/**
 * One AdamW step in place (decoupled weight decay, then Adam with bias correction, as
 * torch.optim.AdamW), SIMD over the elements; item = a chunk of 4096. param, m, v dense; grad
 * dense (the front end copies a strided gradient once).
 */
import type { AdamWHyper } from '../../../tensor/backend.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { Func, type Local } from '../emit.js';
import { MAX_PAGES, WasmStorage } from '../memory.js';
import { Args, ARGS_PTR, runtime } from '../runtime.js';

const CHUNK = 4096;

/**
 * The AdamW update of one element position `at` (a byte offset into param P, grad G, m M, v V),
 * as 4 SIMD lanes (`vector`) or one scalar (`scalar`); h = [1 - lr wd, beta1, 1 - beta1, beta2,
 * 1 - beta2, lr / c1, 1 / c2, eps] splatted. Shared by this kernel and the multi-tensor one.
 */
export function adamwElement(f: Func, [P, G, M, V]: readonly Local[], h: readonly Local[]): { vector: (at: Local) => void; scalar: (at: Local) => void } {
  const [decay, b1, ob1, b2, ob2, step, ic2, eps] = h;
  const [g, m, v] = [f.local('v128'), f.local('v128'), f.local('v128')];
  const [gs, ms, vs, ps] = [f.local('f32'), f.local('f32'), f.local('f32'), f.local('f32')];
  const lane = (l: Local) => f.get(l).f32x4_extract_lane(0);
  const vector = (at: Local) => {
    f.get(G).get(at).i32_add().v128_load().set(g);
    f.get(b1).get(M).get(at).i32_add().v128_load().f32x4_mul().get(ob1).get(g).f32x4_mul().f32x4_add().set(m);
    f.get(b2).get(V).get(at).i32_add().v128_load().f32x4_mul().get(ob2).get(g).get(g).f32x4_mul().f32x4_mul().f32x4_add().set(v);
    f.get(M).get(at).i32_add().get(m).v128_store();
    f.get(V).get(at).i32_add().get(v).v128_store();
    // p = p (1 - lr wd) - (lr / c1) m / (sqrt(v / c2) + eps)
    f.get(P).get(at).i32_add();
    f.get(P).get(at).i32_add().v128_load().get(decay).f32x4_mul();
    f.get(step).get(m).f32x4_mul().get(v).get(ic2).f32x4_mul().f32x4_sqrt().get(eps).f32x4_add().f32x4_div().f32x4_sub();
    f.v128_store();
  };
  const scalar = (at: Local) => {
    f.get(G).get(at).i32_add().f32_load().set(gs);
    lane(b1); f.get(M).get(at).i32_add().f32_load().f32_mul(); lane(ob1); f.get(gs).f32_mul().f32_add().set(ms);
    lane(b2); f.get(V).get(at).i32_add().f32_load().f32_mul(); lane(ob2); f.get(gs).get(gs).f32_mul().f32_mul().f32_add().set(vs);
    f.get(M).get(at).i32_add().get(ms).f32_store();
    f.get(V).get(at).i32_add().get(vs).f32_store();
    f.get(P).get(at).i32_add().f32_load(); lane(decay); f.f32_mul();
    lane(step); f.get(ms).f32_mul().get(vs); lane(ic2); f.f32_mul().f32_sqrt(); lane(eps); f.f32_add().f32_div().f32_sub().set(ps);
    f.get(P).get(at).i32_add().get(ps).f32_store();
  };
  return { vector, scalar };
}

/** args: 0 n, 1 param, 2 grad, 3 m, 4 v, then f32: 5 1 - lr wd, 6 beta1, 7 1 - beta1, 8 beta2, 9 1 - beta2, 10 lr / c1, 11 1 / c2, 12 eps. */
function adamwKernel(): Func {
  const f = new Func(['i32', 'i32', 'i32']);
  const [args, lo, hi] = f.params;
  const [n, P, G, M, V, item, i0, i1, i, at] = Array.from({ length: 10 }, () => f.local('i32'));
  const h = Array.from({ length: 8 }, () => f.local('v128'));
  const update = adamwElement(f, [P, G, M, V], h);
  [n, P, G, M, V].forEach((l, k) => f.get(args).i32_load(4 * k).set(l));
  h.forEach((l, k) => f.get(args).f32_load(4 * (5 + k)).f32x4_splat().set(l));
  f.for(item, lo, hi, 1, () => {
    f.get(item).i32(CHUNK).i32_mul().set(i0);
    f.get(i0).i32(CHUNK).i32_add().set(i1);
    f.get(i1).get(n).i32_gt_s().if(() => void f.get(n).set(i1));
    f.get(i0).set(i);
    f.block((exit) => f.loop((repeat) => {
      f.get(i).i32(4).i32_add().get(i1).i32_gt_s().brIf(exit);
      f.get(i).i32(2).i32_shl().set(at);
      update.vector(at);
      f.get(i).i32(4).i32_add().set(i).br(repeat);
    }));
    // the last n % 4 elements in scalars
    f.block((exit) => f.loop((repeat) => {
      f.get(i).get(i1).i32_ge_s().brIf(exit);
      f.get(i).i32(2).i32_shl().set(at);
      update.scalar(at);
      f.get(i).i32(1).i32_add().set(i).br(repeat);
    }));
  });
  return f;
}

const ptrOf = (t: Tensor): number => (t.storage as WasmStorage).ptr + 4 * t.offset;

export function adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWHyper): void {
  const rt = runtime();
  const g = grad.contiguous();
  try {
    const c1 = 1 - h.beta1 ** h.step;
    const c2 = 1 - h.beta2 ** h.step;
    const args = new Args(rt).i32s(0, [param.size, ptrOf(param), ptrOf(g), ptrOf(m), ptrOf(v)]);
    [1 - h.lr * h.weightDecay, h.beta1, 1 - h.beta1, h.beta2, 1 - h.beta2, h.lr / c1, 1 / c2, h.eps].forEach((x, k) => args.f32(5 + k, x));
    const k = rt.pool.kernel('adamw', () => ({ funcs: [{ name: 'run', func: adamwKernel() }], maxPages: MAX_PAGES, globals: ['tid', 'scratch'] }));
    rt.pool.run(k, ARGS_PTR, Math.ceil(param.size / CHUNK), 4, param.size >= 1 << 16);
  } finally {
    g.dispose();
  }
}
