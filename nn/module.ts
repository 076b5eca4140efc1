/**
 * Module: named parameters, buffers and child modules, as in PyTorch's nn.Module, with
 * dotted names that match checkpoint keys (`encoder.layers.0.self_attn.q_proj.weight`).
 */
import * as ag from '../autograd/index.js';
import { fmt } from '../tensor/shape.js';
import { assign, keep, Tensor, toDevice, type Device } from '../tensor/index.js';

export interface LoadReport {
  missing: string[];
  unexpected: string[];
  /** `name: expected [..], got [..]` */
  mismatched: string[];
}

export class Module {
  /** False after eval(): dropout is off. */
  training = true;
  private readonly params = new Map<string, Tensor>();
  private readonly buffers = new Map<string, { t: Tensor; persistent: boolean }>();
  private readonly children = new Map<string, Module>();

  /** Registers a trainable tensor (requiresGrad on) under `name` and returns it. */
  protected param(name: string, t: Tensor): Tensor {
    t.requiresGrad = true;
    this.params.set(name, keep(t));
    return t;
  }

  /** Registers non-trained state (saved in stateDict only when persistent). */
  protected buffer(name: string, t: Tensor, persistent = true): Tensor {
    this.buffers.set(name, { t: keep(t), persistent });
    return t;
  }

  /** Registers a child module under `name` (its parameters get the `name.` prefix). */
  protected module<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /**
   * Replaces a registered tensor (after moving it to another device), updating the field
   * that holds it (e.g. `this.weight`); the old tensor is disposed.
   */
  private replace(name: string, t: Tensor): void {
    const p = this.params.get(name);
    const old = p ?? this.buffers.get(name)!.t;
    const fields = this as unknown as Record<string, unknown>;
    for (const k of Object.keys(fields)) if (fields[k] === old) fields[k] = t;
    if (p) {
      t.requiresGrad = p.requiresGrad;
      p.grad?.dispose();
      this.params.set(name, keep(t));
    } else {
      this.buffers.get(name)!.t = keep(t);
    }
    old.dispose();
  }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [n, m] of this.children) yield* m.namedModules(prefix ? `${prefix}.${n}` : n);
  }

  /** Every parameter with its dotted name, depth first in registration order. */
  *namedParameters(prefix = ''): Generator<[string, Tensor]> {
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [n, p] of m.params) yield [path ? `${path}.${n}` : n, p];
    }
  }

  parameters(): Tensor[] {
    return [...this.namedParameters()].map(([, p]) => p);
  }

  /** Parameters and persistent buffers by dotted name (the tensors themselves, not copies). */
  stateDict(): Map<string, Tensor> {
    const sd = new Map<string, Tensor>();
    for (const [path, m] of this.namedModules()) {
      const key = (n: string) => (path ? `${path}.${n}` : n);
      for (const [n, p] of m.params) sd.set(key(n), p);
      for (const [n, b] of m.buffers) if (b.persistent) sd.set(key(n), b.t);
    }
    return sd;
  }

  /**
   * Copies values from `sd` into this module's tensors (on their devices). Reports missing,
   * unexpected and shape-mismatched keys by name; with `strict` (default) any of them throws.
   */
  loadStateDict(sd: Map<string, Tensor> | Record<string, Tensor>, opts: { strict?: boolean } = {}): LoadReport {
    const strict = opts.strict ?? true;
    const given = sd instanceof Map ? sd : new Map(Object.entries(sd));
    const own = this.stateDict();
    const report: LoadReport = {
      missing: [...own.keys()].filter((k) => !given.has(k)),
      unexpected: [...given.keys()].filter((k) => !own.has(k)),
      mismatched: [],
    };
    for (const [k, t] of given) {
      const mine = own.get(k);
      if (mine && (mine.rank !== t.rank || mine.shape.some((s, i) => s !== t.shape[i]))) {
        report.mismatched.push(`${k}: expected ${fmt(mine.shape)}, got ${fmt(t.shape)}`);
      }
    }
    const problems = [
      ...report.missing.map((k) => `missing ${k}`),
      ...report.unexpected.map((k) => `unexpected ${k}`),
      ...report.mismatched.map((k) => `shape mismatch ${k}`),
    ];
    if (strict && problems.length) throw new Error(`loadStateDict: ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
    ag.noGrad(() => {
      for (const [k, t] of given) {
        const mine = own.get(k);
        if (!mine || report.mismatched.some((m) => m.startsWith(`${k}:`))) continue;
        if (t.device !== mine.device) throw new Error(`loadStateDict: ${k} is on ${t.device}, the module on ${mine.device}; move it first`);
        const src = t.dtype === mine.dtype ? t : t.cast(mine.dtype);
        assign(mine, src); // in place: optimizers holding `mine` keep working
        if (src !== t) src.dispose();
      }
    });
    return report;
  }

  train(on = true): this {
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Freezes (false) or unfreezes (true) every parameter of this subtree. */
  requiresGrad(on: boolean): this {
    for (const p of this.parameters()) p.requiresGrad = on;
    return this;
  }

  /** Moves every parameter and buffer to `device` (reads back through the host from the GPU). */
  async to(device: Device): Promise<this> {
    for (const [, m] of this.namedModules()) {
      for (const [n, p] of [...m.params]) if (p.device !== device) m.replace(n, await toDevice(p, device));
      for (const [n, b] of [...m.buffers]) if (b.t.device !== device) m.replace(n, await toDevice(b.t, device));
    }
    return this;
  }

  /** Frees every parameter, gradient and buffer. */
  dispose(): void {
    for (const [, m] of this.namedModules()) {
      for (const p of m.params.values()) {
        p.grad?.dispose();
        p.dispose();
      }
      for (const b of m.buffers.values()) b.t.dispose();
    }
  }
}
