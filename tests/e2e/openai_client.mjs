// The official `openai` npm client (v4) against the gateway on tiny LION: what a new user
// tries first. Run by test_openai_client.sh with the gateway's URL and the model's examples.
//   node openai_client.mjs BASE_URL EXAMPLES_DIR
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';

const [base, examplesDir] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'not-checked', maxRetries: 0, timeout: 60000 });
const requests = JSON.parse(fs.readFileSync(path.join(examplesDir, 'requests.json'), 'utf8')).requests;
let passed = 0, failed = 0;
function check(ok, what) {
  if (ok) passed++;
  else { failed++; console.log(`FAIL ${what}`); }
}

function messagesOf(req) {
  const png = fs.readFileSync(path.join(examplesDir, req.image)).toString('base64');
  return [{ role: 'user', content: [
    { type: 'image_url', image_url: { url: `data:image/png;base64,${png}` } },
    { type: 'text', text: req.instruction },
  ] }];
}

async function streamed(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '', pieces = 0, finish = null, usage = null, role = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.delta.role) role = choice.delta.role;
    if (choice.delta.content) { text += choice.delta.content; pieces++; }
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  return { text, pieces, finish, usage, role };
}

const models = await client.models.list();
const ids = models.data.map((m) => m.id);
check(ids.includes('tiny-lion') && ids.includes('tiny-lion-region'), `models.list: ${ids}`);

const colour = requests.find((r) => r.task === 'vqa_colour');
const caption = requests.find((r) => r.task === 'caption');
const rec = requests.find((r) => r.task === 'rec');

// a chat completion with an image: the model's answer (5 beams, model.json's defaults)
const answer = await client.chat.completions.create({ model: 'tiny-lion', messages: messagesOf(colour) });
check(answer.choices[0].message.content === colour.expected, `chat: '${answer.choices[0].message.content}', expected '${colour.expected}'`);
check(answer.choices[0].finish_reason === 'stop', `chat finish_reason ${answer.choices[0].finish_reason}`);
check(answer.usage.completion_tokens > 0 && answer.usage.prompt_tokens > 0, `chat usage ${JSON.stringify(answer.usage)}`);

// region-level through the model name: the answer carries the box
const box = await client.chat.completions.create({ model: 'tiny-lion-region', messages: messagesOf(rec) });
check(/^\[[0-9.]+,[0-9.]+,[0-9.]+,[0-9.]+\]$/.test(box.choices[0].message.content), `region answer '${box.choices[0].message.content}'`);

// streaming, beam search (its final answer in one piece): the same text as without streaming
const whole = await client.chat.completions.create({ model: 'tiny-lion', messages: messagesOf(caption) });
const s1 = await streamed({ model: 'tiny-lion', messages: messagesOf(caption) });
check(s1.text === whole.choices[0].message.content, `beam stream '${s1.text}' vs '${whole.choices[0].message.content}'`);
check(s1.role === 'assistant' && s1.finish === 'stop', `beam stream role ${s1.role} finish ${s1.finish}`);
check(s1.usage && s1.usage.completion_tokens === whole.usage.completion_tokens, `stream usage ${JSON.stringify(s1.usage)}`);

// streaming, greedy: token by token, the pieces joined equal the non-streamed greedy answer
const greedyParams = { model: 'tiny-lion', messages: messagesOf(caption), temperature: 0, num_beams: 1 };
const greedy = await client.chat.completions.create(greedyParams);
const s2 = await streamed(greedyParams);
check(s2.text === greedy.choices[0].message.content, `greedy stream '${s2.text}' vs '${greedy.choices[0].message.content}'`);
check(s2.pieces >= 3, `greedy stream came in ${s2.pieces} pieces`);

// sampling with a seed is reproducible
const sampleParams = { model: 'tiny-lion', messages: messagesOf(caption), temperature: 1.5, seed: 7 };
const a = await client.chat.completions.create(sampleParams);
const b = await client.chat.completions.create(sampleParams);
check(a.choices[0].message.content === b.choices[0].message.content, 'the same seed gave different samples');

// cut by max_completion_tokens: "length", completion_tokens = the limit
const cut = await client.chat.completions.create({ ...greedyParams, max_completion_tokens: 2 });
check(cut.choices[0].finish_reason === 'length', `cut finish_reason ${cut.choices[0].finish_reason}`);
check(cut.usage.completion_tokens === 2, `cut completion_tokens ${cut.usage.completion_tokens}`);

// errors arrive as the client's typed errors
try {
  await client.chat.completions.create({ model: 'gpt-4o', messages: messagesOf(colour) });
  check(false, 'an unknown model was answered');
} catch (e) {
  check(e instanceof OpenAI.NotFoundError && e.code === 'model_not_found', `unknown model: ${e}`);
}
try {
  await client.chat.completions.create({ model: 'tiny-lion', messages: messagesOf(colour),
    tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] });
  check(false, 'tools were ignored');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && /'tools'/.test(e.message), `tools: ${e}`);
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
