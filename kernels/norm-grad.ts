import type { Tensor } from '../tensor/tensor.js';
export function softmaxGrad(_y: Tensor, _g: Tensor, _log: boolean, _out: Tensor): void { throw new Error('PLACEHOLDER softmaxGrad'); }
export function layerNormGrad(_x: Tensor, _w: Tensor | null, _g: Tensor, _eps: number, _out: Tensor): void { throw new Error('PLACEHOLDER layerNormGrad'); }
export function rmsNormGrad(_x: Tensor, _w: Tensor | null, _g: Tensor, _eps: number, _out: Tensor): void { throw new Error('PLACEHOLDER rmsNormGrad'); }
