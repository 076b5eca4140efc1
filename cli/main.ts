#!/usr/bin/env node
/** The `uhd` command line. */
import { Command } from 'commander';
import { demoCommand } from './demo.js';
import { infoCommand } from './info.js';
import { unknownOptionsFirst } from './options.js';

const program = new Command('uhd').description('LLaVA-UHD v4 on a TypeScript + WebGPU tensor runtime');

program
  .command('info')
  .description('show every backend (the WebGPU adapter and its limits, the wasm backend, the CPU reference) and what --device auto picks; with --model, the memory a model needs')
  .option('--json', 'print JSON')
  .option('--model <name|path>', 'estimate the memory of this config for inference and each training stage (no GPU needed)')
  .option('--dtype <bf16|f16|f32>', 'weight dtype for --model', 'bf16')
  .option('--gpu-memory <size|card>', "say whether it fits: a size (80GiB, 141GB) or a card (h200, h100, a100-80gb, ...)")
  .option('--recipe <file>', 'training stages for --model (default recipes/llava-uhd-v4.json)')
  .action(infoCommand);

program
  .command('demo')
  .description('a tour of the runtime: a ViT block and the intra-ViT compressor on every backend, compared')
  .action(demoCommand);

program
  .command('flops')
  .description("analytic MACs per module and layer, D vs the post-ViT baseline: one 448x448 view through the whole pipeline by default; --paper for the paper's numbers")
  .option('--config <name|path>', 'named config or JSON file', 'llava-uhd-v4')
  .option('--view <WxH>', 'view size in pixels, each side a multiple of 56 (default 448x448; 980x980 with --paper)')
  .option('--insert-layer <k|none>', "ViT layer after which D runs (overrides the config's), or 'none' for the baseline")
  .option('--dense-window', "count D's attention dense over the view, as the paper's profiler did")
  .option('--context <tokens>', 'tokens before the view that its visual tokens attend to in the LLM', '0')
  .option('--lm-head', 'count the LM head on every visual token')
  .option('--paper', "the paper's accounting (Fig. 2, Table 5: baseline 3555.1 G, k=6 1573.1 G): one 980x980 view, vision tower only, D dense, elementwise ops")
  .option('--image <WxH>', 'a whole image after slicing (thumbnail + slices), in either convention')
  .option('--compressor <name>', "count this compressor variant instead of the config's (avg-pool, unshuffle-mlp, reused-mlp, cross-attn-topleft, cross-attn-mean, win-attn-mlp, win-attn-reused)")
  .option('--json', 'print one JSON object')
  .action(async (opts: import('./flops.js').FlopsCliOptions) => (await import('./flops.js')).flopsCommand(opts));

program
  .command('ablate')
  .description('the compressor ablation (Table 4): insert each variant at each layer with each init into a pretrained post-ViT baseline, fine-tune, evaluate; writes ablation.md and ablation.json')
  .option('--from <dir>', 'pretrained post-ViT baseline checkpoint folder', 'pretrained/mini')
  .option('--variants <a,b,...>', 'compressors (avg-pool, unshuffle-mlp, reused-mlp, cross-attn-topleft, cross-attn-mean, win-attn-mlp, win-attn-reused) and/or baseline', 'baseline,win-attn-reused')
  .option('--insert-layers <k,...>', 'ViT layers after which the compressor runs', '1')
  .option('--init <reuse,random>', 'initialisations of the compressor', 'reuse')
  .option('--recipe <name|path>', 'fine-tune recipe (shipped or a JSON file)', 'mini-finetune')
  .option('--steps <n>', "override every stage's steps")
  .option('--device <auto|cpu|wasm|webgpu>', 'where to train (auto: WebGPU on a GPU adapter, else wasm)', 'auto')
  .option('--out <dir>', 'where the runs and the table go', 'runs/ablate')
  .action(async (opts: import('./ablate.js').AblateCliOptions) => {
    await (await import('./ablate.js')).ablateCommand(opts);
  });

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
  .description('write N synthetic samples as data.jsonl + images/ (the format the JSONL loader reads), or as a VLMEvalKit benchmark TSV')
  .requiredOption('--out <dir|file.tsv>', 'output folder (jsonl) or .tsv file (vlmeval)')
  .option('--n <count>', 'how many samples (required for jsonl; vlmeval: 60)')
  .option('--format <jsonl|vlmeval>', 'jsonl (data.jsonl + images/) or vlmeval (one TSV, images as base64 PNG)', 'jsonl')
  .option('--question <mcq|open>', 'vlmeval: multiple choice over the answer classes, or open questions', 'mcq')
  .option('--preset <name>', 'tiny or paper', 'tiny')
  .option('--split <name>', 'train, val or test (default: train; vlmeval: test)')
  .option('--start <index>', 'first sample index', '0')
  .option('--types <list>', 'question types, comma-separated (default: count,colour,read)')
  .action(async (opts: DataCliOptions) => (await import('./data.js')).exportCommand(opts));
