/**
 * Position-table buckets against PyTorch: tests/fixtures/position-buckets.py ran the release's
 * formula with torch's CPU kernels of both vector widths, for every axis length 1..256 and the
 * table sides in use (70, the release's; 16, the tiny configs').
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { arangeFloat32, positionBucket, positionBuckets, positionIds, type ArangeLanes } from '../../llava-uhd/vision.js';

interface SideTable {
  boundaries_fnv1a: number;
  /** deltas[n - 1][i]: bucket i minus bucket i - 1, one base-36 digit per patch. */
  deltas: string[];
  coords_fnv1a: number[];
}
const fixture = JSON.parse(readFileSync(new URL('../fixtures/position-buckets.json', import.meta.url), 'utf8')) as {
  lanes: Record<string, Record<string, SideTable>>;
};

function buckets(deltas: string): number[] {
  let b = 0;
  return [...deltas].map((d) => (b += parseInt(d, 36)));
}

/** FNV-1a 32 over the little-endian bytes of the float32 values (as the script hashes them). */
function fnv1a(values: Float32Array): number {
  let h = 0x811c9dc5;
  for (const byte of new Uint8Array(values.buffer, values.byteOffset, values.byteLength)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

const LANES: ArangeLanes[] = [8, 16];
const SIDES = [70, 16];

describe('position buckets match PyTorch for every axis length 1..256', () => {
  for (const lanes of LANES) {
    for (const side of SIDES) {
      const table = fixture.lanes[String(lanes)][String(side)];
      it(`arange's float32 values are torch's, bit for bit (${lanes} lanes, side ${side})`, () => {
        expect(fnv1a(arangeFloat32(1 / side, 1.0, 1 / side, lanes))).toBe(table.boundaries_fnv1a);
        const bad: number[] = [];
        for (let n = 1; n <= 256; n++) if (fnv1a(arangeFloat32(0, 1 - 1e-6, Math.fround(1 / n), lanes)) !== table.coords_fnv1a[n - 1]) bad.push(n);
        expect(bad, 'axis lengths whose coordinates differ from torch.arange').toEqual([]);
      });
      it(`buckets are torch.bucketize's (${lanes} lanes, side ${side})`, () => {
        expect(table.deltas.length).toBe(256);
        for (let n = 1; n <= 256; n++) expect([...positionBuckets(n, side, lanes)], `n = ${n}`).toEqual(buckets(table.deltas[n - 1]));
      });
    }
  }

  it('the old formula (count fround(b/side) <= fround(i/n)) misses ties that torch places otherwise', () => {
    // what vision.ts computed before: proves the fixture can tell the two apart
    const old = (i: number, n: number, side: number) => {
      let c = 0;
      for (let b = 1; b < side; b++) if (Math.fround(b / side) <= Math.fround(i / n)) c++;
      return c;
    };
    const table = fixture.lanes['8']['70'];
    const differ: number[] = [];
    for (let n = 1; n <= 256; n++) {
      const want = buckets(table.deltas[n - 1]);
      if (want.some((b, i) => b !== old(i, n, 70))) differ.push(n);
    }
    expect(differ).toContain(100);
  });

  it('the two kernel widths agree on every grid of a view up to 980 px (sides multiples of 4 patches up to 70)', () => {
    // the release's views: multiples of 56 px = 4 patches; where the widths differ is beyond them
    for (const side of SIDES) {
      for (let n = 4; n <= 70; n += 4) expect([...positionBuckets(n, side, 16)], `n = ${n}, side ${side}`).toEqual([...positionBuckets(n, side, 8)]);
    }
    const differ = (side: number) => Array.from({ length: 256 }, (_, k) => k + 1).filter((n) => fixture.lanes['8'][String(side)].deltas[n - 1] !== fixture.lanes['16'][String(side)].deltas[n - 1]);
    expect(differ(70).length).toBeGreaterThan(0);
    expect(differ(70).every((n) => n % 4 !== 0 || n > 70)).toBe(true);
  });

  it('positionIds is the outer sum of the two axes, row-major; bad input is named', () => {
    const rows = positionBuckets(3, 70);
    const cols = positionBuckets(5, 70);
    expect(positionIds({ h: 3, w: 5 }, 70)).toEqual([...rows].flatMap((r) => [...cols].map((c) => r * 70 + c)));
    expect(positionBucket(2, 5, 70)).toBe(cols[2]);
    expect(() => positionBuckets(0, 70)).toThrow(/axis length 0/);
    expect(() => positionBucket(5, 5, 70)).toThrow(/outside 0..4/);
  });
});
