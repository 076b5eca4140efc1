/**
 * Optimizers (AdamW, SGD), gradient clipping and learning-rate schedules.
 *
 *   const opt = new AdamW(paramGroups(model.namedParameters(), { weightDecay: 0.01 }), { lr: 1e-4 });
 *   const sched = new LRScheduler(opt, warmupCosine({ peak: 1e-4, min: 5e-5, warmupSteps: 1000, totalSteps: 2000 }));
 *   for (...) {
 *     tidy(() => { loss(batch).backward(); });
 *     clipGradNorm(opt.params(), 1.0).dispose();   // on device, no read-back
 *     opt.step();
 *     opt.zeroGrad();
 *     sched.step();
 *   }
 *
 * Parameters live in groups; each group has its own learning rate and weight decay. A group's
 * `lrScale` ties it to the schedule: the scheduler sets `group.lr = schedule(step) * lrScale`,
 * which is how the LLaVA-UHD recipe trains non-LLM parameters at x0.2 the LLM's rate.
 *
 * Optimizer state (moments, momentum buffers) is created lazily, the first time a parameter
 * has a gradient, so frozen parameters never get any. State tensors are `keep()`-ed: a `tidy`
 * around a training step leaves them alone, and after the first step a loop of steps holds
 * `memory()` flat.
 */
import { noGrad, zeroGrad as clearGrads } from '../autograd/index.js';
import { add, adamwStep, adamwSteps, assign, cast, clone, div, getBackend, keep, minimum, mul, scaleManyInPlace, sqrt, sub, sumOfSquares, tidy, Tensor, zeros, type AdamWItem } from '../tensor/index.js';
import { fmt, shapesEqual } from '../tensor/shape.js';

// ---- the LLaVA-UHD recipe ------------------------------------------------------------------

/**
 * The optimizer settings of the LLaVA-UHD v4 recipe (LLAVA-UHD-V4.md, "Training: four
 * stages"): AdamW with betas (0.9, 0.98), weight decay 0.01 except on biases and norms,
 * gradient clipping at global norm 1.0, and non-LLM parameters at x0.2 the LR in stages 2
 * and 3. The classes below keep PyTorch's defaults; pass these explicitly.
 */
export const LLAVA_UHD_ADAMW = {
  betas: [0.9, 0.98],
  eps: 1e-8,
  weightDecay: 0.01,
  maxGradNorm: 1.0,
  nonLlmLrScale: 0.2,
} as const;

// ---- parameter groups ----------------------------------------------------------------------

/** A group as given to an optimizer: a bare list of parameters is one group. */
export interface ParamGroupSpec {
  params: Tensor[];
  /** This group's LR; default `defaults.lr * lrScale`. */
  lr?: number;
  /** Multiplies the schedule's LR for this group; default `lr / defaults.lr` when `lr` is given, else 1. */
  lrScale?: number;
  weightDecay?: number;
  name?: string;
  /** The parameters' names, parallel to `params` (used in error messages). */
  paramNames?: string[];
}

/** A group inside an optimizer; `lr` is the current rate (the scheduler rewrites it). */
export interface ParamGroup {
  readonly params: readonly Tensor[];
  lr: number;
  lrScale: number;
  weightDecay: number;
  readonly name: string;
  readonly paramNames?: readonly string[];
}

/**
 * The default rule for which parameters get no weight decay: biases, norm weights and every
 * tensor of rank <= 1 (LLaVA-UHD recipe: "weight decay 0.01, none on biases and norms").
 * Names follow the Hugging Face conventions (`...self_attn.q_proj.bias`,
 * `...input_layernorm.weight`, `...layer_norm1.weight`, `transformer.ln_f.weight`).
 */
export function isNoDecay(name: string, p: Tensor): boolean {
  if (p.rank <= 1) return true;
  const n = name.toLowerCase();
  if (n === 'bias' || n.endsWith('.bias')) return true;
  if (n.includes('norm')) return true; // norm, layernorm, layer_norm, rmsnorm, q_norm
  // 'ln' only as a name segment (ln, ln_f, ln_1, ln1), not inside words
  return /(^|[._])ln(\d*|_[a-z0-9]+)($|[._])/.test(n);
}

