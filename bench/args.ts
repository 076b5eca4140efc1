/** Command-line flags of the benchmarks. */

/**
 * The host-cost benchmarks' default `--warmup`: training steps run before the ones measured. The main job's
 * batches change shape from step to step, so the first steps still meet kernels, buffer sizes
 * and bind groups for the first time: on the tiny-demo stage 2 (2026-12-03) step 0 compiled 91
 * pipelines, steps 1, 2 and 4 compiled 3, 1 and 1 more (a compile is milliseconds of host time
 * on llvmpipe) and steps 1-4 created 47, 40, 14 and 13 buffers; from step 5 on no pipeline
 * and at most a few buffers. Six warm-up steps measure what a training run's thousands of later
 * steps cost; each benchmark prints what its measured steps still created.
 */
export const WARMUP_STEPS = 6;

/**
 * Takes `name N` out of `args` (N a positive integer, else an error naming the flag), or gives
 * `dflt` where the flag is absent.
 */
export function takeCount(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(args.splice(i, 2)[1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name}: expected a positive integer`);
  return v;
}
