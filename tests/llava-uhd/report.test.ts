/** The pictures: SVG charts, curves.svg from training metrics, the slice grid and merge map, the HTML report and its PNG. */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { CONFIGS } from '../../llava-uhd/config.js';
import { generateSample, syntheticOptions } from '../../llava-uhd/data/synthetic.js';
import { decodeImage } from '../../llava-uhd/image.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { escapeXml, lineChart, plotArea } from '../../llava-uhd/report/chart.js';
import { CURVES_FILE, parseCurves, writeCurves } from '../../llava-uhd/report/curves.js';
import { renderReport, renderReportPng, type ReportInput } from '../../llava-uhd/report/html.js';
import { mergeMap, mergeMapSvg, sliceGridSvg } from '../../llava-uhd/report/picture.js';
import { manualSeed } from '../../tensor/index.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-report-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const VOID = new Set(['meta', 'br', 'img', 'hr', 'link', 'input']);

/** Throws unless every tag closes in order (XML; HTML's void elements allowed) and no text holds a raw '<'. */
function checkWellFormed(doc: string): void {
  const stack: string[] = [];
  const body = doc.replace(/^<!DOCTYPE html>\n?/, '');
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let at = 0;
  for (let m = tag.exec(body); m; m = tag.exec(body)) {
    const text = body.slice(at, m.index);
    if (text.includes('<') || /&(?!(lt|gt|amp|quot|#39);)/.test(text)) throw new Error(`raw markup in text before offset ${m.index}: ${JSON.stringify(text.slice(0, 80))}`);
    at = tag.lastIndex;
    const [, close, name, , self] = m;
    if (self || (!close && VOID.has(name))) continue;
    if (!close) stack.push(name);
    else if (stack.pop() !== name) throw new Error(`</${name}> at offset ${m.index} closes the wrong element`);
  }
  if (body.slice(at).includes('<')) throw new Error('a tag that does not parse');
  if (stack.length) throw new Error(`unclosed: ${stack.join(', ')}`);
}

/** The path's points: "M x y L x y ...". */
function pathPoints(svg: string): [number, number][][] {
  return [...svg.matchAll(/<path d="([^"]+)"/g)].map((m) => [...m[1].matchAll(/[ML]([\d.-]+) ([\d.-]+)/g)].map((p) => [Number(p[1]), Number(p[2])] as [number, number]));
}

describe('lineChart', () => {
  const finite = fc.double({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true });
  it('is well formed, and every finite point lies inside the plot area', () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.tuple(finite, finite), { minLength: 1, maxLength: 30 }), { minLength: 1, maxLength: 4 }), fc.string({ maxLength: 12 }), (series, label) => {
        const svg = lineChart(series.map((points, i) => ({ label: `${label}${i}`, points })), { title: label, xLabel: label, yLabel: label });
        checkWellFormed(svg);
        const a = plotArea(720, 360);
        for (const line of pathPoints(svg)) for (const [x, y] of line) {
          expect(x).toBeGreaterThanOrEqual(a.left - 0.1);
          expect(x).toBeLessThanOrEqual(a.right + 0.1);
          expect(y).toBeGreaterThanOrEqual(a.top - 0.1);
          expect(y).toBeLessThanOrEqual(a.bottom + 0.1);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('maps increasing data to increasing x and decreasing SVG y, on linear and log axes', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.double({ min: 1e-3, max: 1e3, noNaN: true }), { minLength: 2, maxLength: 20 }), fc.boolean(), (ys, logY) => {
        const sorted = [...ys].sort((p, q) => p - q);
        const [line] = pathPoints(lineChart([{ label: 's', points: sorted.map((y, i) => [i, y] as [number, number]) }], { logY }));
        for (let i = 1; i < line.length; i++) {
          expect(line[i][0]).toBeGreaterThan(line[i - 1][0]);
          expect(line[i][1]).toBeLessThanOrEqual(line[i - 1][1]);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('leaves non-finite values out as gaps, refuses a chart with nothing to draw, and escapes labels', () => {
    const svg = lineChart([{ label: '<script>alert(1)</script>', points: [[0, 1], [1, NaN], [2, 3], [3, Infinity], [4, 2]] }], { title: 'a & b' });
    checkWellFormed(svg);
    expect(svg).not.toContain('<script>');
    expect(svg).toContain('&lt;script&gt;');
    expect(pathPoints(svg)[0]).toHaveLength(3);
    expect((svg.match(/M/g) ?? []).length).toBeGreaterThanOrEqual(3); // three pieces: 0, 2, 4
    expect(() => lineChart([{ label: 'x', points: [[0, NaN]] }], { title: 'empty' })).toThrow(/lineChart 'empty': no finite points/);
    expect(() => lineChart([{ label: 'x', points: [[0, -1]] }], { logY: true })).toThrow(/no finite points/);
    expect(escapeXml(`"'<>&`)).toBe('&quot;&#39;&lt;&gt;&amp;');
  });
});

describe('curves.svg', () => {
  it('counts steps on across stages, keeps validation apart, skips a cut last line', () => {
    const lines = [
      { stage: 'a', stageIndex: 0, step: 1, steps: 2, loss: 2, lr: 0.1 },
      { stage: 'a', stageIndex: 0, step: 2, steps: 2, loss: 1.5, lr: 0.1 },
      { stage: 'a', step: 2, val_loss: 1.7 },
      { stage: 'b', stageIndex: 1, step: 1, steps: 3, loss: 1, lr: 0.05 },
      { bad_sample: 'data.jsonl:3', stage: 'b' },
    ].map((l) => JSON.stringify(l));
    const c = parseCurves(lines.join('\n') + '\n{"stage": "b", "st');
    expect(c.loss).toEqual([[1, 2], [2, 1.5], [3, 1]]);
    expect(c.valLoss).toEqual([[2, 1.7]]);
    expect(c.lr).toEqual([[1, 0.1], [2, 0.1], [3, 0.05]]);
    expect(c.stages).toEqual([[2, 'b']]);
    const run = join(dir, 'run');
    rmSync(run, { recursive: true, force: true });
    expect(writeCurves(run)).toBeNull(); // no metrics yet
    mkdirSync(run, { recursive: true });
    writeFileSync(join(run, 'metrics.jsonl'), lines.join('\n') + '\n');
    const path = writeCurves(run)!;
    expect(path).toBe(join(run, CURVES_FILE));
    const svg = readFileSync(path, 'utf8');
    checkWellFormed(svg);
    expect(svg).toContain('validation loss');
    expect(svg).toContain('learning rate');
  });
});

describe('the report', () => {
  it('renders the table, curves, slice grid and merge map as one well-formed, self-contained page, and a PNG', async () => {
    manualSeed(0);
    const model = new LlavaUHD(structuredClone(CONFIGS.tiny));
    model.eval();
    const s = generateSample(3, 'test', syntheticOptions('tiny', { types: ['stripes'] }));
    const grid = sliceGridSvg(s.image, model);
    checkWellFormed(grid);
    const m = await mergeMap(model, s.image);
    expect(m.layer).toBe(CONFIGS.tiny.insert_layer_id);
    expect(m.similarity.length).toBe((m.grid.h / 2) * (m.grid.w / 2));
    for (const v of m.similarity) expect(Math.abs(v)).toBeLessThanOrEqual(1 + 1e-9);
    const input: ReportInput = {
      title: 'LLaVA-UHD v4 in miniature <test>',
      table: { header: ['', 'baseline', 'with D'], rows: [['accuracy', '50.0%', '75.0%'], ['MACs', '1.0', '0.5'], ['a & b', '<b>', '"q"']] },
      curves: [{ label: 'baseline', loss: [[1, 2], [2, 1]], valLoss: [[2, 1.2]] }, { label: 'with D', loss: [[1, 2.5], [2, 0.8]] }],
      sliceGridSvg: grid,
      mergeMapSvg: mergeMapSvg(m),
      question: { text: s.question, truth: s.answer, answers: [{ label: 'with D', text: 'red' }] },
      footer: 'npm start, wasm',
    };
    const html = renderReport(input);
    checkWellFormed(html);
    expect(html.match(/<table>/g)).toHaveLength(1);
    expect(html.match(/<tr>/g)).toHaveLength(4);
    expect(html.match(/<svg /g)!.length).toBeGreaterThanOrEqual(3);
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    expect(html).not.toContain('<test>');
    expect(html).not.toContain('<script');
    const png = join(process.env.UHD_REPORT_KEEP ?? dir, 'report.png');
    const size = await renderReportPng(input, png);
    const img = await decodeImage(readFileSync(png), png);
    expect([img.width, img.height]).toEqual([size.width, size.height]);
    expect(img.width).toBe(1000);
    expect(img.height).toBeGreaterThan(700);
  }, 60_000);
});
