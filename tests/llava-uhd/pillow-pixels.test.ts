/**
 * Same pixels as the release: decodeImage against what Pillow 9.4 decodes (Image.open(f)
 * .convert('RGB'), the release's loaders) for PNGs of every colour type and bit depth
 * (tests/fixtures/png) and JPEGs of every common kind (tests/fixtures/jpeg): exact with the
 * built-in PNG decoder and with sharp; the jpeg-js fallback's largest difference is measured.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pngjs from 'pngjs';
import { describe, expect, it } from 'vitest';
import { decodeImage, imageDecoders, jpegDecoderInUse } from '../../llava-uhd/image.js';

const fixtures = new URL('../fixtures/', import.meta.url);
const pngCases = JSON.parse(readFileSync(new URL('png/cases.json', fixtures), 'utf8')) as {
  cases: Record<string, { mode: string; size: [number, number]; png: string; rgb: string }>;
};
const jpegManifest = JSON.parse(readFileSync(new URL('jpeg/manifest.json', fixtures), 'utf8')) as {
  cases: Record<string, { mode: string; size: [number, number]; rgb_sha256: string; options: Record<string, unknown> }>;
};

/** Pillow's RGB pixels of a JPEG fixture, from the lossless PNG beside it (read with pngjs: 8-bit RGB PNG). */
function pillowPixels(name: string): Uint8Array {
  const png = pngjs.PNG.sync.read(readFileSync(new URL(`jpeg/${name}.pillow.png`, fixtures)));
  const rgb = new Uint8Array(png.width * png.height * 3);
  for (let i = 0; i < png.width * png.height; i++) rgb.set(png.data.subarray(i * 4, i * 4 + 3), i * 3);
  return rgb;
}

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

describe('PNG: identical to Pillow on every colour type and bit depth', () => {
  for (const [name, c] of Object.entries(pngCases.cases)) {
    it(`${name} (Pillow mode ${c.mode})`, async () => {
      const img = await decodeImage(Buffer.from(c.png, 'hex'), `${name}.png`);
      expect([img.width, img.height]).toEqual(c.size);
      expect(Buffer.from(img.data).toString('hex')).toBe(c.rgb);
    });
  }

  it('pngjs, the decoder used before, differs on 16-bit images and refuses palette indices past PLTE and data after the last row, which Pillow reads', () => {
    const outcome = (c: { png: string; rgb: string }): 'same' | 'differs' | 'throws' => {
      let r: { width: number; height: number; data: Buffer };
      try {
        r = pngjs.PNG.sync.read(Buffer.from(c.png, 'hex'));
      } catch {
        return 'throws';
      }
      const want = Buffer.from(c.rgb, 'hex');
      for (let i = 0; i < r.width * r.height; i++) for (let k = 0; k < 3; k++) if (r.data[i * 4 + k] !== want[i * 3 + k]) return 'differs';
      return 'same';
    };
    const by = Object.entries(pngCases.cases).map(([n, c]) => [n, outcome(c)] as const);
    const differs = by.filter(([, o]) => o === 'differs').map(([n]) => n);
    const throws = by.filter(([, o]) => o === 'throws').map(([n]) => n);
    expect(differs.length).toBeGreaterThan(0);
    expect(differs.filter((n) => !n.includes('16'))).toEqual([]);
    expect(throws.length).toBeGreaterThan(0);
    expect(throws.filter((n) => !n.includes('type3') && !n.includes('palette') && n !== 'rgb8-trailing-data')).toEqual([]);
  });
});

const jpegNames = readdirSync(new URL('jpeg/', fixtures)).filter((f) => f.endsWith('.jpg')).map((f) => f.slice(0, -4)).sort();

