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

await program.parseAsync();
