/**
 * The vision tower: SigLIP so400m/14 in the "navit" layout (LLaVA-UHD-V4.md, "Vision tower"),
 * with the intra-ViT compressor D inserted after layer k. All views of all images run as one
 * sequence; attention stays within each view (segment ids), and D merges each view's 2x2
 * windows so the layers after k see a quarter of the tokens.
 */
import { LayerNorm, MLP, Module, MultiHeadAttention, PatchEmbed, Embedding } from '../nn/index.js';
import { tensor, type Device, type Tensor } from '../tensor/index.js';
import type { InitOptions } from '../nn/init.js';
import type { VisionConfig } from './config.js';
import type { VisionCompressor } from './compressors.js';

/** One view's patch grid: h x w patches (each side = pixels / 14, a multiple of 4). */
export interface ViewGrid {
  h: number;
  w: number;
}

/**
 * Lanes of PyTorch's CPU `arange` kernel, which change its float32 results: each vector of L lanes
 * starts from its first element rounded to float32 and adds k·step in double (8 lanes for the AVX2
 * and default kernels, 16 for AVX512, which PyTorch 2 picks on an AVX512 CPU).
 */
export type ArangeLanes = 8 | 16;

/**
 * `torch.arange(start, end, step)` in float32 on CPU, bit for bit: length ceil((end − start)/step)
 * in double; pairs of vectors, element j + k of the vector at j = fround(fround(start + step·j) +
 * k·step) in double; the tail past the last whole pair element by element, fround(start + step·i).
 */
export function arangeFloat32(start: number, end: number, step: number, lanes: ArangeLanes = 8): Float32Array {
  const n = Math.ceil((end - start) / step);
  if (!(n >= 0 && n <= 1 << 24)) throw new Error(`arangeFloat32: ${n} elements from (${start}, ${end}, ${step})`);
  const out = new Float32Array(n); // a store rounds to float32, as the kernel's cast
  let i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    for (const j of [i, i + lanes]) {
      const base = Math.fround(start + step * j);
      for (let k = 0; k < lanes; k++) out[j + k] = base + k * step;
    }
  }
  for (; i < n; i++) out[i] = start + step * i;
  return out;
}

/**
 * Position-table buckets of the n patches of one axis, as the release computes them
 * (modeling_navit_siglip_fast.py, SiglipVisionEmbeddings): boundaries = arange(1/side, 1, 1/side),
 * coords = arange(0, 1 − 1e-6, 1/n) with 1/n the float32 reciprocal of the int32 grid size,
 * bucket = bucketize(coords, boundaries, right=True) = how many boundaries are <= the coord.
 * Checked for every n in 1..256 against PyTorch (tests/fixtures/position-buckets.py).
 */
export function positionBuckets(n: number, side: number, lanes: ArangeLanes = 8): Int32Array {
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(side) || side < 1) throw new Error(`positionBuckets: axis length ${n} and table side ${side} must be integers >= 1`);
  const boundaries = arangeFloat32(1 / side, 1.0, 1 / side, lanes);
  const coords = arangeFloat32(0, 1 - 1e-6, Math.fround(1 / n), lanes);
  if (coords.length !== n) throw new Error(`positionBuckets: arange gave ${coords.length} coordinates for ${n} patches`);
  const out = new Int32Array(n);
  let b = 0;
  for (let i = 0; i < n; i++) {
    while (b < boundaries.length && boundaries[b] <= coords[i]) b++; // coords ascend
    out[i] = b;
  }
  return out;
}

/** Bucket of patch index i in a grid of n along one axis (see positionBuckets). */
export function positionBucket(i: number, n: number, side: number, lanes: ArangeLanes = 8): number {
  if (!Number.isInteger(i) || i < 0 || i >= n) throw new Error(`positionBucket: index ${i} is outside 0..${n - 1}`);
  return positionBuckets(n, side, lanes)[i];
}

/** Rows of the side x side position table used by an h x w view, row-major. */
export function positionIds(grid: ViewGrid, side: number, lanes: ArangeLanes = 8): number[] {
  return Array.from(positionIdRows(grid, side, lanes));
}

/** positionIds as int32, cached by grid, side and lanes (every training step meets the same few grids). */
const positionIdCache = new Map<string, Int32Array>();
const POSITION_ID_CACHE_SIZE = 512;

function positionIdRows(grid: ViewGrid, side: number, lanes: ArangeLanes): Int32Array {
  const key = `${grid.h}x${grid.w}|${side}|${lanes}`;
  let ids = positionIdCache.get(key);
  if (!ids) {
    const rows = positionBuckets(grid.h, side, lanes);
    const cols = positionBuckets(grid.w, side, lanes);
    ids = new Int32Array(grid.h * grid.w);
    for (let i = 0; i < grid.h; i++) for (let j = 0; j < grid.w; j++) ids[i * grid.w + j] = rows[i] * side + cols[j];
    if (positionIdCache.size >= POSITION_ID_CACHE_SIZE) positionIdCache.clear();
    positionIdCache.set(key, ids);
  }
  return ids;
}

