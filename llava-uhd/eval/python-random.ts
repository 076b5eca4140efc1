/**
 * Python's `random` module, as far as the release's VLMEvalKit wrapper uses it: `random.seed(0)`
 * in `MiniCPM_4_V.__init__`, then `random.randint(w, w_max)` for each small image it up-scales
 * (`vlmevalkit/vlmeval/vlm/minicpm_v.py`, `MiniCPM_4_V.generate_inner`). The generator is the
 * Mersenne Twister MT19937 seeded through `init_by_array` with the seed's 32-bit words, and
 * `randint` draws with rejection from `getrandbits(n.bit_length())`, as CPython does, so the same
 * seed gives the same widths (tests/llava-uhd/eval/fixtures/python_random.py checks it).
 */
const N = 624;
const M = 397;

export class PythonRandom {
  private readonly mt = new Uint32Array(N);
  private mti = N + 1;

  constructor(seed: number | bigint = 0) {
    this.seed(seed);
  }

  /** `random.seed(n)` for an integer n. */
  seed(n: number | bigint): void {
    let v = BigInt(n);
    if (v < 0n) v = -v;
    const key: number[] = [];
    do {
      key.push(Number(v & 0xffffffffn));
      v >>= 32n;
    } while (v > 0n);
    this.initByArray(key);
  }

  private initGenrand(s: number): void {
    const mt = this.mt;
    mt[0] = s >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.mti = N;
  }

  private initByArray(key: number[]): void {
    const mt = this.mt;
    this.initGenrand(19650218);
    let i = 1;
    let j = 0;
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1664525)) + key[j] + j) >>> 0;
      i++;
      j++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
      if (j >= key.length) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1566083941)) - i) >>> 0;
      i++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
    }
    mt[0] = 0x80000000;
  }

  /** One 32-bit output (`genrand_uint32`). */
  uint32(): number {
    const mt = this.mt;
    if (this.mti >= N) {
      let kk = 0;
      const mix = (a: number, b: number) => (a & 0x80000000) | (b & 0x7fffffff);
      for (; kk < N - M; kk++) {
        const y = mix(mt[kk], mt[kk + 1]);
        mt[kk] = mt[kk + M] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      for (; kk < N - 1; kk++) {
        const y = mix(mt[kk], mt[kk + 1]);
        mt[kk] = mt[kk + (M - N)] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      const y = mix(mt[N - 1], mt[0]);
      mt[N - 1] = mt[M - 1] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      this.mti = 0;
    }
    let y = mt[this.mti++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** `random.getrandbits(k)` for 0 <= k <= 32. */
  getrandbits(k: number): number {
    if (!Number.isInteger(k) || k < 0 || k > 32) throw new Error(`getrandbits: k must be an integer in 0..32, got ${k}`);
    if (k === 0) return 0;
    return this.uint32() >>> (32 - k);
  }

  /** `random.randint(a, b)`: a + `_randbelow(b - a + 1)` (rejection sampling on bit_length bits). */
  randint(a: number, b: number): number {
    if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || b < a) throw new Error(`randint: need integers a <= b, got ${a}, ${b}`);
    const n = b - a + 1;
    if (n >= 2 ** 32) throw new Error(`randint: ranges of 2^32 values or more are not supported, got ${n}`);
    const k = n.toString(2).length; // n.bit_length()
    let r = this.getrandbits(k);
    while (r >= n) r = this.getrandbits(k);
    return a + r;
  }
}
