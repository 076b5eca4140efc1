/** Every validation path throws where the bad input enters, naming the op and the shapes. */
import { describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';

const f = (shape: number[]) => uhd.zeros(shape);
const i32 = (shape: number[]) => uhd.zeros(shape, { dtype: 'int32' });

describe('creation and views', () => {
  it.each([
    ['ragged nested arrays', () => uhd.tensor([[1, 2], [3]]), 'tensor: ragged nested array: expected 2 items at depth 1, shape [2,2]'],
    ['too few values for the shape', () => uhd.tensor([1, 2, 3], { shape: [2, 2] }), 'tensor: 3 values do not fill shape [2,2] (4 elements)'],
    ['negative shape', () => uhd.zeros([2, -1]), 'full: invalid shape [2,-1]'],
    ['arange step 0', () => uhd.arange(0, 5, 0), 'arange: step must not be 0'],
    ['reshape count mismatch', () => f([2, 3]).reshape(4, 2), 'reshape: cannot reshape [2,3] (6 elements) into [4,2] (8 elements)'],
    ['reshape two -1', () => f([2, 3]).reshape(-1, -1), 'reshape: invalid target shape [-1,-1]'],
    ['reshape -1 not divisible', () => f([2, 3]).reshape(-1, 4), 'reshape: cannot reshape [2,3] into [-1,4]'],
    ['permute not a permutation', () => f([2, 3]).permute(0, 0), 'permute: [0,0] is not a permutation of 2 dims (tensor [2,3])'],
    ['dim out of range', () => f([2, 3]).transpose(0, 2), 'transpose: dim 2 out of range for a tensor of rank 2'],
    ['slice too many ranges', () => f([2]).slice(null, null), 'slice: 2 ranges for a tensor of rank 1 [2]'],
    ['slice bad step', () => f([4]).slice([0, 4, 0]), 'slice: step must be a positive integer, got 0 (dim 0)'],
    ['narrow out of range', () => f([4]).narrow(0, 3, 2), 'narrow: [3, 5) out of range for dim 0 of size 4'],
    ['expand non-1 dim', () => f([2, 3]).expand(2, 4), 'expand: cannot expand [2,3] to [2,4] (dim 1: 3 -> 4)'],
    ['expand to fewer dims', () => f([2, 3]).expand(3), 'expand: target [3] has fewer dims than [2,3]'],
    ['expand -1 in a new leading dim', () => f([2, 3]).expand(-1, 2, 3), 'expand: -1 in [-1,2,3] is for existing dims, not the new leading dim 0 (tensor [2,3])'],
    ['squeeze dim out of range', () => f([2, 1]).squeeze(2), 'squeeze: dim 2 out of range for a tensor of rank 2'],
    ['permute with too few dims', () => f([2, 3]).permute(1), 'permute: [1] is not a permutation of 2 dims (tensor [2,3])'],
  ])('%s', (_name, fn, message) => {
    expect(fn).toThrow(message);
  });
  it('item on a non-scalar', async () => {
    await expect(f([2]).item()).rejects.toThrow('item: tensor [2] has 2 elements, not 1');
  });
  it('setRngState with a bad state', () => {
    expect(() => uhd.setRngState([1, 2])).toThrow('setRngState: expected 4 words, got 2');
  });
});

describe('ops', () => {
  it.each([
    ['binary shapes that do not broadcast', () => f([2, 3]).add(f([4])), 'add: shapes [2,3] and [4] do not broadcast (dim -1: 3 vs 4)'],
    ['binary dtype mismatch', () => f([2]).mul(i32([2])), 'mul: dtypes differ, float32 [2] vs int32 [2]; cast one first'],
    ['binary on two numbers', () => uhd.add(1, 2), 'add: at least one operand must be a Tensor'],
    ['binary with a non-tensor', () => uhd.add(f([1]), 'x' as unknown as uhd.Tensor), 'add: expected a Tensor, got string'],
    ['pow on int32', () => i32([2]).pow(2), 'pow: needs float tensors, got int32'],
    ['float-only unary on int32', () => i32([2, 2]).exp(), 'exp: needs a float tensor, got int32 [2,2]; cast it first'],
    ['where with mismatched branches', () => uhd.where(f([2]), f([2]), i32([2])), 'where: dtypes differ'],
    ['where shapes', () => uhd.where(f([2]), f([3]), f([3])), 'where: shapes [2] and [3] do not broadcast'],
    ['mean of int32', () => i32([2]).mean(), 'mean: needs a float tensor, got int32'],
    ['max over an empty dim', () => f([0, 3]).max(0), 'max: cannot reduce an empty dim of [0,3]'],
    ['reduce dim out of range', () => f([2]).sum(3), 'sum: dim 3 out of range for a tensor of rank 1'],
    ['softmax of int32', () => i32([2]).softmax(), 'softmax: needs a float tensor, got int32'],
    ['matmul inner dims', () => f([2, 3]).matmul(f([4, 5])), 'matmul: inner dims differ, a is [2,3], b is [4,5]'],
    ['matmul batch dims', () => f([2, 2, 3]).matmul(f([3, 3, 5])), 'matmul: shapes [2] and [3] do not broadcast'],
    ['matmul rank 0', () => uhd.matmul(f([]), f([2])), 'matmul: operands must have rank >= 1, got [] and [2]'],
    ['matmul int32', () => i32([2, 2]).matmul(i32([2, 2])), 'matmul: a has dtype int32, expected float32 or float64'],
    ['layerNorm weight shape', () => uhd.layerNorm(f([2, 4]), f([3])), 'layerNorm: weight must be [4] to match x [2,4], got [3]'],
    ['layerNorm bias dtype', () => uhd.layerNorm(f([2, 4]), null, i32([4])), 'layerNorm: dtypes differ'],
    ['layerNorm of a scalar', () => uhd.layerNorm(f([])), 'layerNorm: x must have rank >= 1'],
    ['rmsNorm of int32', () => uhd.rmsNorm(i32([2])), 'rmsNorm: x has dtype int32, expected float32 or float64'],
    ['gather float index', () => uhd.gather(f([3, 3]), 0, f([3, 3])), 'gather: index has dtype float32, expected int32'],
    ['gather index rank', () => uhd.gather(f([3, 3]), 0, i32([3])), 'gather: index [3] must have the rank of x [3,3]'],
    ['gather index too large', () => uhd.gather(f([3, 3]), 0, i32([2, 4])), 'gather: index [2,4] is larger than x [3,3] in dim 1'],
    ['indexSelect 2-d index', () => uhd.indexSelect(f([3, 3]), 0, i32([1, 1])), 'indexSelect: index must be 1-d, got [1,1]'],
    ['scatterAdd src too small', () => uhd.scatterAdd(f([3, 3]), 0, i32([2, 3]), f([1, 3])), 'scatterAdd: src [1,3] must cover index [2,3]'],
    ['concat nothing', () => uhd.concat([]), 'concat: needs at least one tensor'],
    ['concat mismatched', () => uhd.concat([f([2, 3]), f([2, 4])], 0), 'concat: shapes differ outside dim 0: [2,3], [2,4]'],
    ['stack mismatched', () => uhd.stack([f([2]), f([3])]), 'stack: shapes differ: [2], [3]'],
  ])('%s', (_name, fn, message) => {
    expect(fn).toThrow(message);
  });
});

describe('attention', () => {
  const q = f([1, 4, 6, 8]);
  const kv = f([1, 2, 6, 8]);
  it.each([
    ['rank', () => uhd.attention(f([4, 6, 8]), kv, kv), 'attention: q must have rank 4, got [4,6,8]'],
    ['head dims', () => uhd.attention(q, f([1, 2, 6, 4]), f([1, 2, 6, 4])), 'attention: q, k, v shapes disagree: q [1,4,6,8], k [1,2,6,4], v [1,2,6,4]'],
    ['k vs v', () => uhd.attention(q, kv, f([1, 2, 5, 8])), 'attention: q, k, v shapes disagree'],
    ['heads not a multiple', () => uhd.attention(f([1, 3, 6, 8]), kv, kv), 'attention: q heads (3) must be a multiple of kv heads (2)'],
    ['segment id dtype', () => uhd.attention(q, kv, kv, { segmentIds: f([1, 6]) }), 'attention: segmentIds.q has dtype float32, expected int32'],
    ['segment id shape', () => uhd.attention(q, kv, kv, { segmentIds: i32([1, 5]) }), 'attention: segmentIds.q must be [1, 6], got [1,5]'],
    ['window size', () => uhd.attention(q, kv, kv, { window: { h: 2, w: 2 } }), 'attention: window 2x2 needs even h, w with h*w = Sq = Sk (Sq 6, Sk 6)'],
    ['odd window', () => uhd.attention(q, kv, kv, { window: { h: 3, w: 2 } }), 'attention: window 3x2 needs even h, w'],
    ['dtype', () => uhd.attention(q, kv.cast('int32'), kv), 'attention: dtypes differ'],
  ])('%s', (_name, fn, message) => {
    expect(fn).toThrow(message);
  });
});
