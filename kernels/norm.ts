import type { Tensor } from '../tensor/tensor.js';
export function layerNorm(_x: Tensor, _w: Tensor | null, _b: Tensor | null, _eps: number, _out: Tensor): void { throw new Error('PLACEHOLDER layerNorm'); }
export function rmsNorm(_x: Tensor, _w: Tensor | null, _eps: number, _out: Tensor): void { throw new Error('PLACEHOLDER rmsNorm'); }
