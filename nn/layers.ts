/** The basic layers: Linear, LayerNorm, RMSNorm, Embedding, PatchEmbed, Dropout. */
import * as ag from '../autograd/index.js';
import { fmt } from '../tensor/shape.js';
import { assign, rand, Tensor } from '../tensor/index.js';
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
    return ag.linear(patches, w, this.bias);
  }

  /**
   * Several views [C, H, W] (sizes may differ) at once: their patches become the rows of one
   * matrix (one copy per view, no gradient needed for pixels), then one linear layer over all
   * of them, with `residual` [sum(h*w), dim] (the position embeddings) added in its epilogue.
   * Returns [1, sum(h*w), dim], views in order, each row-major over its patch grid. Pixels
   * that require a gradient take the per-view path.
   */
  forwardViews(views: readonly Tensor[], residual: Tensor | null = null): Tensor {
    const p = this.patch;
    const C = this.channels;
    for (const v of views) {
      if (v.rank !== 3 || v.shape[0] !== C || v.shape[1] % p || v.shape[2] % p) {
        throw new Error(`PatchEmbed: each view must be [${C}, H, W] with H, W multiples of ${p}, got ${fmt(v.shape)}`);
      }
    }
    if (views.some((v) => v.requiresGrad)) {
      const parts = views.map((v) => ag.reshape(this.forward(ag.unsqueeze(v, 0)), [-1, this.dim]));
      const x = parts.length === 1 ? parts[0] : ag.concat(parts, 0);
      const y = residual ? ag.add(x, residual) : x;
      return ag.unsqueeze(y, 0);
    }
    const rows = views.reduce((n, v) => n + (v.shape[1] / p) * (v.shape[2] / p), 0);
    const patches = Tensor.empty([rows, C * p * p], views[0].dtype, views[0].device);
    let at = 0;
    for (const v of views) {
      const [, H, W] = v.shape;
      const [h, w] = [H / p, W / p];
      const region = patches.narrow(0, at, h * w).reshape([h, w, C, p, p]);
      const grid = v.reshape([C, h, p, w, p]).permute([1, 3, 0, 2, 4]);
      assign(region, grid);
      region.dispose();
      grid.dispose();
      at += h * w;
    }
    const weight = ag.reshape(this.weight, [this.dim, C * p * p]);
    const y = ag.linear(patches, weight, this.bias, { residual });
    patches.dispose();
    return ag.unsqueeze(y, 0);
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
