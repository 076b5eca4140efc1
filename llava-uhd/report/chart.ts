/**
 * Line charts as self-contained SVG text: several series on shared axes (linear or log y), ticks,
 * a legend, labels escaped. Used by `uhd train` (curves.svg beside metrics.jsonl) and by the main
 * job's report. Non-finite values are left out of a line (a gap), never drawn.
 */

export interface Series {
  label: string;
  /** [x, y] pairs; x increasing is not required (points are drawn in the order given). */
  points: readonly (readonly [number, number])[];
  /** CSS colour; default: from the palette by position. */
  colour?: string;
  /** Dashed line (e.g. validation next to training). */
  dashed?: boolean;
}

export interface ChartOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /** Log-scale y axis (non-positive values are left out). */
  logY?: boolean;
  width?: number;
  height?: number;
  /** Vertical marker lines, e.g. stage boundaries: [x, label]. */
  markers?: readonly (readonly [number, string])[];
}

/** The plot area inside the chart's margins, in SVG units. */
export interface PlotArea {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

/** Text made safe for SVG/HTML element content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

const fmtTick = (v: number) => (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(0) : String(Number(v.toPrecision(4))));

/** The plot area of a chart of this size (margins for the axes, title and legend). */
export function plotArea(width: number, height: number, legendWidth = 150): PlotArea {
  return { left: 64, top: 36, right: width - legendWidth, bottom: height - 44 };
}

/** Room for the legend: at least 150, more for long labels (about 6.6 units a character), at most 40% of the width. */
export function legendWidth(series: readonly Series[], width: number): number {
  const longest = Math.max(0, ...series.map((s) => s.label.length));
  return Math.round(Math.min(width * 0.4, Math.max(150, 50 + 6.6 * longest)));
}

/** An SVG line chart of the series; throws if no series has a drawable point. */
export function lineChart(series: readonly Series[], o: ChartOptions = {}): string {
  const width = o.width ?? 720;
  const height = o.height ?? 360;
  const area = plotArea(width, height, legendWidth(series, width));
  const drawable = (y: number) => Number.isFinite(y) && (!o.logY || y > 0);
  const pts = series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && drawable(y)));
  if (pts.length === 0) throw new Error(`lineChart${o.title ? ` '${o.title}'` : ''}: no finite points to draw`);
  const ty = (y: number) => (o.logY ? Math.log10(y) : y);
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => ty(p[1]))), Math.max(...pts.map((p) => ty(p[1])))];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = [y0 - 1, y1 + 1];
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const sx = (x: number) => area.left + ((x - x0) / (x1 - x0)) * (area.right - area.left);
  const sy = (y: number) => area.bottom - ((ty(y) - y0) / (y1 - y0)) * (area.bottom - area.top);
  const n = (v: number) => v.toFixed(1);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
  ];
  if (o.title) out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(o.title)}</text>`);
  // y ticks: decades on a log axis, round numbers otherwise
  // (within one decade a log axis gets round values, not fractional powers of ten)
  const yTicks = !o.logY ? niceTicks(y0, y1, 5) : y1 - y0 < 1 ? niceTicks(10 ** y0, 10 ** y1, 5).filter((t) => t > 0) : niceTicks(Math.ceil(y0), Math.floor(y1), Math.min(6, Math.floor(y1) - Math.ceil(y0) || 1)).map((e) => 10 ** e);
  for (const t of yTicks) {
    if (ty(t) < y0 || ty(t) > y1) continue;
    const y = n(sy(t));
    out.push(`<line x1="${area.left}" y1="${y}" x2="${area.right}" y2="${y}" stroke="#e0e0e0"/>`);
    out.push(`<text x="${area.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(fmtTick(t))}</text>`);
  }
  for (const t of niceTicks(x0, x1, 6)) {
    const x = n(sx(t));
    out.push(`<line x1="${x}" y1="${area.bottom}" x2="${x}" y2="${area.bottom + 4}" stroke="#333"/>`);
    out.push(`<text x="${x}" y="${area.bottom + 16}" text-anchor="middle">${escapeXml(fmtTick(t))}</text>`);
  }
  for (const [mx, label] of o.markers ?? []) {
    if (!(mx >= x0 && mx <= x1)) continue;
    const x = n(sx(mx));
    out.push(`<line x1="${x}" y1="${area.top}" x2="${x}" y2="${area.bottom}" stroke="#999" stroke-dasharray="2 3"/>`);
    out.push(`<text x="${x}" y="${area.top - 4}" text-anchor="middle" fill="#666" font-size="10">${escapeXml(label)}</text>`);
  }
  out.push(`<rect x="${area.left}" y="${area.top}" width="${area.right - area.left}" height="${area.bottom - area.top}" fill="none" stroke="#333"/>`);
  if (o.xLabel) out.push(`<text x="${(area.left + area.right) / 2}" y="${height - 8}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  if (o.yLabel) out.push(`<text x="14" y="${(area.top + area.bottom) / 2}" text-anchor="middle" transform="rotate(-90 14 ${(area.top + area.bottom) / 2})">${escapeXml(o.yLabel + (o.logY ? ' (log)' : ''))}</text>`);
  series.forEach((s, i) => {
    const colour = escapeXml(s.colour ?? PALETTE[i % PALETTE.length]);
    // a gap wherever a point cannot be drawn
    let d = '';
    let pen = false;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(x) || !drawable(y)) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${n(sx(x))} ${n(sy(y))} `;
      pen = true;
    }
    if (d) out.push(`<path d="${d.trim()}" fill="none" stroke="${colour}" stroke-width="1.6"${s.dashed ? ' stroke-dasharray="6 3"' : ''}/>`);
    const ly = area.top + 8 + i * 18;
    out.push(`<line x1="${area.right + 10}" y1="${ly}" x2="${area.right + 34}" y2="${ly}" stroke="${colour}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 3"' : ''}/>`);
    out.push(`<text x="${area.right + 40}" y="${ly}" dominant-baseline="middle">${escapeXml(s.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
