/**
 * `uhd pretrain`: a small baseline (tower + connector + LLM) from nothing on the pretraining mix
 * (llava-uhd/pretrain.ts), written as a checkpoint folder. pretrained/mini/ was made with it.
 */
import { resolve } from 'node:path';
import { chooseDevice, closeDevice } from '../backends/index.js';
import { CONFIGS } from '../llava-uhd/config.js';
import { MIX_CLASSES, MIX_LABELS, MixSplit, type MixLabel } from '../llava-uhd/data/pretrain-mix.js';
import { tokenizerFor } from '../llava-uhd/load.js';
import { pretrain, type PretrainResult } from '../llava-uhd/pretrain.js';
import { choiceFlag, FlagError, intFlag, numberFlag } from './options.js';
import { progress } from './progress.js';
import { evaluateWithProgress } from './train.js';

export interface PretrainCliOptions {
  config: string;
  out: string;
  device: string;
  seed?: string;
  towerSteps?: string;
  towerBatch?: string;
  towerLr?: string;
  lmSteps?: string;
  lmBatch?: string;
  lmLr?: string;
  lmSlices?: string;
  heldOut?: string;
  test?: string;
  resume?: boolean;
}

/** The baseline configs `--config` takes (a config with D is refused: D is inserted afterwards). */
export const PRETRAIN_CONFIGS = Object.keys(CONFIGS).filter((n) => CONFIGS[n].insert_layer_id === null && CONFIGS[n].text_config.vocab_size < 151_685);

/** The flags, checked (each error names its flag). */
export function pretrainFlags(o: PretrainCliOptions) {
  const config = choiceFlag(o.config, '--config', PRETRAIN_CONFIGS, 'mini-baseline');
  return {
    config,
    seed: intFlag(o.seed, '--seed', { min: 0 }, 0),
    towerSteps: intFlag(o.towerSteps, '--tower-steps', { min: 0 }, 600),
    towerBatch: intFlag(o.towerBatch, '--tower-batch', { min: 1, max: 256 }, 16),
    towerLr: numberFlag(o.towerLr, '--tower-lr', { min: 0, minExclusive: true, max: 1 }, 3e-3),
    lmSteps: intFlag(o.lmSteps, '--lm-steps', { min: 0 }, 300),
    lmBatch: intFlag(o.lmBatch, '--lm-batch', { min: 1, max: 256 }, 8),
    lmLr: numberFlag(o.lmLr, '--lm-lr', { min: 0, minExclusive: true, max: 1 }, 5e-3),
    lmSlices: intFlag(o.lmSlices, '--lm-slices', { min: 1, max: 9 }, 4),
    heldOut: intFlag(o.heldOut, '--held-out', { min: 1 }, 100),
    test: intFlag(o.test, '--test', { min: 0 }, 100),
  };
}

export async function pretrainCommand(o: PretrainCliOptions): Promise<PretrainResult> {
  const f = pretrainFlags(o);
  if (!o.out) throw new FlagError('--out', 'is required (the checkpoint folder to write)');
  const device = await chooseDevice('--device', o.device);
  const out = resolve(o.out);
  console.error(`uhd pretrain: ${f.config} on ${device}, seed ${f.seed}: tower ${f.towerSteps} steps x ${f.towerBatch} images, then connector + LLM ${f.lmSteps} steps x ${f.lmBatch} -> ${out}`);
  let tower: ReturnType<typeof progress> | null = null;
  let lm: ReturnType<typeof progress> | null = null;
  let evalBar: ReturnType<typeof progress> | null = null;
  try {
    const r = await pretrain({
      config: structuredClone(CONFIGS[f.config]),
      device,
      out,
      seed: f.seed,
      towerSteps: f.towerSteps,
      towerBatch: f.towerBatch,
      towerLr: f.towerLr,
      lmSteps: f.lmSteps,
      lmBatch: f.lmBatch,
      lmLr: f.lmLr,
      maxSlices: f.lmSlices,
      heldOut: f.heldOut,
      resume: o.resume,
      events: {
        towerStep: (s) => {
          tower ??= progress('phase 1 tower + heads', s.steps, ['loss', 'lr', 'images/s']);
          tower.update(s.step, { loss: s.loss.toFixed(3), lr: s.lr.toExponential(1), 'images/s': s.imagesPerSecond.toFixed(1) });
          if (s.step === s.steps) tower.stop();
        },
        towerEval: (done, total) => {
          evalBar ??= progress('phase 1 held-out heads', total);
          evalBar.update(done);
          if (done === total) evalBar.stop();
        },
        lm: {
          stageStart: (_i, s, from) => {
            lm = progress('phase 2 connector + LLM', s.steps, ['loss', 'lr', 'samples/s']);
            lm.update(from);
          },
          step: (s) => lm?.update(s.step, { loss: s.loss.toFixed(3), lr: s.lr.toExponential(1), 'samples/s': s.samplesPerSecond.toFixed(1) }),
          stageEnd: () => lm?.stop(),
          notice: (m) => console.error(m),
        },
      },
    });
    const acc = MIX_LABELS.map((l) => `${l} ${(100 * r.headAccuracy[l]).toFixed(1)}% (chance ${(100 / MIX_CLASSES[l].length).toFixed(0)}%)`).join(', ');
    console.log(`phase 1: ${r.seconds.tower.toFixed(0)} s, final head loss ${r.towerLoss.toFixed(3)}; held-out head accuracy: ${acc}`);
    console.log(`phase 2: ${r.seconds.lm.toFixed(0)} s, final answer loss ${r.lmLoss.toFixed(3)}`);
    if (f.test > 0) {
      const ev = await evaluateWithProgress(r.model, await tokenizerFor(r.model.config), new MixSplit('test', f.test, f.seed), { device, label: 'answers' });
      const byType = Object.entries(ev.byType).sort(([a], [b]) => (a < b ? -1 : 1)).map(([t, x]) => `${t} ${(100 * x.accuracy).toFixed(1)}% (${x.correct}/${x.total}, chance ${(100 / MIX_CLASSES[t as MixLabel].length).toFixed(0)}%)`);
      console.log(`answers on ${f.test} test questions: ${(100 * ev.accuracy).toFixed(1)}%: ${byType.join(', ')}`);
    }
    console.log(`checkpoint folder: ${out} (${r.files.join(', ')})`);
    return r;
  } finally {
    closeDevice();
  }
}
