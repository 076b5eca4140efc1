import type { Tensor } from '../tensor/tensor.js';
export function gather(_x: Tensor, _dim: number, _i: Tensor, _out: Tensor): void { throw new Error('PLACEHOLDER gather'); }
export function scatterAdd(_x: Tensor, _dim: number, _i: Tensor, _s: Tensor, _out: Tensor): void { throw new Error('PLACEHOLDER scatterAdd'); }
