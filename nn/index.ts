/** The nn layer: modules, layers, attention, losses, initialisation. */
export { Module, type LoadReport } from './module.js';
export { Linear, LayerNorm, RMSNorm, Embedding, PatchEmbed, Dropout, type LinearOptions } from './layers.js';
export { MultiHeadAttention, KVCache, ropeTables, applyRope, type AttentionConfig, type AttentionCall } from './attention.js';
export { MLP, SwiGLU } from './mlp.js';
export { crossEntropy, type CrossEntropyOptions } from './loss.js';
export { normalInit, truncNormalInit, zerosInit, onesInit, type InitOptions } from './init.js';
export * as optim from './optim.js';
export { AdamW, SGD, LRScheduler, warmupCosine, constant, clipGradNorm, clipGradNormAsync, paramGroups, LLAVA_UHD_ADAMW } from './optim.js';
export * from './safetensors.js';
export { saveCheckpoint, loadCheckpoint, CHECKPOINT_FORMAT, type TrainingState, type ResumeTargets } from './checkpoint.js';
export { DecoderLayer, DecoderModel, CausalLM, type DecoderConfig } from './transformer.js';
export * from './half-weights.js';
