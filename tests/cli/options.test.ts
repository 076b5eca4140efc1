/** Flags are checked where they enter; a mistyped flag is an unknown option; the progress bar reads right. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { chooseDevice, closeDevice } from '../../backends/index.js';
import { choiceFlag, intFlag, numberFlag, sizeFlag, unknownOptionsFirst } from '../../cli/options.js';
import { barFormat, formatDuration } from '../../cli/progress.js';

describe('flag values', () => {
  it('integers: a range, no fractions, no junk, no silent NaN', () => {
    expect(intFlag(undefined, '--n', { min: 1 })).toBeUndefined();
    expect(intFlag(undefined, '--n', { min: 1 }, 7)).toBe(7);
    expect(intFlag(' 12 ', '--n', { min: 1 })).toBe(12);
    expect(() => intFlag('-1', '--n', { min: 1 })).toThrow("--n: must be an integer >= 1, got '-1'");
    expect(() => intFlag('abc', '--n', { min: 1 })).toThrow("--n: must be an integer >= 1, got 'abc'");
    for (const bad of ['1.5', '', '0x10', '1e3', 'Infinity', '9007199254740993']) expect(() => intFlag(bad, '--n'), bad).toThrow('--n: must be an integer');
    expect(() => intFlag('11', '--k', { min: 0, max: 10 })).toThrow("--k: must be an integer >= 0 and <= 10, got '11'");
  });

  it('numbers: decimal, finite, in range (open or closed ends)', () => {
    expect(numberFlag('0.9', '--top-p', { min: 0, max: 1, minExclusive: true })).toBe(0.9);
    expect(numberFlag('1e-3', '--lr', { min: 0 })).toBe(0.001);
    expect(() => numberFlag('7', '--top-p', { min: 0, max: 1, minExclusive: true })).toThrow("--top-p: must be a number > 0 and <= 1, got '7'");
    expect(() => numberFlag('0', '--top-p', { min: 0, max: 1, minExclusive: true })).toThrow('--top-p: must be a number > 0 and <= 1');
    for (const bad of ['NaN', 'Infinity', '1e999', '', 'abc', '0x1', '1,5']) expect(() => numberFlag(bad, '--t'), bad).toThrow("--t: must be a number, got '");
  });

  it('choices and sizes', () => {
    expect(choiceFlag('webgpu', '--device', ['cpu', 'webgpu'] as const)).toBe('webgpu');
    expect(choiceFlag(undefined, '--device', ['cpu', 'webgpu'] as const, 'cpu')).toBe('cpu');
    expect(() => choiceFlag('gpu', '--device', ['cpu', 'webgpu'] as const)).toThrow("--device: must be one of cpu, webgpu, got 'gpu'");
    expect(sizeFlag('448x336', '--view')).toEqual({ width: 448, height: 336 });
    expect(() => sizeFlag('448', '--view')).toThrow("--view: must be WIDTHxHEIGHT in pixels, e.g. 448x448, got '448'");
    expect(() => sizeFlag('0x5', '--view')).toThrow('--view: must be WIDTHxHEIGHT');
  });
});

describe('unknown options first', () => {
  /** A program like `uhd generate`, errors captured instead of exiting. */
  function parse(args: string[]): string {
    const out: string[] = [];
    const program = new Command('uhd').exitOverride().configureOutput({ writeErr: (s) => out.push(s), writeOut: () => undefined });
    program.command('generate').requiredOption('--image <file>', 'image').requiredOption('--prompt <text>', 'question').option('--seed <n>', 'seed').action(() => {
      out.push('ran');
    });
    unknownOptionsFirst(program);
    try {
      program.parse(args, { from: 'user' });
    } catch {
      // exitOverride throws after writing the message
    }
    return out.join('');
  }

  it('a mistyped required flag is an unknown option, with a suggestion', () => {
    expect(parse(['generate', '--image', 'a.png', '--promt', 'hi'])).toBe("error: unknown option '--promt'\n(Did you mean --prompt?)\n");
  });

  it('a required flag that is really missing is still reported, and a complete command runs', () => {
    expect(parse(['generate', '--image', 'a.png'])).toBe("error: required option '--prompt <text>' not specified\n");
    expect(parse(['generate', '--image', 'a.png', '--prompt', 'hi'])).toBe('ran');
  });
});

describe('progress bar', () => {
  it('durations are rounded before they are split: never 1m60s', () => {
    expect(formatDuration(119.6)).toBe('2m00s');
    expect(formatDuration(59.5)).toBe('1m00s');
    expect(formatDuration(59.4)).toBe('59s');
    expect(formatDuration(3599.7)).toBe('1h00m');
    expect(formatDuration(7380)).toBe('2h03m');
    expect(formatDuration(NaN)).toBe('-');
    expect(formatDuration(Infinity)).toBe('-');
  });

  it("every field is filled in, 'samples/s' included", () => {
    const options = { format: barFormat('stage 1/2 align', ['loss', 'lr', 'samples/s']), formatTime: formatDuration, barsize: 10, barCompleteString: '='.repeat(10), barIncompleteString: '-'.repeat(10), barGlue: '', autopaddingChar: ' ' } as const;
    const params = { progress: 0.5, eta: 119.6, startTime: Date.now(), stopTime: null, total: 10, value: 5, maxWidth: 200 };
    const line = cliProgress.Format.Formatter(options as never, params as never, { f0: '1.234', f1: '5.0e-3', f2: '12.5' });
    expect(line).toBe('stage 1/2 align          [=====-----] 5/10 | loss 1.234 | lr 5.0e-3 | samples/s 12.5 | ETA 2m00s');
  });
});

describe('--device', () => {
  it("'auto' opens what autoDevice picks and says what and why; a name is checked and opened", async () => {
    const lines: string[] = [];
    const d = await chooseDevice('--device', 'auto', (l) => lines.push(l));
    expect(['wasm', 'webgpu']).toContain(d);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^--device auto: ${d} \\(.+\\)$`));
    expect(await chooseDevice('--device', 'cpu', (l) => lines.push(l))).toBe('cpu');
    expect(lines).toHaveLength(1);
    await expect(chooseDevice('--device', 'tpu')).rejects.toThrow("--device: 'tpu' is not one of auto, cpu, webgpu, wasm");
    closeDevice();
  });

  it('defaults to auto on every command that takes it', () => {
    const src = readFileSync(join(import.meta.dirname, '../../cli/main.ts'), 'utf8');
    const flags = src.match(/\.option\('--device <[^']*>', '[^']*', '[^']*'\)/g) ?? [];
    expect(flags.length).toBeGreaterThanOrEqual(4);
    for (const f of flags) expect(f).toMatch(/'auto'\)$/);
  });
});