export interface ParamGroupsOptions {
  /** Weight decay of the decay group (the recipe uses 0.01). */
  weightDecay: number;
  /** Which parameters get no weight decay (default `isNoDecay`). */
  noDecay?: (name: string, p: Tensor) => boolean;
  /** LR multiplier per parameter (default 1); e.g. 0.2 for non-LLM parameters in stages 2-3. */
  lrScale?: (name: string, p: Tensor) => number;
  /** Also take parameters with `requiresGrad` false (default: frozen parameters are left out). */
  includeFrozen?: boolean;
}

/**
 * Splits named parameters into groups by (decays?, LR scale): `decay`, `no_decay`, and for
 * other scales `decay x0.2`, `no_decay x0.2`, ... in order of first appearance. Empty groups
 * are dropped, as are frozen parameters unless `includeFrozen`.
 */
export function paramGroups(named: Iterable<readonly [string, Tensor]>, opts: ParamGroupsOptions): ParamGroupSpec[] {
  checkNonNegative('paramGroups', 'weightDecay', opts.weightDecay);
  const noDecay = opts.noDecay ?? isNoDecay;
  const groups = new Map<string, ParamGroupSpec & { paramNames: string[] }>();
  const seen = new Set<Tensor>();
  for (const [name, p] of named) {
    if (!(p instanceof Tensor)) throw new Error(`paramGroups: '${name}' is not a Tensor`);
    if (seen.has(p)) continue; // tied weights appear once
    seen.add(p);
    if (!p.requiresGrad && !opts.includeFrozen) continue;
    const decays = !noDecay(name, p);
    const scale = opts.lrScale?.(name, p) ?? 1;
    if (!Number.isFinite(scale) || scale < 0) throw new Error(`paramGroups: lrScale('${name}') is ${scale}, expected a finite number >= 0`);
    const key = `${decays ? 'decay' : 'no_decay'}${scale === 1 ? '' : ` x${scale}`}`;
    let g = groups.get(key);
    if (!g) {
      g = { name: key, params: [], paramNames: [], weightDecay: decays ? opts.weightDecay : 0, lrScale: scale };
      groups.set(key, g);
    }
    g.params.push(p);
    g.paramNames.push(name);
  }
  return [...groups.values()];
}

// ---- the optimizer base --------------------------------------------------------------------

/** Per-parameter state: `step` counts the updates this parameter has received. */
export interface ParamState {
  step: number;
}

/** A checkpointable snapshot: `state` is keyed by the parameter's index over all groups in order. */
export interface OptimizerStateDict<S extends ParamState = ParamState> {
  /** Number of `step()` calls. */
  step: number;
  groups: { name: string; lr: number; lrScale: number; weightDecay: number; params: number[]; [hyper: string]: unknown }[];
  state: Record<number, S>;
}

interface BaseDefaults {
  lr: number;
  weightDecay: number;
}

/** Groups, lazily created per-parameter state, stateDict: what AdamW and SGD share. */
export abstract class Optimizer<S extends ParamState = ParamState> {
  readonly groups: ParamGroup[];
  /** Per-parameter state, present only for parameters that have been updated. */
  readonly state = new Map<Tensor, S>();
  /** Number of `step()` calls so far. */
  stepCount = 0;
  /** State tensors of S, by field name (e.g. ['m', 'v']). */
  protected abstract readonly stateTensorKeys: readonly (keyof S & string)[];