/** A pre-norm block: x += attn(LN1 x); x += fc2(gelu(fc1(LN2 x))). */
export class EncoderLayer extends Module {
  layer_norm1: LayerNorm;
  self_attn: MultiHeadAttention;
  layer_norm2: LayerNorm;
  mlp: MLP;
  constructor(c: VisionConfig, opts: InitOptions = {}) {
    super();
    const eps = c.layer_norm_eps ?? 1e-6;
    this.layer_norm1 = this.module('layer_norm1', new LayerNorm(c.hidden_size, eps, opts));
    this.self_attn = this.module('self_attn', new MultiHeadAttention({ ...opts, dim: c.hidden_size, heads: c.num_attention_heads, bias: true, outName: 'out_proj' }));
    this.layer_norm2 = this.module('layer_norm2', new LayerNorm(c.hidden_size, eps, opts));
    this.mlp = this.module('mlp', new MLP(c.hidden_size, c.intermediate_size, 'tanh', opts));
  }
  /** x: [1, N, d]; segmentIds [1, N] keep attention within each view. */
  forward(x: Tensor, segmentIds: Tensor): Tensor {
    const y = this.self_attn.forward(this.layer_norm1.forward(x), { segmentIds, residual: x });
    return this.mlp.forward(this.layer_norm2.forward(y), y);
  }
  /** The MLP sub-block alone: x + fc2(gelu(fc1(LN2 x))) (what D's initialisation reproduces). */
  mlpBlock(x: Tensor): Tensor {
    return this.mlp.forward(this.layer_norm2.forward(x), x);
  }
}

class Embeddings extends Module {
  patch_embedding: PatchEmbed;
  position_embedding: Embedding;
  constructor(readonly c: VisionConfig, opts: InitOptions = {}) {
    super();
    const side = c.position_embedding_side ?? 70;
    this.patch_embedding = this.module('patch_embedding', new PatchEmbed(c.patch_size, c.num_channels ?? 3, c.hidden_size, opts));
    this.position_embedding = this.module('position_embedding', new Embedding(side * side, c.hidden_size, { ...opts, std: 0.02 }));
  }
}

class Encoder extends Module {
  layers: EncoderLayer[];
  constructor(c: VisionConfig, opts: InitOptions = {}) {
    super();
    this.layers = Array.from({ length: c.num_hidden_layers }, (_, i) => this.module(`layers.${i}`, new EncoderLayer(c, opts)));
  }
}

/** The `vpm.` tower. */
export class VisionTower extends Module {
  embeddings: Embeddings;
  encoder: Encoder;
  post_layernorm: LayerNorm;
  constructor(readonly config: VisionConfig, opts: InitOptions = {}) {
    super();
    this.embeddings = this.module('embeddings', new Embeddings(config, opts));
    this.encoder = this.module('encoder', new Encoder(config, opts));
    this.post_layernorm = this.module('post_layernorm', new LayerNorm(config.hidden_size, config.layer_norm_eps ?? 1e-6, opts));
  }

  /** Patch + position embeddings of each view, concatenated: [1, sum(h*w), d]. */
  embed(pixels: Tensor[]): { x: Tensor; grids: ViewGrid[] } {
    const p = this.config.patch_size;
    const side = this.config.position_embedding_side ?? 70;
    const grids = pixels.map((px) => ({ h: px.shape[1] / p, w: px.shape[2] / p }));
    // every view's patches in one linear layer, every view's position rows in one lookup
    const rows = new Int32Array(grids.reduce((n, g) => n + g.h * g.w, 0));
    let at = 0;
    for (const g of grids) {
      rows.set(positionIdRows(g, side, 8), at);
      at += g.h * g.w;
    }
    const ids = tensor(rows, { dtype: 'int32', device: pixels[0].device });
    const pos = this.embeddings.position_embedding.forward(ids); // [sum(h*w), d]
    ids.dispose();
    const x = this.embeddings.patch_embedding.forwardViews(pixels, pos); // [1, sum(h*w), d]
    return { x, grids };
  }

  /**
   * Runs the tower over every view in one sequence. With a compressor, D runs after layer
   * `insertLayer` and each view's grid halves per side. Returns post-layernormed tokens
   * [1, N', d] and the grids after compression.
   */
  forward(pixels: Tensor[], compressor: VisionCompressor | null, insertLayer: number | null): { x: Tensor; grids: ViewGrid[] } {
    let { x, grids } = this.embed(pixels);
    const device = x.device;
    let seg = segmentIdsFor(grids, device);
    this.encoder.layers.forEach((layer, i) => {
      x = layer.forward(x, seg);
      if (compressor && i === insertLayer) {
        x = compressor.forward(x, grids);
        grids = grids.map((g) => ({ h: g.h / 2, w: g.w / 2 }));
        seg.dispose();
        seg = segmentIdsFor(grids, device);
      }
    });
    seg.dispose();
    return { x: this.post_layernorm.forward(x), grids };
  }
}

/** int32 [1, N]: view index of every token. */
export function segmentIdsFor(grids: ViewGrid[], device: Device): Tensor {
  const ids = new Int32Array(grids.reduce((n, g) => n + g.h * g.w, 0));
  let at = 0;
  grids.forEach((g, v) => {
    ids.fill(v, at, at + g.h * g.w);
    at += g.h * g.w;
  });
  return tensor(ids, { dtype: 'int32', device, shape: [1, ids.length] });
}
