/**
 * Seeded random numbers (xoshiro128**). Numbers are drawn on the host and uploaded, so the
 * same seed gives the same tensors on every device.
 */

let state = new Uint32Array(4);

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** Resets the generator; every run after `manualSeed(s)` draws the same numbers. */
export function manualSeed(seed: number): void {
  const next = splitmix32(seed);
  state = new Uint32Array([next(), next(), next(), next()]);
}
manualSeed(0);

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Next raw 32-bit draw. */
export function nextUint32(): number {
  const s = state;
  const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
  const t = s[1] << 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 11);
  return result;
}

/** Uniform in [0, 1) with 53 random bits. */
export function uniform(): number {
  return ((nextUint32() >>> 5) * 67108864 + (nextUint32() >>> 6)) / 9007199254740992;
}

/** Standard normal (Box-Muller; one draw per call, so the stream is simple to reason about). */
export function normal(): number {
  const u = 1 - uniform(); // (0, 1]
  const v = uniform();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** The generator's state, for checkpoints. */
export function getRngState(): number[] {
  return [...state];
}

export function setRngState(s: readonly number[]): void {
  if (s.length !== 4) throw new Error(`setRngState: expected 4 words, got ${s.length}`);
  state = new Uint32Array(s);
}