  protected constructor(
    readonly kind: string,
    groups: readonly Tensor[] | readonly ParamGroupSpec[],
    defaults: BaseDefaults,
  ) {
    checkNonNegative(kind, 'lr', defaults.lr);
    checkNonNegative(kind, 'weightDecay', defaults.weightDecay);
    const specs: ParamGroupSpec[] = groups.length === 0 || groups[0] instanceof Tensor
      ? [{ params: [...(groups as readonly Tensor[])] }]
      : [...(groups as readonly ParamGroupSpec[])];
    const seen = new Set<Tensor>();
    this.groups = specs.map((s, gi) => {
      const name = s.name ?? `group${gi}`;
      if (!Array.isArray(s.params)) throw new Error(`${kind}: group '${name}' has no params array`);
      if (s.paramNames && s.paramNames.length !== s.params.length) {
        throw new Error(`${kind}: group '${name}' has ${s.params.length} params but ${s.paramNames.length} paramNames`);
      }
      s.params.forEach((p, i) => {
        const label = `group '${name}' parameter ${i}${s.paramNames ? ` ('${s.paramNames[i]}')` : ''}`;
        if (!(p instanceof Tensor)) throw new Error(`${kind}: ${label} is not a Tensor`);
        if (seen.has(p)) throw new Error(`${kind}: ${label} appears in more than one place; each parameter belongs to one group`);
        seen.add(p);
        if (p.dtype !== 'float32' && p.dtype !== 'float64') throw new Error(`${kind}: ${label} has dtype ${p.dtype}; only float parameters can be optimized`);
        if (!p.isContiguous) throw new Error(`${kind}: ${label} ${fmt(p.shape)} is a strided view; parameters must be contiguous (they are updated in place)`);
      });
      if (s.lr !== undefined) checkNonNegative(kind, `group '${name}' lr`, s.lr);
      if (s.lrScale !== undefined) checkNonNegative(kind, `group '${name}' lrScale`, s.lrScale);
      if (s.weightDecay !== undefined) checkNonNegative(kind, `group '${name}' weightDecay`, s.weightDecay);
      const lrScale = s.lrScale ?? (s.lr !== undefined && defaults.lr > 0 ? s.lr / defaults.lr : 1);
      return {
        params: [...s.params],
        lr: s.lr ?? defaults.lr * lrScale,
        lrScale,
        weightDecay: s.weightDecay ?? defaults.weightDecay,
        name,
        ...(s.paramNames ? { paramNames: [...s.paramNames] } : {}),
      };
    });
  }

  /** Every parameter, in group order (the order that stateDict indices count). */
  params(): Tensor[] {
    return this.groups.flatMap((g) => g.params);
  }

  /** Disposes and clears the gradients of every parameter. */
  zeroGrad(): void {
    clearGrads(this.params());
  }

  /**
   * Updates every parameter that has a gradient (and still requires one); the others are
   * skipped and get no state. Runs without recording and allocates state on first use only.
   */
  step(): void {
    noGrad(() => {
      for (const group of this.groups) {
        for (const p of group.params) {
          const grad = p.grad;
          if (!grad || !p.requiresGrad) continue;
          p.assertAlive(`${this.kind}.step`);
          this.update(p, grad, group);
        }
      }
    });
    this.stepCount++;
  }

  /** One parameter's update, in place; creates its state on first call. */
  protected abstract update(p: Tensor, grad: Tensor, group: ParamGroup): void;

  /** Hyper-parameters saved beside each group's lr and weight decay (informational). */
  protected abstract groupHyper(): Record<string, unknown>;

  /** Builds S from a loaded entry whose tensors were already copied (the caller disposes them if this throws). */
  protected abstract restoreState(step: number, tensors: Partial<Record<keyof S & string, Tensor>>, label: string): S;

  /**
   * A snapshot for checkpoints. The tensors are the optimizer's own (not copies): save them,
   * do not dispose them. `flattenStateDict` turns it into names -> tensors for safetensors.
   */
  stateDict(): OptimizerStateDict<S> {
    const index = new Map(this.params().map((p, i) => [p, i]));
    let next = 0;
    const groups = this.groups.map((g) => ({
      name: g.name,
      lr: g.lr,
      lrScale: g.lrScale,
      weightDecay: g.weightDecay,
      params: g.params.map(() => next++),
      ...this.groupHyper(),
    }));
    const state: Record<number, S> = {};
    for (const [p, s] of this.state) state[index.get(p)!] = { ...s };
    return { step: this.stepCount, groups, state };
  }

