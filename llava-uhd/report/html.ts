/**
 * The main job's report: one self-contained HTML file (inline CSS and SVG, images as data URIs,
 * no scripts, nothing fetched) with the results table, every model's curves on one chart, the
 * fresh image with its slice grid, the question and answers, and D's merge map; and a PNG poster
 * of the same pictures for the README (an SVG rasterised by sharp).
 */
import { writeFileSync, renameSync } from 'node:fs';
import { escapeXml, lineChart, PALETTE, type Series } from './chart.js';

export interface ReportModelCurve {
  label: string;
  /** [global step, loss]; validation loss optional. */
  loss: readonly (readonly [number, number])[];
  valLoss?: readonly (readonly [number, number])[];
}

export interface ReportInput {
  title: string;
  /** A sentence or two under the title. */
  summary?: string;
  table: { header: readonly string[]; rows: readonly (readonly string[])[] };
  curves: readonly ReportModelCurve[];
  /** SVG of the fresh image with its slice grid (picture.ts: sliceGridSvg). */
  sliceGridSvg?: string;
  /** SVG of D's merge map (picture.ts: mergeMapSvg). */
  mergeMapSvg?: string;
  /** The fresh question and what each model answered. */
  question?: { text: string; truth: string; answers: readonly { label: string; text: string }[] };
  /** Footer: the command and device. */
  footer?: string;
}

/** Every model's training loss (solid) and validation loss (dashed) on one chart. */
export function curvesChart(curves: readonly ReportModelCurve[], width = 720, height = 360): string {
  const series: Series[] = [];
  curves.forEach((c, i) => {
    const colour = PALETTE[i % PALETTE.length];
    series.push({ label: `${c.label}`, points: c.loss, colour });
    if (c.valLoss?.length) series.push({ label: `${c.label} (val)`, points: c.valLoss, colour, dashed: true });
  });
  return lineChart(series, { title: 'fine-tuning loss', xLabel: 'step', yLabel: 'nats per token', logY: true, width, height });
}

const CSS = `body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.pictures{display:flex;gap:16px;flex-wrap:wrap}figure{margin:0}figcaption{font-size:13px;color:#555}
footer{margin-top:2em;font-size:12px;color:#666}`;

/** The report as one HTML document. */
export function renderReport(r: ReportInput): string {
  const e = escapeXml;
  const head = `<tr>${r.table.header.map((h) => `<th>${e(h)}</th>`).join('')}</tr>`;
  const rows = r.table.rows.map((row) => `<tr>${row.map((c) => `<td>${e(c)}</td>`).join('')}</tr>`).join('\n');
  const parts = [
    '<!DOCTYPE html>',
    '<html lang="en">',
    `<head><meta charset="utf-8"><title>${e(r.title)}</title><style>${CSS}</style></head>`,
    '<body>',
    `<h1>${e(r.title)}</h1>`,
  ];
  if (r.summary) parts.push(`<p>${e(r.summary)}</p>`);
  parts.push('<h2>Results</h2>', `<table>\n${head}\n${rows}\n</table>`);
  if (r.curves.some((c) => c.loss.length)) parts.push('<h2>Training curves</h2>', `<figure>${curvesChart(r.curves)}</figure>`);
  if (r.sliceGridSvg || r.mergeMapSvg) {
    parts.push('<h2>A fresh image</h2>', '<div class="pictures">');
    if (r.sliceGridSvg) parts.push(`<figure>${r.sliceGridSvg}<figcaption>the image and the slices the model encodes (magenta)</figcaption></figure>`);
    if (r.mergeMapSvg) parts.push(`<figure>${r.mergeMapSvg}<figcaption>which 2x2 windows D merges, and how alike their tokens are</figcaption></figure>`);
    parts.push('</div>');
  }
  if (r.question) {
    parts.push(`<p><b>Q:</b> ${e(r.question.text)} <b>truth:</b> ${e(r.question.truth)}</p>`, '<ul>');
    for (const a of r.question.answers) parts.push(`<li>${e(a.label)}: ${e(JSON.stringify(a.text))}</li>`);
    parts.push('</ul>');
  }
  if (r.footer) parts.push(`<footer>${e(r.footer)}</footer>`);
  parts.push('</body>', '</html>', '');
  return parts.join('\n');
}

