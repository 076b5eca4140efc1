import type { AttentionParams } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';
export function attentionGrad(_q: Tensor, _k: Tensor, _v: Tensor, _p: AttentionParams, _g: Tensor, _gq: Tensor, _gk: Tensor, _gv: Tensor): void { throw new Error('PLACEHOLDER attentionGrad'); }
