/**
 * Training recipes: the file format and its one schema. A recipe lists stages (LLaVA-UHD-V4.md,
 * "Training: four stages"), the data, and how the run guards itself (checkpoints, non-finite
 * steps, bad samples). Everything is checked before anything runs: an unknown key (a typo such as
 * `chekpoint_every` would silently disable checkpoints) is an error naming the allowed keys, and
 * every message names the file and the key. Keys starting with `_` (`_comment`, `_assumptions`,
 * ...) are comments, allowed at the top level and in each stage, and ignored.
 */
import { z } from 'zod';
import type { DataSpec } from './datasets.js';

/** Module groups a stage can train (the matchers are in train.ts). */
export const MODULE_NAMES = ['compressor', 'connector', 'vit', 'vit_position_embedding', 'llm'] as const;
export type ModuleName = (typeof MODULE_NAMES)[number];

export interface StageSpec {
  name: string;
  trainable: ModuleName[];
  /** Peak and final learning rate (linear warmup, then cosine to min_lr). */
  lr: number;
  min_lr: number;
  /** LR multiplier for parameters outside the LLM (0.2 in stages 2-3 of the recipe). */
  non_llm_lr_scale?: number;
  warmup_steps: number;
  steps: number;
  /** M: the slice budget (1 in stage 1). */
  max_slices: number;
  /** Samples per optimizer step. */
  batch_size: number;
  /** Micro-batches per optimizer step (batch_size samples each). */
  grad_accum?: number;
  /** Pack each micro-batch's samples into sequences of at most this many tokens (0: one sequence per sample). */
  pack_length?: number;
  /**
   * Tokens one sample may have (its text and visual placeholders); a longer one is a bad sample.
   * Default: pack_length when packing, else DEFAULT_MAX_SAMPLE_TOKENS. Bounds what one record
   * can allocate: the logits alone are tokens x vocabulary floats.
   */
  max_sample_tokens?: number;
  weight_decay?: number;
  clip_norm?: number;
}

/**
 * What a step with a non-finite loss or gradient norm does. It never updates the weights: the
 * step is skipped (its gradients dropped) and counted; `stop` fails the run at the first one,
 * `skip` after `max_consecutive` in a row or `max_total` in the whole run.
 */
export interface NonFinitePolicy {
  action: 'skip' | 'stop';
  max_consecutive: number;
  max_total: number;
}

export const DEFAULT_NON_FINITE: NonFinitePolicy = { action: 'skip', max_consecutive: 3, max_total: 25 };

/** Tokens per sample when a stage neither packs nor sets max_sample_tokens. */
export const DEFAULT_MAX_SAMPLE_TOKENS = 8192;

export interface Recipe {
  name: string;
  /** Free text shown to users. */
  about?: string;
  /** Where the samples come from (read by the CLI; `train` itself takes datasets). */
  data?: DataSpec;
  stages: StageSpec[];
  /** Validation every N steps (0: only at the end of each stage). */
  eval_every?: number;
  /** A rolling checkpoint every N steps (0: only at the end of each stage). */
  checkpoint_every?: number;
  seed?: number;
  non_finite?: Partial<NonFinitePolicy>;
  /**
   * A sample that fails validation during training (a lone surrogate, too many tokens, ...):
   * `skip` (default) reports it with its line and trains on the rest of its batch; `fail` checks
   * every training sample before the first step and refuses to start if any is bad.
   */
  on_bad_sample?: 'skip' | 'fail';
}

// ---- the schema --------------------------------------------------------------------------

const shown = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
};
/** An error map: "must be <what>, got <the value>". */
const must = (what: string) => ({ error: (iss: { input?: unknown }) => `must be ${what}, got ${shown(iss.input)}` });

const posInt = () => z.int(must('a positive integer')).min(1, must('a positive integer'));
const count = () => z.int(must('an integer >= 0')).min(0, must('an integer >= 0'));
const nonNeg = () => z.number(must('a number >= 0')).min(0, must('a number >= 0'));
const text = () => z.string(must('a non-empty string')).min(1, must('a non-empty string'));

const STAGE_SHAPE = {
  name: text(),
  trainable: z
    .array(z.enum(MODULE_NAMES, { error: (iss) => `'${String(iss.input)}' is not a module (one of ${MODULE_NAMES.join(', ')})` }), must(`a list of modules (${MODULE_NAMES.join(', ')})`))
    .min(1, { error: `must list at least one module (${MODULE_NAMES.join(', ')})` }),
  lr: nonNeg(),
  min_lr: nonNeg(),
  non_llm_lr_scale: nonNeg().optional(),
  warmup_steps: count(),
  steps: posInt(),
  max_slices: posInt(),
  batch_size: posInt(),
  grad_accum: posInt().optional(),
  pack_length: count().optional(),
  max_sample_tokens: posInt().optional(),
  weight_decay: nonNeg().optional(),
  clip_norm: z.number(must('a number > 0')).gt(0, must('a number > 0')).optional(),
};

