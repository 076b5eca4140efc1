import type { AttentionParams } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';
export function attention(_q: Tensor, _k: Tensor, _v: Tensor, _p: AttentionParams, _out: Tensor): void { throw new Error('PLACEHOLDER attention'); }
