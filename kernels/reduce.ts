import type { ReduceOp } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';
export function reduce(_op: ReduceOp, _x: Tensor, _r: number, _out: Tensor): void { throw new Error('PLACEHOLDER reduce'); }
export function softmax(_x: Tensor, _log: boolean, _out: Tensor): void { throw new Error('PLACEHOLDER softmax'); }
