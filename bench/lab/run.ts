/**
 * `npm run bench:lab [-- name ...] [--quick] [--samples n] [--wall]`: runs every kernel lab in
 * bench/lab (the files named *-variants.ts), or the named ones, one after another, each in a
 * process of its own, passing the flags on. Each writes bench/results/lab-<name>.{md,json}.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flags: string[] = [];
const wanted: string[] = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--samples') flags.push(args[i], args[++i]);
  else if (args[i].startsWith('--')) flags.push(args[i]);
  else wanted.push(args[i]);
}
const labs = readdirSync(dir)
  .filter((f) => f.endsWith('-variants.ts'))
  .sort()
  .filter((f) => wanted.length === 0 || wanted.some((w) => f.startsWith(w)));
if (labs.length === 0) throw new Error(`bench:lab: no lab matches ${wanted.join(', ')}`);
const failed: string[] = [];
for (const lab of labs) {
  console.log(`\n=== ${lab} ${flags.join(' ')}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(dir, lab), ...flags], { stdio: 'inherit' });
  if (r.status !== 0) failed.push(lab);
}
if (failed.length) {
  console.error(`\nbench:lab: failed: ${failed.join(', ')}`);
  process.exit(1);
}