data
  .command('check')
  .description('load a LLaVA-style .jsonl or .json data file and list its bad records with line numbers')
  .argument('<file>', 'the .jsonl or .json file')
  .action(async (file: string) => (await import('./data.js')).checkCommand(file));

program
  .command('generate')
  .description('answer a question about an image, streaming the answer')
  .requiredOption('--image <file>', 'PNG or JPEG')
  .requiredOption('--prompt <text>', 'the question')
  .option('--config <name|path>', "named config, JSON file or checkpoint folder (default: the checkpoint's own; tiny with --random-init)")
  .option('--weights <file|dir>', 'safetensors file, or a checkpoint folder (Hugging Face style, or a run folder of uhd start/train)')
  .option('--random-init', 'run with random weights (no --weights)')
  .option('--max-new-tokens <n>', 'answer length limit', '64')
  .option('--min-new-tokens <n>', 'no stop token before this many answer tokens', '0')
  .option('--max-slices <n>', 'slice budget (default: the config\'s)')
  .option('--temperature <t>', '0 is greedy; > 0 samples', '0')
  .option('--top-k <k>', 'sampling: keep the k most likely tokens (0: all)', '0')
  .option('--top-p <p>', 'sampling: nucleus mass, in (0, 1]', '1')
  .option('--repetition-penalty <r>', "> 1 discourages tokens already in the sequence (transformers' rule)", '1')
  .option('--no-penalize-prompt', "the repetition penalty counts the answer's tokens only (as MiniCPM-V's chat)")
  .option('--stop <text>', 'stop once the answer ends with this text (repeatable)', (s: string, all: string[]) => [...all, s], [] as string[])
  .option('--num-beams <n>', "beam search with n beams (1: greedy or sampling)", '1')
  .option('--length-penalty <x>', 'beam search: finished scores are sum(log p) / length^x', '1')
  .option('--seed <n>', 'seed for sampling')
  .option('--logits <file>', 'write {"input_ids", "steps": [{"token", "logits"}]} JSON: the raw LM-head outputs per step')
  .option('--device <auto|cpu|wasm|webgpu>', 'where to run (auto: WebGPU on a GPU adapter, else wasm: WebAssembly SIMD on every core)', 'auto')
  .action(async (opts: import('./generate.js').GenerateCliOptions) => (await import('./generate.js')).generateCommand(opts));

program
  .command('start')
  .description("the main job: from the pretrained baseline (pretrained/mini), D inserted by parameter reuse and at random; step-0 distance, then baseline and both D models fine-tuned alike; accuracy per type, MACs, encode time (the paper's Table 4 in miniature); a fresh question")
  .option('--steps <n>', 'fine-tuning steps per model (default: recipes/mini-finetune.json)')
  .option('--test <n>', 'test questions per model')
  .option('--weights <dir>', 'the pretrained baseline folder', 'pretrained/mini')
  .option('--insert-layer <k>', "D's layer k (0-based)", '2')
  .option('--device <auto|cpu|wasm|webgpu>', 'where to train (auto: WebGPU on a GPU adapter, else wasm)', 'auto')
  .option('--out <dir>', 'where checkpoint folders and the fresh image go', 'runs/demo')
  .action(async (opts: import('./start.js').StartOptions) => (await import('./start.js')).startCommand(opts));

program
  .command('pretrain')
  .description('pretrain a small baseline from nothing on the pretraining mix: the tower with classification heads, then connector + LLM on questions; writes a checkpoint folder')
  .option('--out <dir>', 'the checkpoint folder to write (config.json, model.safetensors; the run\'s files under run/)', 'runs/pretrain')
  .option('--config <name>', 'a baseline config (mini-baseline, tiny-baseline)', 'mini-baseline')
  .option('--device <auto|cpu|wasm|webgpu>', 'where to train (auto: WebGPU on a GPU adapter, else wasm)', 'auto')
  .option('--seed <n>', 'seed of the weights, the images and the batches', '0')
  .option('--tower-steps <n>', 'phase 1 steps (tower + heads)', '600')
  .option('--tower-batch <n>', 'images per phase 1 step', '16')
  .option('--tower-lr <x>', 'phase 1 peak learning rate', '0.003')
  .option('--lm-steps <n>', 'phase 2 steps (connector + LLM, tower frozen)', '300')
  .option('--lm-batch <n>', 'questions per phase 2 step', '8')
  .option('--lm-lr <x>', 'phase 2 peak learning rate', '0.005')
  .option('--lm-slices <n>', 'phase 2 slice budget (1: thumbnails only, fewer visual tokens to search)', '4')
  .option('--held-out <n>', 'held-out images for the heads\' accuracy', '100')
  .option('--test <n>', 'test questions answered at the end, accuracy per type (0: none)', '100')
  .option('--resume', 'continue: skip phase 1 if <out>/run/tower.safetensors exists, resume phase 2 from its checkpoint')
  .action(async (opts: import('./pretrain.js').PretrainCliOptions) => {
    await (await import('./pretrain.js')).pretrainCommand(opts);
  });

