#!/usr/bin/env node
/** The `uhd` command line. */
import { Command } from 'commander';
import { demoCommand } from './demo.js';
import { infoCommand } from './info.js';

const program = new Command('uhd').description('LLaVA-UHD v4 on a TypeScript + WebGPU tensor runtime');

program
  .command('info')
  .description('show the chosen backend, adapter and limits')
  .option('--json', 'print JSON')
  .action(infoCommand);

program
  .command('demo', { isDefault: true })
  .description('run the runtime demo: a ViT block and the intra-ViT compressor on CPU and WebGPU')
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
  .option('--device <cpu|webgpu>', 'where to run', 'cpu')
  .action(async (opts: import('./generate.js').GenerateCliOptions) => (await import('./generate.js')).generateCommand(opts));

try {
  await program.parseAsync();
} catch (e) {
  // a clear message for bad input, not a stack trace (UHD_DEBUG=1 shows the stack)
  console.error(`uhd: ${process.env.UHD_DEBUG ? (e as Error).stack : (e as Error).message}`);
  process.exitCode = 1;
}
