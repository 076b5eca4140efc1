/** Feed-forward blocks: SigLIP's GELU MLP (fc1, fc2) and Qwen3's SwiGLU (gate, up, down). */
import * as ag from '../autograd/index.js';
import type { Tensor } from '../tensor/index.js';
import type { InitOptions } from './init.js';
import { Linear } from './layers.js';
import { Module } from './module.js';

export class MLP extends Module {
  fc1: Linear;
  fc2: Linear;
  constructor(dim: number, hidden: number, readonly approximate: 'tanh' | 'none' = 'tanh', opts: InitOptions = {}) {
    super();
    this.fc1 = this.module('fc1', new Linear(dim, hidden, opts));
    this.fc2 = this.module('fc2', new Linear(hidden, dim, opts));
  }
  /** fc2(gelu(fc1 x)) (+ residual, fused into fc2 where the backend can). */
  forward(x: Tensor, residual: Tensor | null = null): Tensor {
    const h = this.fc1.forward(x, { activation: this.approximate === 'tanh' ? 'gelu' : 'geluErf' });
    return this.fc2.forward(h, { residual });
  }
}

/** down(silu(gate(x)) * up(x)), no biases. */
export class SwiGLU extends Module {
  gate_proj: Linear;
  up_proj: Linear;
  down_proj: Linear;
  constructor(dim: number, hidden: number, opts: InitOptions & { std?: number } = {}) {
    super();
    const o = { ...opts, bias: false };
    this.gate_proj = this.module('gate_proj', new Linear(dim, hidden, o));
    this.up_proj = this.module('up_proj', new Linear(dim, hidden, o));
    this.down_proj = this.module('down_proj', new Linear(hidden, dim, o));
  }
  /** down(silu(gate x) * up x) (+ residual, fused into down_proj where the backend can). */
  forward(x: Tensor, residual: Tensor | null = null): Tensor {
    return this.down_proj.forward(ag.mul(ag.silu(this.gate_proj.forward(x)), this.up_proj.forward(x)), { residual });
  }
}
