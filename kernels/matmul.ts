import type { Tensor } from '../tensor/tensor.js';
export function matmul(_a: Tensor, _b: Tensor, _out: Tensor): void { throw new Error('PLACEHOLDER matmul'); }
