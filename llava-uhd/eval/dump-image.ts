/**
 * What a benchmark row's image becomes on its way to the model in VLMEvalKit: `dump_image`
 * (release `vlmevalkit/vlmeval/dataset/image_base.py`) decodes the base64 with PIL, converts
 * RGBA/P/LA to RGB and saves it to `<index>.jpg` (a multi-image row: to its `image_path` names),
 * and the wrapper reopens that file with `Image.open(p).convert('RGB')`. Saving to `.jpg`
 * re-encodes the image as JPEG at PIL's defaults (quality 75, 4:2:0 chroma subsampling), so the
 * model sees a JPEG of every single-image row, even when the TSV holds a PNG. sharp's JPEG
 * encoder and decoder (libjpeg-turbo behaviour) give pixel for pixel what PIL gives for both
 * steps (checked against Pillow 9.4 in tests/llava-uhd/eval/dump-image.test.ts, whose fixture
 * comes from tests/llava-uhd/eval/fixtures/pil_jpeg.py), so the same pixels reach our model.
 *
 * Limits: formats PIL would open (PNG, JPEG, GIF, WebP, TIFF), at most PIL's decompression-bomb
 * limit of pixels (2 x 89,478,485).
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import sharp, { type Metadata, type OutputInfo, type Sharp } from 'sharp';
import type { RgbImage } from '../image.js';
import type { ImageSource } from './vlmeval-tsv.js';

/** PIL's `Image.MAX_IMAGE_PIXELS` times two: beyond it PIL refuses to open an image. */
export const MAX_IMAGE_PIXELS = 2 * 89_478_485;
const FORMATS = new Set(['png', 'jpeg', 'gif', 'webp', 'tiff']);

function open(bytes: Uint8Array): Sharp {
  return sharp(bytes, { ignoreIcc: true, limitInputPixels: MAX_IMAGE_PIXELS });
}

/** Width, height and format from the header alone (cheap: nothing is decoded). */
export async function imageHeader(bytes: Uint8Array, where: string): Promise<{ width: number; height: number; format: string }> {
  let meta: Metadata;
  try {
    meta = await open(bytes).metadata();
  } catch (e) {
    throw new Error(`${where}: not an image PIL could open (${(e as Error).message})`);
  }
  const format = meta.format ?? 'unknown';
  if (!FORMATS.has(format)) throw new Error(`${where}: image format '${format}' is not one of ${[...FORMATS].join(', ')}`);
  const { width, height } = meta;
  if (!width || !height) throw new Error(`${where}: the image has no size`);
  if (width * height > MAX_IMAGE_PIXELS) throw new Error(`${where}: ${width}x${height} is more than ${MAX_IMAGE_PIXELS} pixels`);
  return { width, height, format };
}

/** Raw 8-bit pixels of an image as RGB (alpha dropped, grey replicated), as PIL's convert('RGB'). */
async function toRgb(img: Sharp, where: string): Promise<RgbImage> {
  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await img.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new Error(`${where}: cannot decode the image (${(e as Error).message})`);
  }
  const { width, height, channels } = out.info;
  const src = out.data;
  if (channels === 3) return { width, height, data: new Uint8Array(src.buffer, src.byteOffset, src.byteLength) };
  if (channels !== 1) throw new Error(`${where}: decoded to ${channels} channels, expected 1 or 3`);
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data[3 * i] = data[3 * i + 1] = data[3 * i + 2] = src[i];
  return { width, height, data };
}

/** The bytes of an image source (base64 decoded, or the file read). */
export async function sourceBytes(src: ImageSource, where: string): Promise<Uint8Array> {
  if (src.kind === 'base64') return Buffer.from(src.data, 'base64');
  try {
    return await readFile(src.path);
  } catch (e) {
    throw new Error(`${where}: cannot read image file ${src.path}: ${(e as Error).message}`);
  }
}

/** PIL's `save(path)` then `Image.open(path).convert('RGB')`, for a `.jpg` name: JPEG quality 75, 4:2:0. */
export async function pilJpegRoundTrip(bytes: Uint8Array, where: string): Promise<RgbImage> {
  let jpeg: Buffer;
  try {
    jpeg = await open(bytes).removeAlpha().jpeg({ quality: 75, chromaSubsampling: '4:2:0' }).toBuffer();
  } catch (e) {
    throw new Error(`${where}: cannot decode the image (${(e as Error).message})`);
  }
  return toRgb(open(jpeg), where);
}

/** PIL's `Image.open(bytes).convert('RGB')`. */
export async function pilDecode(bytes: Uint8Array, where: string): Promise<RgbImage> {
  return toRgb(open(bytes), where);
}

/**
 * The RGB image VLMEvalKit hands the model for one source: base64 dumped to a `.jpg`/`.jpeg`
 * name goes through the JPEG round trip; one dumped to another name (`.png`) and image files
 * are decoded as they are. `jpegRoundTrip: false` skips the round trip (the TSV's own pixels).
 */
export async function vlmevalImage(src: ImageSource, where: string, opts: { jpegRoundTrip?: boolean } = {}): Promise<RgbImage> {
  const bytes = await sourceBytes(src, where);
  await imageHeader(bytes, where);
  const jpegName = src.kind === 'base64' && ['.jpg', '.jpeg'].includes(extname(src.dumpName).toLowerCase());
  return jpegName && opts.jpegRoundTrip !== false ? pilJpegRoundTrip(bytes, where) : pilDecode(bytes, where);
}