describe('JPEG: sharp decodes exactly as Pillow', () => {
  it('every fixture of the manifest is there (4:2:0, 4:2:2, 4:4:4, progressive, grey, CMYK, EXIF, ICC)', () => {
    expect(jpegNames).toEqual(Object.keys(jpegManifest.cases).sort());
    expect(jpegNames.length).toBeGreaterThanOrEqual(9);
  });

  for (const name of jpegNames) {
    it(`${name}: pixel for pixel`, async () => {
      const c = jpegManifest.cases[name];
      const img = await decodeImage(readFileSync(new URL(`jpeg/${name}.jpg`, fixtures)), `${name}.jpg`, { jpegDecoder: 'sharp' });
      expect([img.width, img.height]).toEqual(c.size);
      expect(createHash('sha256').update(img.data).digest('hex')).toBe(c.rgb_sha256);
      expect(maxDiff(img.data, pillowPixels(name))).toBe(0);
    });
  }

  it('the EXIF-rotated file keeps its stored orientation, as Pillow opens it', async () => {
    const rotated = await decodeImage(readFileSync(new URL('jpeg/exif-rotated.jpg', fixtures)), 'exif-rotated.jpg', { jpegDecoder: 'sharp' });
    expect([rotated.width, rotated.height]).toEqual([61, 43]);
  });

  it("'auto' uses sharp here and says so", async () => {
    expect(await jpegDecoderInUse()).toBe('sharp');
    expect((await imageDecoders()).jpeg).toMatch(/^sharp .*libvips/);
  });
});

describe('JPEG: the jpeg-js fallback, measured', () => {
  it('decodes every fixture to the right size; its largest difference from Pillow per file is reported', async () => {
    const diffs: Record<string, number> = {};
    for (const name of jpegNames) {
      const img = await decodeImage(readFileSync(new URL(`jpeg/${name}.jpg`, fixtures)), `${name}.jpg`, { jpegDecoder: 'jpeg-js' });
      expect([img.width, img.height]).toEqual(jpegManifest.cases[name].size);
      diffs[name] = maxDiff(img.data, pillowPixels(name));
    }
    console.log('jpeg-js vs Pillow, max |difference| per file:', JSON.stringify(diffs));
    // 4:4:4 has no chroma upsampling: only the IDCT differs, by a few levels
    expect(diffs['444-q95']).toBeLessThanOrEqual(4);
    // with subsampled chroma it is far off (nearest-neighbour upsampling against libjpeg's fancy one)
    expect(diffs['420-q90']).toBeGreaterThan(16);
  });
});

describe('where sharp cannot load', () => {
  it("'auto' falls back to jpeg-js, says so, and still decodes (a child process where importing sharp fails)", () => {
    const dir = mkdtempSync(join(tmpdir(), 'uhd-nosharp-'));
    try {
      const hook = join(dir, 'no-sharp.mjs');
      writeFileSync(hook, `import { register } from 'node:module';\nregister('data:text/javascript,' + encodeURIComponent("export async function resolve(s, c, next) { if (s === 'sharp') throw new Error('no sharp here'); return next(s, c); }"));\n`);
      const probe = join(dir, 'probe.mts');
      const image = fileURLToPath(new URL('../../llava-uhd/image.ts', import.meta.url));
      const jpg = fileURLToPath(new URL('jpeg/420-q90.jpg', fixtures));
      writeFileSync(probe, `import { readFileSync } from 'node:fs';\nimport { decodeImage, imageDecoders, jpegDecoderInUse } from ${JSON.stringify(image)};\n`
        + `const img = await decodeImage(readFileSync(${JSON.stringify(jpg)}), 'a.jpg');\n`
        + `console.log(JSON.stringify({ inUse: await jpegDecoderInUse(), jpeg: (await imageDecoders()).jpeg, size: [img.width, img.height] }));\n`);
      const r = spawnSync(process.execPath, ['--import', 'tsx', '--import', hook, probe], { encoding: 'utf8', cwd: fileURLToPath(new URL('../../', import.meta.url)) });
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { inUse: string; jpeg: string; size: number[] };
      expect(out.inUse).toBe('jpeg-js');
      expect(out.jpeg).toMatch(/^jpeg-js .*fallback/);
      expect(out.size).toEqual([61, 43]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