/** Writes the report HTML atomically. */
export function writeReport(r: ReportInput, path: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, renderReport(r));
  renameSync(tmp, path);
}

/** The SVG poster of the report: title, table, curves and pictures (for the PNG). */
export function reportPosterSvg(r: ReportInput, width = 1000): string {
  const e = escapeXml;
  const out: string[] = [];
  let y = 34;
  out.push(`<text x="16" y="${y}" font-size="20" font-weight="bold">${e(r.title)}</text>`);
  y += 18;
  const cols = r.table.header.length;
  const colW = [Math.min(330, width * 0.34), ...new Array<number>(cols - 1).fill((width - 32 - Math.min(330, width * 0.34)) / Math.max(1, cols - 1))];
  const rowH = 20;
  const allRows = [r.table.header, ...r.table.rows];
  // a cell wider than its column (about 6.6 units a character) breaks at spaces into lines
  const wrap = (text: string, w: number): string[] => {
    const max = Math.max(4, Math.floor(w / 6.6));
    const lines: string[] = [];
    let line = '';
    for (const word of text.split(' ')) {
      if (line && line.length + 1 + word.length > max) {
        lines.push(line);
        line = word;
      } else line = line ? `${line} ${word}` : word;
    }
    return [...lines, line];
  };
  allRows.forEach((row, i) => {
    let x = 16;
    const cells = row.map((cell, c) => wrap(cell, colW[c] - 8));
    const h = rowH + 14 * (Math.max(...cells.map((l) => l.length)) - 1);
    y += rowH;
    if (i === 0) out.push(`<rect x="16" y="${y - 14}" width="${width - 32}" height="${h}" fill="#f0f0f0"/>`);
    cells.forEach((lines, c) => {
      const anchor = c === 0 ? 'start' : 'end';
      const tx = c === 0 ? x + 4 : x + colW[c] - 4;
      lines.forEach((l, j) => out.push(`<text x="${tx.toFixed(1)}" y="${y + 14 * j}" text-anchor="${anchor}" font-size="12"${i === 0 ? ' font-weight="bold"' : ''}>${e(l)}</text>`));
      x += colW[c];
    });
    y += h - rowH;
  });
  y += 16;
  if (r.curves.some((c) => c.loss.length)) {
    out.push(curvesChart(r.curves, width - 32, 340).replace(/^<svg /, `<svg x="16" y="${y}" `));
    y += 350;
  }
  const pics = [r.sliceGridSvg, r.mergeMapSvg].filter((s): s is string => !!s);
  let picH = 0;
  pics.forEach((svg, i) => {
    const m = /height="(\d+(?:\.\d+)?)"/.exec(svg);
    picH = Math.max(picH, m ? Number(m[1]) : 0);
    out.push(svg.replace(/^<svg /, `<svg x="${16 + i * 496}" y="${y}" `));
  });
  y += picH + 8;
  if (r.question) {
    for (const line of [`Q: ${r.question.text}   truth: ${r.question.truth}`, ...r.question.answers.map((a) => `   ${a.label}: ${JSON.stringify(a.text)}`)]) {
      y += 18;
      out.push(`<text x="16" y="${y}" font-size="13" xml:space="preserve">${e(line)}</text>`);
    }
    y += 10;
  }
  y += 12;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" font-family="sans-serif">`,
    `<rect x="0" y="0" width="${width}" height="${y}" fill="#ffffff"/>`,
    ...out,
    '</svg>',
  ].join('\n');
}

/** The poster as a PNG (sharp rasterises the SVG); returns its size. */
export async function renderReportPng(r: ReportInput, path: string): Promise<{ width: number; height: number }> {
  const { default: sharp } = await import('sharp');
  const tmp = `${path}.tmp-${process.pid}`;
  const info = await sharp(Buffer.from(reportPosterSvg(r))).png().toFile(tmp);
  renameSync(tmp, path);
  return { width: info.width, height: info.height };
}
