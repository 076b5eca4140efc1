/** Batched matrix multiply with NumPy broadcasting over the batch dims. */
import { broadcastShapes, fmt } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { isHalf } from '../dtype.js';
import { backendFor, broadcastTo, empty, requireDtype, requireSameDtype } from './common.js';

/**
 * a: [..., M, K] @ b: [..., K, N] -> [..., M, N]. A 1-d operand is treated as a row (a)
 * or column (b) vector and that dim is dropped from the result, as in NumPy.
 * Transposed operands (`b.transpose()`) are handled through strides, without a copy.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  const backend = backendFor('matmul', a, b);
  // half weights (bfloat16, float16) on the b side, with float32 a and out
  if (!(isHalf(b.dtype) && a.dtype === 'float32')) requireSameDtype('matmul', a, b);
  requireDtype('matmul', 'a', a, ['float32', 'float64']);
  if (a.rank === 0 || b.rank === 0) throw new Error(`matmul: operands must have rank >= 1, got ${fmt(a.shape)} and ${fmt(b.shape)}`);
  const a2 = a.rank === 1 ? a.unsqueeze(0) : a;
  const b2 = b.rank === 1 ? b.unsqueeze(1) : b;
  const [M, K] = a2.shape.slice(-2);
  const [K2, N] = b2.shape.slice(-2);
  if (K !== K2) throw new Error(`matmul: inner dims differ, a is ${fmt(a.shape)}, b is ${fmt(b.shape)}`);
  const batch = broadcastShapes('matmul', a2.shape.slice(0, -2), b2.shape.slice(0, -2));
  const ea = broadcastTo(a2, [...batch, M, K]);
  const eb = broadcastTo(b2, [...batch, K, N]);
  const out = empty([...batch, M, N], a.dtype, a.device);
  backend.matmul(ea, eb, out);
  if (ea !== a2) ea.dispose();
  if (eb !== b2) eb.dispose();
  if (a2 !== a) a2.dispose();
  if (b2 !== b) b2.dispose();
  if (a.rank > 1 && b.rank > 1) return out;
  const shape = [...batch, ...(a.rank > 1 ? [M] : []), ...(b.rank > 1 ? [N] : [])];
  const squeezed = out.reshape(shape);
  out.dispose();
  return squeezed;
}
