/**
 * The autograd layer: differentiable versions of every tensor op (functional, and as Tensor
 * methods once this module is loaded), backward(), noGrad(), gradcheck and checkpointing.
 */
import './install.js';

export * from './functions.js';
export { linear } from './fused.js';
export { backward, noGrad, enableGrad, isGradEnabled, detach, zeroGrad, record, type GradNode, type BackwardRule, type BackwardOptions } from './graph.js';
export { gradcheck, type GradcheckOptions, type GradcheckResult } from './gradcheck.js';
export { checkpoint } from './checkpoint.js';
