/** Command-line flags of the benchmarks. */

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