  /**
   * Restores a snapshot taken from an optimizer over parameters of the same shapes, in the
   * same groups. Tensors are copied (the caller keeps ownership of `sd`) and moved to each
   * parameter's device and dtype. Restores the step count and each group's lr, lrScale and
   * weight decay; other hyper-parameters stay as this optimizer was built.
   */
  loadStateDict(sd: OptimizerStateDict<S>): void {
    const op = `${this.kind}.loadStateDict`;
    if (!sd || typeof sd !== 'object' || !Array.isArray(sd.groups) || typeof sd.state !== 'object') {
      throw new Error(`${op}: expected { step, groups, state }`);
    }
    if (!Number.isInteger(sd.step) || sd.step < 0) throw new Error(`${op}: step is ${sd.step}, expected an integer >= 0`);
    if (sd.groups.length !== this.groups.length) {
      throw new Error(`${op}: the state has ${sd.groups.length} groups, this optimizer ${this.groups.length}`);
    }
    sd.groups.forEach((g, i) => {
      const mine = this.groups[i];
      if (!Array.isArray(g.params) || g.params.length !== mine.params.length) {
        throw new Error(`${op}: group ${i} ('${mine.name}') has ${mine.params.length} parameters, the state's group '${g.name}' ${g.params?.length}`);
      }
      for (const key of ['lr', 'lrScale', 'weightDecay'] as const) checkNonNegative(op, `group ${i} ${key}`, g[key]);
    });
    const params = this.params();
    const labels = this.groups.flatMap((g) => g.params.map((_, j) => (g.paramNames ? ` ('${g.paramNames[j]}')` : '')));
    // Check and copy everything before touching this optimizer, so a bad state changes nothing.
    const restored = new Map<Tensor, S>();
    try {
      for (const [key, entry] of Object.entries(sd.state)) {
        const i = Number(key);
        if (!Number.isInteger(i) || i < 0 || i >= params.length) {
          throw new Error(`${op}: state for parameter ${key}, but there are ${params.length} parameters`);
        }
        const p = params[i];
        const label = `parameter ${i}${labels[i]} ${fmt(p.shape)}`;
        if (!entry || typeof entry !== 'object') throw new Error(`${op}: state of ${label} is not an object`);
        const step = (entry as ParamState).step;
        if (!Number.isInteger(step) || step < 0) throw new Error(`${op}: state of ${label} has step ${step}, expected an integer >= 0`);
        const tensors: Partial<Record<keyof S & string, Tensor>> = {};
        try {
          for (const name of this.stateTensorKeys) {
            const src = (entry as unknown as Record<string, unknown>)[name];
            if (src === undefined || src === null) continue;
            tensors[name] = copyStateTensor(op, `state of ${label}: ${name}`, src, p);
          }
          restored.set(p, this.restoreState(step, tensors, `${op}: state of ${label}`));
        } catch (e) {
          for (const t of Object.values(tensors)) if (t instanceof Tensor) t.dispose();
          throw e;
        }
      }
    } catch (e) {
      for (const s of restored.values()) this.disposeState(s);
      throw e;
    }
    this.disposeAllState();
    for (const [p, s] of restored) this.state.set(p, s);
    this.stepCount = sd.step;
    sd.groups.forEach((g, i) => {
      this.groups[i].lr = g.lr;
      this.groups[i].lrScale = g.lrScale;
      this.groups[i].weightDecay = g.weightDecay;
    });
  }

  /** Frees all optimizer state (the optimizer can go on; state is recreated on the next step). */
  dispose(): void {
    this.disposeAllState();
  }

  private disposeAllState(): void {
    for (const s of this.state.values()) this.disposeState(s);
    this.state.clear();
  }

  private disposeState(s: S): void {
    for (const key of this.stateTensorKeys) {
      const t = s[key];
      if (t instanceof Tensor) t.dispose();
    }
  }
}

