/** The nn layer: modules, layers, attention, losses, initialisation. */
export { Module, type LoadReport } from './module.js';
export { Linear, LayerNorm, RMSNorm, Embedding, PatchEmbed, Dropout, type LinearOptions } from './layers.js';
export { MultiHeadAttention, KVCache, ropeTables, applyRope, type AttentionConfig, type AttentionCall } from './attention.js';
export { MLP, SwiGLU } from './mlp.js';
export { crossEntropy, type CrossEntropyOptions } from './loss.js';
export { normalInit, truncNormalInit, zerosInit, onesInit, type InitOptions } from './init.js';
