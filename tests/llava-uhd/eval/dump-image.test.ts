import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { imageHeader, vlmevalImage } from '../../../llava-uhd/eval/dump-image.js';

const fixture = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'pil_jpeg.json'), 'utf8')) as {
  cases: { name: string; base64: string; width: number; height: number; jpeg_roundtrip_sha256: string; direct_sha256: string }[];
};
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe("VLMEvalKit's dump_image path, pixel for pixel as Pillow", () => {
  for (const c of fixture.cases) {
    it(`${c.name}: the JPEG round trip of a '<index>.jpg' dump, and the direct decode of a '.png' name`, async () => {
      const viaJpg = await vlmevalImage({ kind: 'base64', data: c.base64, dumpName: '7.jpg' }, 'row 7');
      expect([viaJpg.width, viaJpg.height]).toEqual([c.width, c.height]);
      expect(sha(viaJpg.data)).toBe(c.jpeg_roundtrip_sha256);
      const direct = await vlmevalImage({ kind: 'base64', data: c.base64, dumpName: 'a.png' }, 'row 7');
      expect(sha(direct.data)).toBe(c.direct_sha256);
      expect(c.direct_sha256).not.toBe(c.jpeg_roundtrip_sha256); // the round trip does change the pixels
      const skipped = await vlmevalImage({ kind: 'base64', data: c.base64, dumpName: '7.jpg' }, 'row 7', { jpegRoundTrip: false });
      expect(sha(skipped.data)).toBe(c.direct_sha256);
    });
  }

  it('what is not an image PIL would open is refused naming the row', async () => {
    const b = (s: string) => Buffer.from(s);
    await expect(imageHeader(b('not an image at all'), 'x.tsv: row index 3: image 1')).rejects.toThrow(/row index 3: image 1: not an image PIL could open/);
    const svg = b('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>');
    await expect(imageHeader(svg, 'row 4')).rejects.toThrow(/row 4: image format 'svg' is not one of/);
  });
});
