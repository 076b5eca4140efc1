/** `uhd generate`: answer a question about an image, streaming the answer. */
import { closeDevice as shutdown, parseDevice } from '../backends/index.js';
import { loadImage } from '../llava-uhd/image.js';
import { buildPrompt } from '../llava-uhd/layout.js';
import { generate } from '../llava-uhd/generate.js';
import { loadModel } from '../llava-uhd/load.js';
import { prepareImage, viewPixels } from '../llava-uhd/preprocess.js';

export interface GenerateCliOptions {
  config: string;
  weights?: string;
  randomInit?: boolean;
  image: string;
  prompt: string;
  maxNewTokens: string;
  maxSlices?: string;
  temperature: string;
  topP: string;
  seed?: string;
  device: string;
}

export async function generateCommand(o: GenerateCliOptions): Promise<void> {
  const device = parseDevice('--device', o.device);
  const maxNewTokens = Number(o.maxNewTokens);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new Error(`--max-new-tokens: '${o.maxNewTokens}' is not a positive integer`);
  try {
    const { model, tok, config } = await loadModel({ config: o.config, weights: o.weights, randomInit: o.randomInit, device });
    const img = await loadImage(o.image);
    const prepared = prepareImage(img, config, o.maxSlices ? Number(o.maxSlices) : undefined);
    const plan = prepared.plan;
    process.stderr.write(
      `image ${img.width}x${img.height}: thumbnail ${plan.thumbnail.width}x${plan.thumbnail.height}` +
        (plan.grid ? `, ${plan.grid.cols}x${plan.grid.rows} slices of ${plan.slice!.width}x${plan.slice!.height}` : ', no slices') +
        `; ${device}${o.randomInit && !o.weights ? ', random weights' : ''}\n`,
    );
    const content = o.prompt.includes('<image>') ? o.prompt : `<image>\n${o.prompt}`;
    const prompt = buildPrompt([{ role: 'user', content }], [prepared.tokens], tok);
    const pixels = viewPixels(prepared.views, device);
    const out: number[] = [];
    let printed = '';
    const stop = [tok.special['<|im_end|>'], tok.eosId];
    await generate(model, { ids: Array.from(prompt.ids), unkPositions: prompt.unkPositions }, pixels, {
      maxNewTokens,
      temperature: Number(o.temperature),
      topP: Number(o.topP),
      seed: o.seed === undefined ? undefined : Number(o.seed),
      stopTokens: stop,
      onToken: (id) => {
        if (stop.includes(id)) return;
        out.push(id);
        const text = tok.decode(out);
        process.stdout.write(text.slice(printed.length));
        printed = text;
      },
    });
    process.stdout.write('\n');
  } finally {
    shutdown();
  }
}
