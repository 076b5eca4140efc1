/**
 * A Qwen3-style decoder (pre-norm RMSNorm, grouped-query attention with QK-norm and RoPE,
 * SwiGLU), with the Hugging Face parameter names so that `model.layers.N.self_attn.q_proj.weight`
 * and friends line up with checkpoints. Used by the tests' tiny language model and, under the
 * `llm.` prefix, by LLaVA-UHD's language model.
 */
import * as ag from '../autograd/index.js';
import { fmt } from '../tensor/shape.js';
import type { Tensor } from '../tensor/index.js';
import { KVCache, MultiHeadAttention } from './attention.js';
import { normalInit, type InitOptions } from './init.js';
import { Embedding, RMSNorm } from './layers.js';
import { SwiGLU } from './mlp.js';
import { Module } from './module.js';

/** The Qwen3 config keys this decoder reads (as in its config.json). */
export interface DecoderConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim?: number;
  rms_norm_eps?: number;
  rope_theta?: number;
  tie_word_embeddings?: boolean;
  initializer_range?: number;
}

export class DecoderLayer extends Module {
  input_layernorm: RMSNorm;
  self_attn: MultiHeadAttention;
  post_attention_layernorm: RMSNorm;
  mlp: SwiGLU;
  constructor(c: DecoderConfig, opts: InitOptions = {}) {
    super();
    const eps = c.rms_norm_eps ?? 1e-6;
    this.input_layernorm = this.module('input_layernorm', new RMSNorm(c.hidden_size, eps, opts));
    this.self_attn = this.module('self_attn', new MultiHeadAttention({
      ...opts,
      dim: c.hidden_size,
      heads: c.num_attention_heads,
      kvHeads: c.num_key_value_heads,
      headDim: c.head_dim ?? c.hidden_size / c.num_attention_heads,
      bias: false,
      qkNorm: true,
      normEps: eps,
      ropeTheta: c.rope_theta ?? 1e6,
      outName: 'o_proj',
    }));
    this.post_attention_layernorm = this.module('post_attention_layernorm', new RMSNorm(c.hidden_size, eps, opts));
    this.mlp = this.module('mlp', new SwiGLU(c.hidden_size, c.intermediate_size, opts));
  }
  /** h: [B, S, hidden]; causal self-attention (segment ids restrict it further for packed samples). */
  forward(h: Tensor, call: { cache?: KVCache; segmentIds?: Tensor } = {}): Tensor {
    const a = this.self_attn.forward(this.input_layernorm.forward(h), { causal: true, ...call, residual: h });
    return this.mlp.forward(this.post_attention_layernorm.forward(a), a);
  }
}

/** Embedding, decoder layers, final norm: `model.*` in the checkpoints. */
export class DecoderModel extends Module {
  embed_tokens: Embedding;
  layers: DecoderLayer[];
  norm: RMSNorm;
  constructor(readonly config: DecoderConfig, opts: InitOptions = {}) {
    super();
    const std = config.initializer_range ?? 0.02;
    this.embed_tokens = this.module('embed_tokens', new Embedding(config.vocab_size, config.hidden_size, { ...opts, std }));
    this.layers = Array.from({ length: config.num_hidden_layers }, (_, i) => this.module(`layers.${i}`, new DecoderLayer(config, opts)));
    this.norm = this.module('norm', new RMSNorm(config.hidden_size, config.rms_norm_eps ?? 1e-6, opts));
  }
  /** embeddings [B, S, hidden] -> final hidden states. */
  forward(embeds: Tensor, call: { caches?: KVCache[]; segmentIds?: Tensor } = {}): Tensor {
    let h = embeds;
    this.layers.forEach((layer, i) => {
      h = layer.forward(h, { cache: call.caches?.[i], segmentIds: call.segmentIds });
    });
    return this.norm.forward(h);
  }
}

/** DecoderModel plus the LM head (tied to the embedding when tie_word_embeddings). */
export class CausalLM extends Module {
  model: DecoderModel;
  lm_head: Tensor | null;
  constructor(readonly config: DecoderConfig, opts: InitOptions = {}) {
    super();
    this.model = this.module('model', new DecoderModel(config, opts));
    this.lm_head = config.tie_word_embeddings
      ? null
      : this.param('lm_head.weight', normalInit([config.vocab_size, config.hidden_size], config.initializer_range ?? 0.02, opts));
  }
  /** int32 ids [B, S] -> logits [B, S, vocab]. */
  forward(ids: Tensor, call: { caches?: KVCache[]; segmentIds?: Tensor } = {}): Tensor {
    if (ids.rank !== 2) throw new Error(`CausalLM: ids must be [B, S], got ${fmt(ids.shape)}`);
    return this.logits(this.model.forward(this.model.embed_tokens.forward(ids), call));
  }
  logits(hidden: Tensor): Tensor {
    const head = this.lm_head ?? this.model.embed_tokens.weight;
    return ag.matmul(hidden, ag.transpose(head));
  }
}