/** A kept copy of `src` with p's shape, dtype and device (for loadStateDict). */
function copyStateTensor(op: string, what: string, src: unknown, p: Tensor): Tensor {
  if (!(src instanceof Tensor)) throw new Error(`${op}: ${what} is not a Tensor`);
  src.assertAlive(op);
  if (!shapesEqual(src.shape, p.shape)) throw new Error(`${op}: ${what} has shape ${fmt(src.shape)}, the parameter ${fmt(p.shape)}`);
  if (src.device !== p.device && !getBackend(src.device).capabilities.syncRead) {
    throw new Error(`${op}: ${what} is on ${src.device} and the parameter on ${p.device}; move the state with toDevice first`);
  }
  return noGrad(() => {
    const fits = getBackend(p.device).capabilities.dtypes.includes(src.dtype);
    const onDevice = src.device === p.device ? src : fits ? src.to(p.device) : tidy(() => cast(src, p.dtype).to(p.device));
    const out = keep(Tensor.empty(p.shape, p.dtype, p.device));
    assign(out, onDevice); // converts dtype on the way
    if (onDevice !== src) onDevice.dispose();
    return out;
  });
}

function checkNonNegative(op: string, name: string, x: unknown): void {
  if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) throw new Error(`${op}: ${name} is ${String(x)}, expected a finite number >= 0`);
}

// ---- AdamW ---------------------------------------------------------------------------------

export interface AdamWOptions {
  lr: number;
  /** (beta1, beta2); PyTorch's default (0.9, 0.999). The LLaVA-UHD recipe uses (0.9, 0.98). */
  betas?: readonly [number, number];
  /** Added to sqrt(v̂); default 1e-8. */
  eps?: number;
  /** Decoupled weight decay (Loshchilov & Hutter); PyTorch's default 0.01, as the recipe. */
  weightDecay?: number;
}

export interface AdamWState extends ParamState {
  /** First moment (EMA of grads), like the parameter. */
  m: Tensor;
  /** Second moment (EMA of squared grads), like the parameter. */
  v: Tensor;
}

/**
 * AdamW as torch.optim.AdamW: p <- p(1 - lr wd) - lr m̂ / (sqrt(v̂) + eps), with bias-corrected
 * moments m̂ = m / (1 - b1^t), v̂ = v / (1 - b2^t), t counted per parameter. A step is one
 * multi-tensor call (`adamwSteps`): on WebGPU a dispatch per few parameters, no allocation
 * after the first.
 */
export class AdamW extends Optimizer<AdamWState> {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  protected readonly stateTensorKeys = ['m', 'v'] as const;

  constructor(groups: readonly Tensor[] | readonly ParamGroupSpec[], opts: AdamWOptions) {
    super('AdamW', groups, { lr: opts.lr, weightDecay: opts.weightDecay ?? 0.01 });
    const [b1, b2] = opts.betas ?? [0.9, 0.999];
    for (const [name, b] of [['beta1', b1], ['beta2', b2]] as const) {
      if (typeof b !== 'number' || !(b >= 0 && b < 1)) throw new Error(`AdamW: ${name} is ${b}, expected a number in [0, 1)`);
    }
    this.beta1 = b1;
    this.beta2 = b2;
    this.eps = opts.eps ?? 1e-8;
    checkNonNegative('AdamW', 'eps', this.eps);
  }

  /** Every parameter's update in one multi-tensor call (a few dispatches on WebGPU, not one per parameter). */
  override step(): void {
    this.pending = [];
    try {
      super.step();
      adamwSteps(this.pending);
    } finally {
      this.pending = null;
    }
  }

  /** Items collected by `update` during `step` (null outside it: update steps at once). */
  private pending: AdamWItem[] | null = null;

