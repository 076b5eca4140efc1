/**
 * Command-line flags, checked where they enter: every command parses its numbers and choices
 * with these, so `--n -1`, `--n abc` or `--device gpu` fail at once with a message naming the
 * flag, the value and what is allowed, instead of running with NaN or a silent default.
 *
 *   const n = intFlag(opts.n, '--n', { min: 1 });          // number | undefined
 *   const p = numberFlag(opts.topP, '--top-p', { min: 0, max: 1, minExclusive: true });
 *   const d = choiceFlag(opts.device, '--device', ['cpu', 'webgpu'] as const);
 *
 * Commander hands values over as the strings typed; an absent flag is `undefined` and gives
 * `undefined` back (or the `fallback`). `unknownOptionsFirst` makes a mistyped flag (`--promt`)
 * an "unknown option" error with a suggestion, rather than "required option --prompt missing".
 */
import type { Command, Option } from 'commander';

/** The error of a bad flag: `--n: must be an integer >= 1, got '-1'`. */
export class FlagError extends Error {
  constructor(readonly flag: string, message: string) {
    super(`${flag}: ${message}`);
    this.name = 'FlagError';
  }
}

export interface NumberRange {
  min?: number;
  max?: number;
  /** `min` itself is not allowed (a value > min). */
  minExclusive?: boolean;
  maxExclusive?: boolean;
}

function rangeText(r: NumberRange): string {
  const parts: string[] = [];
  if (r.min !== undefined) parts.push(`${r.minExclusive ? '>' : '>='} ${r.min}`);
  if (r.max !== undefined) parts.push(`${r.maxExclusive ? '<' : '<='} ${r.max}`);
  return parts.join(' and ');
}

function inRange(v: number, r: NumberRange): boolean {
  if (r.min !== undefined && (r.minExclusive ? v <= r.min : v < r.min)) return false;
  if (r.max !== undefined && (r.maxExclusive ? v >= r.max : v > r.max)) return false;
  return true;
}

/** A decimal number as typed (no hex, no '', no 'Infinity'), in the range. */
export function numberFlag(text: string | undefined, flag: string, range?: NumberRange): number | undefined;
export function numberFlag(text: string | undefined, flag: string, range: NumberRange, fallback: number): number;
export function numberFlag(text: string | undefined, flag: string, range: NumberRange = {}, fallback?: number): number | undefined {
  if (text === undefined) return fallback;
  const t = String(text).trim();
  const what = `a number${rangeText(range) ? ` ${rangeText(range)}` : ''}`;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t)) throw new FlagError(flag, `must be ${what}, got '${text}'`);
  const v = Number(t);
  if (!Number.isFinite(v) || !inRange(v, range)) throw new FlagError(flag, `must be ${what}, got '${text}'`);
  return v;
}

/** A decimal integer (safe: at most 2^53 - 1), in the range. */
export function intFlag(text: string | undefined, flag: string, range?: NumberRange): number | undefined;
export function intFlag(text: string | undefined, flag: string, range: NumberRange, fallback: number): number;
export function intFlag(text: string | undefined, flag: string, range: NumberRange = {}, fallback?: number): number | undefined {
  if (text === undefined) return fallback;
  const t = String(text).trim();
  const what = `an integer${rangeText(range) ? ` ${rangeText(range)}` : ''}`;
  if (!/^[+-]?\d+$/.test(t)) throw new FlagError(flag, `must be ${what}, got '${text}'`);
  const v = Number(t);
  if (!Number.isSafeInteger(v) || !inRange(v, range)) throw new FlagError(flag, `must be ${what}, got '${text}'`);
  return v;
}

/** One of `choices`, exactly as written. */
export function choiceFlag<C extends string>(text: string | undefined, flag: string, choices: readonly C[]): C | undefined;
export function choiceFlag<C extends string>(text: string | undefined, flag: string, choices: readonly C[], fallback: C): C;
export function choiceFlag<C extends string>(text: string | undefined, flag: string, choices: readonly C[], fallback?: C): C | undefined {
  if (text === undefined) return fallback;
  if (!(choices as readonly string[]).includes(text)) throw new FlagError(flag, `must be one of ${choices.join(', ')}, got '${text}'`);
  return text as C;
}

/** `WxH` with both sides positive integers (e.g. `--view 448x448`). */
export function sizeFlag(text: string | undefined, flag: string): { width: number; height: number } | undefined {
  if (text === undefined) return undefined;
  const m = /^\s*(\d+)\s*x\s*(\d+)\s*$/i.exec(text);
  if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new FlagError(flag, `must be WIDTHxHEIGHT in pixels, e.g. 448x448, got '${text}'`);
  return { width: Number(m[1]), height: Number(m[2]) };
}

/**
 * Commander checks required options before unknown ones, so `generate --promt hi` said
 * "required option '--prompt <text>' not specified". This turns every required option of `cmd`
 * and its subcommands into one checked after parsing (a `preAction` hook), when commander has
 * already refused unknown options with its "(Did you mean --prompt?)" suggestion.
 */
export function unknownOptionsFirst(cmd: Command): void {
  const required: Option[] = cmd.options.filter((o) => o.mandatory);
  for (const o of required) o.mandatory = false;
  if (required.length) {
    cmd.hook('preAction', (_parent, action) => {
      if (action !== cmd) return;
      for (const o of required) {
        if (cmd.getOptionValue(o.attributeName()) === undefined) cmd.error(`error: required option '${o.flags}' not specified`, { code: 'commander.missingMandatoryOptionValue' });
      }
    });
  }
  for (const sub of cmd.commands) unknownOptionsFirst(sub);
}
