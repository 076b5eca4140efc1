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

await program.parseAsync();
