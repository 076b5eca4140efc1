/**
 * A checkpoint's own chat template: the Jinja `chat_template` of its tokenizer_config.json,
 * rendered as transformers' `apply_chat_template` renders it (messages, `add_generation_prompt`,
 * `enable_thinking` and the special-token strings as variables), with @huggingface/jinja, the
 * Hugging Face JS port of Jinja for chat templates. Checked against Jinja2 itself on Qwen3's
 * template (tests/fixtures/chat-template).
 */
import { Template } from '@huggingface/jinja';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** End with the header of the next assistant turn (generation), or not (a training sample). */
  addGenerationPrompt: boolean;
  /** Qwen3's switch: false closes an empty think block after the generation header. */
  enableThinking: boolean;
  /** More variables, e.g. `bos_token`, `eos_token` from tokenizer_config.json. */
  variables?: Readonly<Record<string, unknown>>;
}

/** Parsed templates by source: a training run renders every sample with the same one. */
const parsed = new Map<string, Template>();
const MAX_CACHED = 8;

function compile(source: string, name: string): Template {
  let t = parsed.get(source);
  if (t) return t;
  try {
    t = new Template(source);
  } catch (e) {
    throw new Error(`chat template ${name}: cannot parse: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (parsed.size >= MAX_CACHED) parsed.delete(parsed.keys().next().value as string);
  parsed.set(source, t);
  return t;
}

/** Renders `messages` with the Jinja `source`; `name` says where the template came from in errors. */
export function renderChatTemplate(source: string, messages: readonly ChatMessage[], opts: ChatTemplateOptions, name = 'chat_template'): string {
  if (typeof source !== 'string' || source.length === 0) throw new Error(`chat template ${name}: empty or not a string`);
  const template = compile(source, name);
  try {
    return template.render({
      ...opts.variables,
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: opts.addGenerationPrompt,
      enable_thinking: opts.enableThinking,
    });
  } catch (e) {
    throw new Error(`chat template ${name}: rendering failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}
