/**
 * Training curves from a run's metrics.jsonl: loss and validation loss (log y) over the run's
 * steps, and the learning rate below, as one SVG (`curves.svg`, written beside metrics.jsonl by
 * `uhd train` at each validation and at the end of each stage). Steps count on across stages; the
 * stage boundaries are marked.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { METRICS_FILE } from '../run-dir.js';
import { lineChart, type Series } from './chart.js';

export const CURVES_FILE = 'curves.svg';

export interface RunCurves {
  loss: [number, number][];
  valLoss: [number, number][];
  lr: [number, number][];
  /** [first global step of the stage, its name] for every stage after the first. */
  stages: [number, string][];
}

/** The curves of a metrics.jsonl text (lines that are not step or validation records are skipped). */
export function parseCurves(text: string): RunCurves {
  const c: RunCurves = { loss: [], valLoss: [], lr: [], stages: [] };
  // global step = the stage's offset + its step; offsets from the stages' step counts, in order
  const offsets = new Map<string, number>();
  let nextOffset = 0;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue; // a line being written, or cut by a kill
    }
    const stage = typeof r.stage === 'string' ? r.stage : null;
    const step = typeof r.step === 'number' ? r.step : null;
    if (stage === null || step === null) continue;
    if (!offsets.has(stage) && typeof r.steps === 'number') {
      if (offsets.size > 0) c.stages.push([nextOffset, stage]);
      offsets.set(stage, nextOffset);
      nextOffset += r.steps;
    }
    const x = (offsets.get(stage) ?? 0) + step;
    if ('loss' in r) c.loss.push([x, typeof r.loss === 'number' ? r.loss : NaN]);
    if (typeof r.lr === 'number') c.lr.push([x, r.lr]);
    if ('val_loss' in r) c.valLoss.push([x, typeof r.val_loss === 'number' ? r.val_loss : NaN]);
  }
  return c;
}

/** Two charts stacked in one SVG. */
export function stackSvgs(charts: readonly string[], width: number, heights: readonly number[]): string {
  let y = 0;
  const parts = charts.map((svg, i) => {
    const inner = svg.replace(/^<svg /, `<svg x="0" y="${y}" `);
    y += heights[i];
    return inner;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}">\n${parts.join('\n')}\n</svg>`;
}

/** curves.svg for these curves: null when there is no finite loss yet. */
export function curvesSvg(c: RunCurves, title = 'training'): string | null {
  const loss: Series[] = [{ label: 'loss', points: c.loss }];
  if (c.valLoss.length) loss.push({ label: 'validation loss', points: c.valLoss, dashed: true });
  if (!c.loss.some(([, y]) => Number.isFinite(y) && y > 0)) return null;
  const charts = [lineChart(loss, { title: `${title}: loss`, xLabel: 'step', yLabel: 'nats per token', logY: true, markers: c.stages, height: 320 })];
  const heights = [320];
  if (c.lr.some(([, y]) => Number.isFinite(y))) {
    charts.push(lineChart([{ label: 'learning rate', points: c.lr, colour: '#555' }], { title: 'learning rate', xLabel: 'step', markers: c.stages, height: 220 }));
    heights.push(220);
  }
  return stackSvgs(charts, 720, heights);
}

/** Rewrites <dir>/curves.svg from <dir>/metrics.jsonl (atomically); returns its path, or null if nothing to draw. */
export function writeCurves(dir: string, title?: string): string | null {
  const metrics = join(dir, METRICS_FILE);
  if (!existsSync(metrics)) return null;
  const svg = curvesSvg(parseCurves(readFileSync(metrics, 'utf8')), title);
  if (svg === null) return null;
  const path = join(dir, CURVES_FILE);
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, svg);
  renameSync(tmp, path);
  return path;
}