program
  .command('train')
  .description('run a training recipe (stages, data, checkpoints); --resume continues an interrupted run')
  .option('--recipe <name|path>', 'shipped recipe (tiny-demo, llava-uhd-v4) or a JSON file', 'tiny-demo')
  .option('--config <name|path>', "model config (default: the weights' own; tiny from random init)")
  .option('--weights <file|dir>', 'start from these weights (default: random init)')
  .option('--out <dir>', 'run folder: metrics.jsonl, checkpoints', 'runs/train')
  .option('--device <auto|cpu|wasm|webgpu>', 'where to train (auto: WebGPU on a GPU adapter, else wasm)', 'auto')
  .option('--resume', 'continue from <out>/checkpoint.safetensors (refused if the recipe, config or data differ from the checkpoint\'s)')
  .option('--force-resume', 'like --resume, but continue even if the recipe, config or data differ')
  .option('--fresh', 'start afresh in an --out that holds a run, deleting its checkpoint, stage weights and metrics')
  .option('--strict-data', 'refuse to start if any training sample is bad (default: leave bad samples out, reporting each)')
  .action(async (opts: import('./train.js').TrainCliOptions) => (await import('./train.js')).trainCommand(opts));

program
  .command('eval')
  .description("a VLMEvalKit benchmark TSV as the paper evaluated it (prompts, settings, scoring; resumable), or exact-match accuracy, tokens, FLOPs and encode time on a recipe's test split or a .jsonl/.json file")
  .option('--weights <file|dir>', 'trained weights (not needed with --predictions)')
  .option('--config <name|path>', "model config (default: the weights' own)")
  .option('--recipe <name|path>', "whose data's test split to use", 'tiny-demo')
  .option('--data <file>', 'a VLMEvalKit benchmark .tsv, or a LLaVA-style .jsonl/.json file')
  .option('--predictions <file.tsv>', 'score this predictions file (ours or VLMEvalKit\'s) instead of running a model')
  .option('--benchmark <name>', 'MMMU_DEV_VAL, MathVista_MINI, MMBench_DEV_EN_V11, MMBench_DEV_CN_V11, MMStar, HallusionBench, AI2D_TEST, OCRBench, custom_mcq, custom_vqa (default: from the file name)')
  .option('--out <dir>', 'tsv: where predictions, the cache and <name>_acc.csv go (default runs/eval)')
  .option('--limit <n>', 'evaluate n rows (MMBench: n questions with their rotations)')
  .option('--n <count>', 'the same as --limit')
  .option('--shuffle', 'tsv: pick the rows in a seeded random order')
  .option('--seed <n>', 'tsv: seed for --shuffle', '0')
  .option('--batch-size <n>', 'tsv: rows per answer call')
  .option('--max-new-tokens <n>', "tsv: answer length limit (the release's 2048)")
  .option('--num-beams <n>', "tsv: beams (the release's 3)")
  .option('--repetition-penalty <x>', "tsv: the release's 1.2")
  .option('--max-input-length <n>', "tsv: longest prompt in tokens (the release's 8192)")
  .option('--max-slices <n>', "tsv: slice budget per image (default: the config's)")
  .option('--model-name <name>', 'tsv: the <model> of the <model>_<dataset> file names', 'uhd')
  .option('--image-root <dir>', "tsv: where relative image_path files start (default: the TSV's folder)")
  .option('--no-jpeg-roundtrip', "tsv: skip VLMEvalKit's JPEG re-encoding of single-image rows")
  .option('--device <auto|cpu|wasm|webgpu>', 'where to run (auto: WebGPU on a GPU adapter, else wasm: WebAssembly SIMD on every core)', 'auto')
  .option('--json', 'print JSON')
  .action(async (opts: import('./train.js').EvalCliOptions) => (await import('./train.js')).evalCommand(opts));

// a mistyped flag is an unknown option (with a suggestion), never a "missing required option"
unknownOptionsFirst(program);

try {
  await program.parseAsync();
} catch (e) {
  // a clear message for bad input, not a stack trace (UHD_DEBUG=1 shows the stack)
  console.error(`uhd: ${process.env.UHD_DEBUG ? (e as Error).stack : (e as Error).message}`);
  process.exitCode = 1;
}