const NON_FINITE_SHAPE = {
  action: z.enum(['skip', 'stop'], must("'skip' or 'stop'")).optional(),
  max_consecutive: posInt().optional(),
  max_total: posInt().optional(),
};

const RECIPE_SHAPE = {
  name: text(),
  about: z.string(must('a string')).optional(),
  // checked by validateData (llava-uhd/datasets.ts), which knows the data formats
  data: z.unknown().optional(),
  stages: z.array(z.unknown(), must('a non-empty array of stages')).min(1, { error: 'must be a non-empty array of stages' }),
  eval_every: count().optional(),
  checkpoint_every: count().optional(),
  seed: z.int(must('an integer >= 0')).min(0, must('an integer >= 0')).optional(),
  non_finite: z.unknown().optional(),
  on_bad_sample: z.enum(['skip', 'fail'], must("'skip' or 'fail'")).optional(),
};

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A copy without the comment keys (those starting with `_`). */
function withoutComments(v: unknown): unknown {
  if (!isPlainObject(v)) return v;
  return Object.fromEntries(Object.entries(v).filter(([k]) => !k.startsWith('_')));
}

/** `a.b[0].c` */
function pathText(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('');
}

/** Parses `value` with `shape` (unknown keys refused, comment keys dropped); throws naming source and key. */
function parseObject<S extends z.ZodRawShape>(value: unknown, shape: S, source: string, at: string): z.infer<z.ZodObject<S>> {
  const where = (path: readonly PropertyKey[]) => {
    const p = `${at}${path.length && at && typeof path[0] !== 'number' ? '.' : ''}${pathText(path)}`;
    return p || 'the recipe';
  };
  if (!isPlainObject(value)) throw new Error(`${source}: ${at || 'the recipe'} must be a JSON object, got ${shown(value)}`);
  const r = z.strictObject(shape).safeParse(withoutComments(value));
  if (r.success) return r.data;
  const iss = r.error.issues[0];
  if (iss.code === 'unrecognized_keys') {
    const allowed = Object.keys(shape).join(', ');
    const keys = iss.keys.map((k) => `'${k}'`).join(', ');
    throw new Error(`${source}: ${where(iss.path)}: unknown key${iss.keys.length > 1 ? 's' : ''} ${keys} (allowed: ${allowed}; keys starting with '_' are comments)`);
  }
  throw new Error(`${source}: ${where(iss.path)} ${iss.message}`);
}

/** Checks a recipe before anything runs, naming the file and the first bad key; returns it without comment keys. */
export function validateRecipe(r: unknown, source = 'recipe'): Recipe {
  const top = parseObject(r, RECIPE_SHAPE, source, '');
  const stages = top.stages.map((s, i) => {
    const at = `stages[${i}]`;
    const st = parseObject(s, STAGE_SHAPE, source, at);
    if (st.min_lr > st.lr) throw new Error(`${source}: ${at}.min_lr (${st.min_lr}) exceeds lr (${st.lr})`);
    if (st.warmup_steps > st.steps) throw new Error(`${source}: ${at}.warmup_steps must be an integer in 0..steps (${st.steps}), got ${st.warmup_steps}`);
    if (st.pack_length && st.max_sample_tokens && st.max_sample_tokens > st.pack_length) {
      throw new Error(`${source}: ${at}.max_sample_tokens (${st.max_sample_tokens}) exceeds pack_length (${st.pack_length}): a packed sequence holds whole samples`);
    }
    return st as StageSpec;
  });
  const out: Recipe = { ...(top as Omit<Recipe, 'stages' | 'non_finite'>), stages };
  if (top.non_finite !== undefined) out.non_finite = parseObject(top.non_finite, NON_FINITE_SHAPE, source, 'non_finite');
  if (out.data === undefined) delete out.data;
  return out;
}

/** The non-finite policy of a recipe, defaults filled in. */
export function nonFinitePolicy(r: Recipe): NonFinitePolicy {
  return { ...DEFAULT_NON_FINITE, ...Object.fromEntries(Object.entries(r.non_finite ?? {}).filter(([, v]) => v !== undefined)) };
}

/** The token limit of one sample in a stage (see StageSpec.max_sample_tokens). */
export function maxSampleTokens(s: StageSpec): number {
  return s.max_sample_tokens ?? (s.pack_length ? s.pack_length : DEFAULT_MAX_SAMPLE_TOKENS);
}

// JSON text: parsed with file:line:column errors and a nesting limit by ./schema.ts
export { jsonErrorOffset, MAX_JSON_DEPTH, parseJsonText } from './schema.js';