  protected update(p: Tensor, grad: Tensor, group: ParamGroup): void {
    let s = this.state.get(p);
    if (!s) {
      const like = { dtype: p.dtype, device: p.device };
      s = { step: 0, m: keep(zeros(p.shape, like)), v: keep(zeros(p.shape, like)) };
      this.state.set(p, s);
    }
    s.step++;
    const h = {
      lr: group.lr,
      beta1: this.beta1,
      beta2: this.beta2,
      eps: this.eps,
      weightDecay: group.weightDecay,
      step: s.step,
    };
    if (this.pending) this.pending.push({ param: p, grad, m: s.m, v: s.v, h });
    else adamwStep(p, grad, s.m, s.v, h);
  }

  protected groupHyper(): Record<string, unknown> {
    return { betas: [this.beta1, this.beta2], eps: this.eps };
  }

  protected restoreState(step: number, t: Partial<Record<'m' | 'v', Tensor>>, label: string): AdamWState {
    if (!t.m || !t.v) throw new Error(`${label} lacks ${!t.m ? 'm' : 'v'}`);
    return { step, m: t.m, v: t.v };
  }
}

// ---- SGD -----------------------------------------------------------------------------------

export interface SGDOptions {
  lr: number;
  /** Default 0 (plain SGD). */
  momentum?: number;
  /** Fraction of the gradient left out of the momentum buffer; default 0. */
  dampening?: number;
  /** L2 penalty added to the gradient (coupled, as torch.optim.SGD); default 0. */
  weightDecay?: number;
  /** Nesterov momentum: step along g + momentum * buf; default false. */
  nesterov?: boolean;
}

export interface SGDState extends ParamState {
  /** Present when momentum > 0. */
  momentumBuffer?: Tensor;
}

/**
 * SGD as torch.optim.SGD: g <- g + wd p; buf <- momentum buf + (1 - dampening) g (buf = g on
 * the first step); g <- nesterov ? g + momentum buf : buf; p <- p - lr g. Built from tensor
 * ops (a few dispatches per parameter); the buffer and the parameter are updated in place.
 */
export class SGD extends Optimizer<SGDState> {
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;
  protected readonly stateTensorKeys = ['momentumBuffer'] as const;

  constructor(groups: readonly Tensor[] | readonly ParamGroupSpec[], opts: SGDOptions) {
    super('SGD', groups, { lr: opts.lr, weightDecay: opts.weightDecay ?? 0 });
    this.momentum = opts.momentum ?? 0;
    this.dampening = opts.dampening ?? 0;
    this.nesterov = opts.nesterov ?? false;
    checkNonNegative('SGD', 'momentum', this.momentum);
    checkNonNegative('SGD', 'dampening', this.dampening);
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) {
      throw new Error(`SGD: nesterov needs momentum > 0 and dampening 0 (got momentum ${this.momentum}, dampening ${this.dampening})`);
    }
  }

  protected update(p: Tensor, grad: Tensor, group: ParamGroup): void {
    let s = this.state.get(p);
    if (!s) {
      s = { step: 0 };
      this.state.set(p, s);
    }
    const state = s;
    state.step++;
    tidy(() => {
      let g = group.weightDecay !== 0 ? add(grad, mul(p, group.weightDecay)) : grad;
      if (this.momentum !== 0) {
        if (!state.momentumBuffer) state.momentumBuffer = keep(clone(g));
        else assign(state.momentumBuffer, add(mul(state.momentumBuffer, this.momentum), mul(g, 1 - this.dampening)));
        g = this.nesterov ? add(g, mul(state.momentumBuffer, this.momentum)) : state.momentumBuffer;
      }
      assign(p, sub(p, mul(g, group.lr)));
    });
  }

  protected groupHyper(): Record<string, unknown> {
    return { momentum: this.momentum, dampening: this.dampening, nesterov: this.nesterov };
  }

  protected restoreState(step: number, t: Partial<Record<'momentumBuffer', Tensor>>, label: string): SGDState {
    if (this.momentum !== 0 && step > 0 && !t.momentumBuffer) throw new Error(`${label} lacks momentumBuffer (this SGD has momentum ${this.momentum})`);
    if (this.momentum === 0) {
      t.momentumBuffer?.dispose();
      return { step };
    }
    return t.momentumBuffer ? { step, momentumBuffer: t.momentumBuffer } : { step };
  }
}

