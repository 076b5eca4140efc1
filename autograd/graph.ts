/**
 * The tape: a tensor made by a differentiable op from inputs that require grad keeps a
 * GradNode (op name, inputs, saved tensors, backward rule). `backward()` walks the nodes in
 * reverse topological order and accumulates `.grad` on leaves (micrograd's loop, on tensors).
 */
import { keep, tidy, Tensor, ones } from '../tensor/index.js';
import { add } from '../tensor/index.js';
import type { GradFn } from '../tensor/dispatch.js';
import { fmt, shapesEqual } from '../tensor/shape.js';

/** Given the output's gradient, the saved tensors, and which inputs need a gradient. */
export type BackwardRule = (grad: Tensor, saved: readonly Tensor[], needs: readonly boolean[]) => (Tensor | null)[];

export interface GradNode extends GradFn {
  readonly op: string;
  /** Inputs in order; null where the input needs no gradient. */
  readonly inputs: readonly (Tensor | null)[];
  /** Handles kept alive for backward (disposed when the graph is freed). */
  saved: Tensor[];
  /** Gradients wrt each input (null for inputs that need none), shaped like the input. */
  backward: BackwardRule | null;
  /**
   * What keeps the node (and its saved tensors) alive, as PyTorch's reference counts do: the
   * undisposed tensor it made, and the nodes recorded downstream of that tensor. When both
   * reach zero without a backward, the node frees itself and releases its inputs' nodes.
   */
  liveOutputs: number;
  downstream: number;
}

/** The node that made `t` (Tensor.gradFn is the tensor layer's opaque view of it). */
export function nodeOf(t: Tensor): GradNode | null {
  return t.gradFn as GradNode | null;
}

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with recording off (inference, optimizer updates, backward itself). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs fn with recording on (inside backward, to recompute a checkpointed block). */
export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** A new handle on the same storage that survives `tidy` and the caller's dispose. */
function retain(t: Tensor): Tensor {
  return keep(t.asStrided(t.shape, t.strides, t.offset));
}

/**
 * Records `out` as made by `op` from `inputs`. `save` lists tensors backward needs (retained
 * here, handed back to `backward` as `saved`). Returns `out`.
 */
export function record(
  op: string,
  inputs: readonly Tensor[],
  out: Tensor,
  save: readonly Tensor[],
  backward: BackwardRule,
  /** Record even when no input requires grad (checkpointed blocks whose parameters do). */
  force = false,
): Tensor {
  if (!gradEnabled) return out;
  let any = force;
  for (let i = 0; !any && i < inputs.length; i++) any = inputs[i].requiresGrad;
  if (!any) return out;
  out.requiresGrad = true;
  const kept = new Array<Tensor | null>(inputs.length);
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i];
    kept[i] = t.requiresGrad ? t : null;
    const n = t.requiresGrad ? nodeOf(t) : null;
    if (n) n.downstream++;
  }
  const saved = new Array<Tensor>(save.length);
  for (let i = 0; i < save.length; i++) saved[i] = retain(save[i]);
  const node: GradNode = { op, inputs: kept, saved, backward, liveOutputs: 1, downstream: 0 };
  out.gradFn = node;
  return out;
}

/** Called when a tensor made by `node` is disposed (the hook autograd/install.ts installs). */
export function releaseOutput(node: GradNode): void {
  node.liveOutputs--;
  freeIfUnreachable(node);
}

/** Frees a node nothing can backpropagate through any more, then looks at its inputs' nodes. */
function freeIfUnreachable(node: GradNode): void {
  const pending = [node];
  while (pending.length) {
    const n = pending.pop()!;
    if (n.backward === null || n.liveOutputs > 0 || n.downstream > 0) continue;
    freeNode(n);
    for (const t of n.inputs) {
      const up = t && nodeOf(t);
      if (!up) continue;
      up.downstream--;
      pending.push(up);
    }
  }
}

