export * from './elementwise.js';
export * from './reduce.js';
export * from './matmul.js';
export * from './attention.js';
export * from './norm.js';
export * from './indexing.js';
export * from './grid.js';
export * from './grad.js';