// ---- state dicts as flat tensors (for safetensors) -----------------------------------------

/**
 * An optimizer state dict as flat names -> tensors (`state.3.m`, `state.3.v`, ...) plus a
 * JSON string with everything else, ready for `saveSafetensors(path, tensors, { metadata: { optimizer: meta } })`.
 */
export function flattenStateDict<S extends ParamState>(sd: OptimizerStateDict<S>): { tensors: Record<string, Tensor>; meta: string } {
  const tensors: Record<string, Tensor> = {};
  const scalars: Record<string, Record<string, unknown>> = {};
  for (const [i, entry] of Object.entries(sd.state)) {
    scalars[i] = {};
    for (const [k, value] of Object.entries(entry as object)) {
      if (value instanceof Tensor) tensors[`state.${i}.${k}`] = value;
      else scalars[i][k] = value;
    }
  }
  return { tensors, meta: JSON.stringify({ step: sd.step, groups: sd.groups, state: scalars }) };
}

/** The inverse of `flattenStateDict`. */
export function unflattenStateDict<S extends ParamState>(tensors: Record<string, Tensor> | Map<string, Tensor>, meta: string): OptimizerStateDict<S> {
  const parsed = JSON.parse(meta) as { step: number; groups: OptimizerStateDict['groups']; state: Record<string, Record<string, unknown>> };
  const state: Record<string, Record<string, unknown>> = {};
  for (const [i, entry] of Object.entries(parsed.state ?? {})) state[i] = { ...entry };
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  for (const [name, t] of entries) {
    const m = /^state\.(\d+)\.(\w+)$/.exec(name);
    if (!m) throw new Error(`unflattenStateDict: unexpected tensor name '${name}' (expected state.<index>.<field>)`);
    (state[m[1]] ??= {})[m[2]] = t;
  }
  return { step: parsed.step, groups: parsed.groups, state: state as unknown as Record<number, S> };
}

// ---- gradient clipping ---------------------------------------------------------------------

/**
 * Clips the global L2 norm of the gradients of `params` to `maxNorm` (the LLaVA-UHD recipe
 * clips at 1.0): every grad is multiplied by min(1, maxNorm / (norm + 1e-6)). Everything stays
 * on the device (no read-back); returns the norm before clipping as a 0-d tensor the caller
 * disposes. Each `.grad` is replaced by its scaled copy rather than scaled in place, because
 * after backward two leaves' grads may share one buffer (e.g. both inputs of an add).
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): Tensor {
  if (typeof maxNorm !== 'number' || !(maxNorm > 0) || !Number.isFinite(maxNorm)) {
    throw new Error(`clipGradNorm: maxNorm is ${maxNorm}, expected a finite number > 0`);
  }
  const withGrad = [...new Set(params)].filter((p) => p.grad);
  if (withGrad.length === 0) return zeros([]);
  const first = withGrad[0].grad!;
  for (const p of withGrad) {
    if (p.grad!.device !== first.device) throw new Error(`clipGradNorm: gradients are on ${first.device} and ${p.grad!.device}; clip each device's parameters separately`);
  }
  // one multi-tensor reduction and one rescale per dtype (a few dispatches on WebGPU, not three per grad)
  const byDtype = new Map<string, Tensor[]>();
  for (const p of withGrad) {
    const g = p.grad!;
    let list = byDtype.get(g.dtype);
    if (!list) byDtype.set(g.dtype, (list = []));
    list.push(g);
  }
  return noGrad(() => {
    const norm = tidy(() => {
      let total: Tensor | null = null;
      for (const grads of byDtype.values()) {
        let sq = sumOfSquares(grads);
        if (sq.dtype !== first.dtype) sq = cast(sq, first.dtype);
        total = total ? add(total, sq) : sq;
      }
      return sqrt(total!);
    });
    const scale = tidy(() => minimum(div(maxNorm, add(norm, 1e-6)), 1));
    // in place: a leaf's gradient owns its memory, and staying in its buffer keeps the
    // optimizer's bind groups on WebGPU the same as the clip's
    for (const grads of byDtype.values()) {
      const s = grads[0].dtype === scale.dtype ? scale : cast(scale, grads[0].dtype);
      scaleManyInPlace(grads, s);
      if (s !== scale) s.dispose();
    }
    scale.dispose();
    return norm;
  });
}

/** `clipGradNorm`, then reads the pre-clip norm back as a number (for logging). */
export async function clipGradNormAsync(params: Iterable<Tensor>, maxNorm: number): Promise<number> {
  const norm = clipGradNorm(params, maxNorm);
  try {
    return await norm.item();
  } finally {
    norm.dispose();
  }
}

