#!/usr/bin/env node
/** The `uhd` command line. */
import { Command } from 'commander';
import { demoCommand } from './demo.js';
import { infoCommand } from './info.js';

const program = new Command('uhd').description('LLaVA-UHD v4 on a TypeScript + WebGPU tensor runtime');

program
  .command('info')
  .description('show every backend: the WebGPU adapter and its limits, the wasm backend, the CPU reference, and what --device auto picks')
  .option('--json', 'print JSON')
  .action(infoCommand);

program
  .command('demo')
  .description('a tour of the runtime: a ViT block and the intra-ViT compressor on every backend, compared')
  .action(demoCommand);

program
  .command('flops')
  .description('analytic MACs of one view per module and layer, D vs the post-ViT baseline')
  .option('--config <name|path>', 'named config or JSON file', 'llava-uhd-v4')
  .option('--view <WxH>', 'view size in pixels, each side a multiple of 56', '448x448')
  .option('--insert-layer <k|none>', "ViT layer after which D runs (overrides the config's), or 'none' for the baseline")
  .option('--dense-window', "count D's attention dense over the view, as the paper's profiler did")
  .option('--context <tokens>', 'tokens before the view that its visual tokens attend to in the LLM', '0')
  .option('--lm-head', 'count the LM head on every visual token')
  .option('--json', 'print one JSON object')
  .action(async (opts: import('./flops.js').FlopsCliOptions) => (await import('./flops.js')).flopsCommand(opts));

// `uhd data preview|export|check`: the synthetic training data and JSONL checks (cli/data.ts, loaded when one runs).
type DataCliOptions = import('./data.js').DataCliOptions;
const data = program.command('data').description('synthetic training data: preview, export as JSONL; check a JSONL file');
data
  .command('preview')
  .description('write N synthetic samples as PNGs (with their thumbnails) and a samples.json / samples.md listing')
  .option('--out <dir>', 'output folder (default: <tmpdir>/uhd-data-preview)')
  .option('--n <count>', 'how many samples', '6')
  .option('--preset <name>', 'tiny (112..336 px, S = 112) or paper (448..1344 px, S = 448)', 'tiny')
  .option('--split <name>', 'train, val or test', 'train')
  .option('--start <index>', 'first sample index', '0')
  .option('--types <list>', 'question types, comma-separated: count, colour, read, stripes (default: count,colour,read)')
  .option('--no-thumbnails', 'do not write the thumbnails')
  .action(async (opts: DataCliOptions) => (await import('./data.js')).previewCommand(opts));
data
  .command('export')
  .description('write N synthetic samples as data.jsonl + images/, the format the JSONL loader reads')
  .requiredOption('--out <dir>', 'output folder')
  .requiredOption('--n <count>', 'how many samples')
  .option('--preset <name>', 'tiny or paper', 'tiny')
  .option('--split <name>', 'train, val or test', 'train')
  .option('--start <index>', 'first sample index', '0')
  .option('--types <list>', 'question types, comma-separated (default: count,colour,read)')
  .action(async (opts: DataCliOptions) => (await import('./data.js')).exportCommand(opts));
data
  .command('check')
  .description('load a LLaVA-style JSONL file and list its bad records with line numbers')
  .argument('<file>', 'the .jsonl file')
  .action(async (file: string) => (await import('./data.js')).checkCommand(file));

program
  .command('generate')
  .description('answer a question about an image, streaming the answer')
  .requiredOption('--image <file>', 'PNG or JPEG')
  .requiredOption('--prompt <text>', 'the question')
  .option('--config <name|path>', 'named config or JSON file', 'tiny')
  .option('--weights <file|dir>', 'safetensors file, or a sharded checkpoint folder')
  .option('--random-init', 'run with random weights (no --weights)')
  .option('--max-new-tokens <n>', 'answer length limit', '64')
  .option('--max-slices <n>', 'slice budget (default: the config\'s)')
  .option('--temperature <t>', '0 is greedy', '0')
  .option('--top-p <p>', 'nucleus sampling mass', '1')
  .option('--seed <n>', 'seed for sampling')
  .option('--device <cpu|wasm|webgpu>', 'where to run (wasm: WebAssembly SIMD on every core)', 'cpu')
  .action(async (opts: import('./generate.js').GenerateCliOptions) => (await import('./generate.js')).generateCommand(opts));

program
  .command('start')
  .description('the main job: train a tiny LLaVA-UHD v4 with D and the post-ViT baseline on the synthetic task, compare, answer')
  .option('--steps <n>', 'steps of the last training stage (more steps, better answers)')
  .option('--test <n>', 'test questions per model')
  .option('--device <auto|cpu|wasm|webgpu>', 'where to train (auto: WebGPU on a GPU adapter, else wasm)', 'auto')
  .option('--out <dir>', 'where checkpoints and the fresh image go', 'runs/demo')
  .action(async (opts: import('./start.js').StartOptions) => (await import('./start.js')).startCommand(opts));

program
  .command('train')
  .description('run a training recipe (stages, data, checkpoints); --resume continues an interrupted run')
  .option('--recipe <name|path>', 'shipped recipe (tiny-demo, llava-uhd-v4) or a JSON file', 'tiny-demo')
  .option('--config <name|path>', 'model config', 'tiny')
  .option('--weights <file|dir>', 'start from these weights (default: random init)')
  .option('--out <dir>', 'run folder: metrics.jsonl, checkpoints', 'runs/train')
  .option('--device <cpu|wasm|webgpu>', 'where to train', 'cpu')
  .option('--resume', 'continue from <out>/checkpoint.safetensors')
  .action(async (opts: import('./train.js').TrainCliOptions) => (await import('./train.js')).trainCommand(opts));

program
  .command('eval')
  .description('exact-match accuracy per question type, visual tokens, FLOPs and encode time per image')
  .requiredOption('--weights <file|dir>', 'trained weights')
  .option('--config <name|path>', 'model config', 'tiny')
  .option('--recipe <name|path>', "whose data's test split to use", 'tiny-demo')
  .option('--data <file.jsonl>', 'evaluate on a LLaVA-style JSONL file instead')
  .option('--n <count>', 'evaluate the first n samples')
  .option('--device <cpu|wasm|webgpu>', 'where to run (wasm: WebAssembly SIMD on every core)', 'cpu')
  .option('--json', 'print JSON')
  .action(async (opts: import('./train.js').EvalCliOptions) => (await import('./train.js')).evalCommand(opts));

try {
  await program.parseAsync();
} catch (e) {
  // a clear message for bad input, not a stack trace (UHD_DEBUG=1 shows the stack)
  console.error(`uhd: ${process.env.UHD_DEBUG ? (e as Error).stack : (e as Error).message}`);
  process.exitCode = 1;
}
