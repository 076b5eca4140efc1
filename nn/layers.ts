/** The basic layers: Linear, LayerNorm, RMSNorm, Embedding, PatchEmbed, Dropout. */
import * as ag from '../autograd/index.js';
import { fmt } from '../tensor/shape.js';
import { rand, type Tensor } from '../tensor/index.js';
import type { LinearOptions as LinearCall } from '../tensor/ops/fused.js';
import { normalInit, onesInit, zerosInit, type InitOptions } from './init.js';
import { Module } from './module.js';

export interface LinearOptions extends InitOptions {
  bias?: boolean;
  /** Std of the normal initialisation (default 1/sqrt(in), a fan-in scale). */
  std?: number;
}

/** y = x Wᵀ + b with W: [out, in] (PyTorch's layout, so checkpoints load as they are). */
export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LinearOptions = {}) {
    super();
    this.weight = this.param('weight', normalInit([outFeatures, inFeatures], opts.std ?? 1 / Math.sqrt(inFeatures), opts));
    this.bias = opts.bias === false ? null : this.param('bias', zerosInit([outFeatures], opts));
  }
  /**
   * One fused op where the backend has it (matmul with bias, activation and residual in its
   * epilogue): `opts.activation` applies after the bias, `opts.residual` is added last (a
   * block's skip connection), so `fc1.forward(x, { activation: 'gelu' })` is gelu(fc1(x)).
   */
  forward(x: Tensor, opts: LinearCall = {}): Tensor {
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      throw new Error(`Linear: input ${fmt(x.shape)} has last dim ${x.shape[x.rank - 1]}, expected ${this.inFeatures}`);
    }
    return ag.linear(x, this.weight, this.bias, opts);
  }
}

export class LayerNorm extends Module {
  weight: Tensor;
  bias: Tensor;
  constructor(readonly dim: number, readonly eps = 1e-5, opts: InitOptions = {}) {
    super();
    this.weight = this.param('weight', onesInit([dim], opts));
    this.bias = this.param('bias', zerosInit([dim], opts));
  }
  forward(x: Tensor): Tensor {
    return ag.layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** x / rms(x) * weight (Qwen3: times weight, not 1 + weight), computed in float32. */
export class RMSNorm extends Module {
  weight: Tensor;
  constructor(readonly dim: number, readonly eps = 1e-6, opts: InitOptions = {}) {
    super();
    this.weight = this.param('weight', onesInit([dim], opts));
  }
  forward(x: Tensor): Tensor {
    return ag.rmsNorm(x, this.weight, this.eps);
  }
}

/** A lookup table [num, dim]; ids (int32, any shape) -> [...ids.shape, dim]. */
export class Embedding extends Module {
  weight: Tensor;
  constructor(readonly num: number, readonly dim: number, opts: InitOptions & { std?: number } = {}) {
    super();
    this.weight = this.param('weight', normalInit([num, dim], opts.std ?? 1, opts));
  }
  forward(ids: Tensor): Tensor {
    if (ids.dtype !== 'int32') throw new Error(`Embedding: ids must be int32, got ${ids.dtype}`);
    const flat = ag.reshape(ids, [-1]);
    const rows = ag.indexSelect(this.weight, 0, flat);
    const out = ag.reshape(rows, [...ids.shape, this.dim]);
    flat.dispose();
    rows.dispose();
    return out;
  }
}

/**
 * A conv with stride = kernel = patch, as a matmul over patches. weight: [dim, channels, p, p]
 * (the conv layout of the checkpoints); pixels [B, C, H, W] -> tokens [B, (H/p)(W/p), dim],
 * row-major over the patch grid.
 */
export class PatchEmbed extends Module {
  weight: Tensor;
  bias: Tensor;
  constructor(readonly patch: number, readonly channels: number, readonly dim: number, opts: InitOptions = {}) {
    super();
    const fanIn = channels * patch * patch;
    this.weight = this.param('weight', normalInit([dim, channels, patch, patch], 1 / Math.sqrt(fanIn), opts));
    this.bias = this.param('bias', zerosInit([dim], opts));
  }
  forward(pixels: Tensor): Tensor {
    const [B, C, H, W] = pixels.shape;
    const p = this.patch;
    if (pixels.rank !== 4 || C !== this.channels || H % p || W % p) {
      throw new Error(`PatchEmbed: pixels must be [B, ${this.channels}, H, W] with H, W multiples of ${p}, got ${fmt(pixels.shape)}`);
    }
    const grid = ag.reshape(pixels, [B, C, H / p, p, W / p, p]);
    const patches = ag.reshape(ag.permute(grid, [0, 2, 4, 1, 3, 5]), [B, (H / p) * (W / p), C * p * p]);
    const w = ag.reshape(this.weight, [this.dim, C * p * p]);
    return ag.add(ag.matmul(patches, ag.transpose(w)), this.bias);
  }
}

/** Zeroes each element with probability p in training, scaling the rest by 1/(1-p). */
export class Dropout extends Module {
  constructor(readonly p = 0.1) {
    super();
    if (p < 0 || p >= 1) throw new Error(`Dropout: p must be in [0, 1), got ${p}`);
  }
  forward(x: Tensor): Tensor {
    if (!this.training || this.p === 0) return ag.mul(x, 1);
    const keepMask = ag.noGrad(() => {
      const u = rand(x.shape, { device: x.device, dtype: x.dtype === 'float64' ? 'float64' : 'float32' });
      const m = u.ge(this.p).mul(1 / (1 - this.p));
      u.dispose();
      return m;
    });
    const out = ag.mul(x, keepMask);
    keepMask.dispose();
    return out;
  }
}