// ---- learning-rate schedules ---------------------------------------------------------------

/** Step (0, 1, 2, ...) -> learning rate. */
export type LRSchedule = (step: number) => number;

export interface WarmupCosineOptions {
  peak: number;
  min: number;
  warmupSteps: number;
  totalSteps: number;
}

/**
 * Linear warmup from 0 at step 0 to `peak` at `warmupSteps`, then half a cosine down to `min`
 * at `totalSteps`, `min` after (LLaVA-UHD recipe: "linear warmup then cosine to the minimum";
 * e.g. stage 1: peak 1e-4, min 5e-5, 1000 warmup of 2000 steps).
 */
export function warmupCosine(opts: WarmupCosineOptions): LRSchedule {
  const { peak, min, warmupSteps, totalSteps } = opts;
  checkNonNegative('warmupCosine', 'peak', peak);
  checkNonNegative('warmupCosine', 'min', min);
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0) throw new Error(`warmupCosine: warmupSteps is ${warmupSteps}, expected an integer >= 0`);
  if (!Number.isInteger(totalSteps) || totalSteps < warmupSteps) {
    throw new Error(`warmupCosine: totalSteps is ${totalSteps}, expected an integer >= warmupSteps (${warmupSteps})`);
  }
  return (step) => {
    if (step < warmupSteps) return (peak * Math.max(step, 0)) / warmupSteps;
    if (step >= totalSteps) return min;
    const progress = (step - warmupSteps) / (totalSteps - warmupSteps);
    return min + (peak - min) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}

/** The same rate at every step. */
export function constant(lr: number): LRSchedule {
  checkNonNegative('constant', 'lr', lr);
  return () => lr;
}

/**
 * Drives an optimizer's group LRs from a schedule: at position t each group's lr is
 * `schedule(t) * group.lrScale`. As in PyTorch, construction applies position 0 and each
 * `step()` (called after `optimizer.step()`) advances one position.
 */
export class LRScheduler {
  private position = 0;

  constructor(
    readonly optimizer: { groups: readonly ParamGroup[] },
    readonly schedule: LRSchedule,
  ) {
    this.apply();
  }

  /** Number of `step()` calls so far (the position in the schedule). */
  get lastStep(): number {
    return this.position;
  }

  /** The schedule's rate at the current position (before group scales). */
  get lr(): number {
    return this.schedule(this.position);
  }

  step(): void {
    this.position++;
    this.apply();
  }

  stateDict(): { step: number } {
    return { step: this.position };
  }

  /** Resumes at the saved position and sets the group LRs for it. */
  loadStateDict(sd: { step: number }): void {
    if (!sd || !Number.isInteger(sd.step) || sd.step < 0) throw new Error(`LRScheduler.loadStateDict: step is ${sd?.step}, expected an integer >= 0`);
    this.position = sd.step;
    this.apply();
  }

  private apply(): void {
    const lr = this.schedule(this.position);
    if (!Number.isFinite(lr) || lr < 0) throw new Error(`LRScheduler: the schedule gave ${lr} at step ${this.position}`);
    for (const g of this.optimizer.groups) g.lr = lr * g.lrScale;
  }
}