/** Tensors reachable from root through recorded nodes, inputs before the tensors made from them. */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>([root]);
  // a depth-first walk: the tensors on the path, and the next input of each to visit
  const path: Tensor[] = [root];
  const next: number[] = [0];
  while (path.length) {
    const top = path.length - 1;
    const t = path[top];
    const inputs = nodeOf(t)?.inputs;
    const i = next[top];
    if (inputs && i < inputs.length) {
      next[top] = i + 1;
      const input = inputs[i];
      if (input && !seen.has(input)) {
        seen.add(input);
        path.push(input);
        next.push(0);
      }
    } else {
      order.push(t);
      path.pop();
      next.pop();
    }
  }
  return order;
}

function freeNode(node: GradNode): void {
  for (const s of node.saved) s.dispose();
  node.saved = [];
  node.backward = null;
}

export interface BackwardOptions {
  /** Keep the graph (saved tensors) so backward can run through it again. */
  retainGraph?: boolean;
}

/**
 * Accumulates d(root)/d(leaf) into every leaf's `.grad`. A non-scalar root needs an explicit
 * `gradient` of its shape. The graph is freed afterwards unless `retainGraph`.
 */
export function backward(root: Tensor, gradient?: Tensor, opts: BackwardOptions = {}): void {
  root.assertAlive('backward');
  if (!root.requiresGrad) throw new Error(`backward: tensor ${fmt(root.shape)} does not require grad (no input of it has requiresGrad)`);
  if (!gradient && root.size !== 1) {
    throw new Error(`backward: tensor ${fmt(root.shape)} is not a scalar; pass a gradient of that shape`);
  }
  if (gradient && (gradient.shape.length !== root.shape.length || gradient.shape.some((s, i) => s !== root.shape[i]))) {
    throw new Error(`backward: gradient ${fmt(gradient.shape)} does not match tensor ${fmt(root.shape)}`);
  }
  const order = topologicalOrder(root);
  for (const t of order) {
    const n = nodeOf(t);
    if (n && n.backward === null) {
      throw new Error(
        `backward: the graph through '${n.op}' was already freed by an earlier backward(); pass { retainGraph: true } to the first call to backpropagate twice`,
      );
    }
  }
  noGrad(() => {
    const grads = new Map<Tensor, Tensor>();
    grads.set(root, gradient ? gradient.contiguous() : ones(root.shape, { dtype: root.dtype, device: root.device }));
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i];
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      const node = nodeOf(t);
      if (!node) {
        accumulateLeaf(t, g);
        continue;
      }
      const run = node.backward!;
      const inputs = node.inputs;
      const needs = new Array<boolean>(inputs.length);
      for (let k = 0; k < inputs.length; k++) needs[k] = inputs[k] !== null;
      const inGrads = tidy(() => run(g, node.saved, needs));
      // Each gradient must be its own handle: a rule may hand back g, or one tensor twice.
      const handles = new Array<Tensor | null>(inGrads.length);
      for (let k = 0; k < inGrads.length; k++) {
        const gi = inGrads[k];
        handles[k] = gi && (gi === g || inGrads.indexOf(gi) < k) ? detach(gi) : gi;
      }
      g.dispose();
      for (let k = 0; k < inputs.length; k++) {
        const input = inputs[k];
        const gi = handles[k];
        if (!input || !gi) {
          gi?.dispose();
          continue;
        }
        if (!shapesEqual(gi.shape, input.shape)) {
          throw new Error(`backward: '${node.op}' produced a gradient ${fmt(gi.shape)} for input ${k} of shape ${fmt(input.shape)}`);
        }
        const prev = grads.get(input);
        if (prev) {
          grads.set(input, add(prev, gi));
          prev.dispose();
          gi.dispose();
        } else grads.set(input, gi);
      }
      if (!opts.retainGraph) freeNode(node);
    }
  });
}

function accumulateLeaf(t: Tensor, g: Tensor): void {
  if (t.grad) {
    const sum = keep(add(t.grad, g));
    t.grad.dispose();
    g.dispose();
    t.grad = sum;
  } else {
    // A leaf's grad owns its memory: optimizers update grads in place, and a rule such as
    // add's hands the same gradient to both inputs.
    const own = g.isContiguous && g.storage.refCount === 1;
    t.grad = keep(own ? g : g.clone());
    if (!own) g.dispose();
  }
}

/** A handle on the same data with no history (gradients stop here). */
export function detach(t: Tensor): Tensor {
  return t.asStrided(t.shape, t.strides, t.offset);
}

/** Disposes and clears the gradients of `params`. */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
}
