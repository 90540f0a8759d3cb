// The page the gateway serves at / (web/), in headless Chromium through playwright-core,
// against the real gateway and workers on tiny LION. Run by test_web_page.sh:
//   node web_page.mjs BASE_URL EXAMPLES_DIR OUT_DIR [API_KEY]
// Ask: an error shown as the API's message (a missing key when keys are on, an instruction
// over the limit), a region dragged on the image -> the example region caption, a question,
// then the example REC question on the same image: its text, the box drawn (canvas pixels at
// the box's edge), the feature cache hit in the timings. Watch: every stage with a live
// worker, a request made while watching listed with its trace. Screenshots into OUT_DIR.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [base, examplesDir, outDir, apiKey] = process.argv.slice(2);
const requests = JSON.parse(fs.readFileSync(path.join(examplesDir, 'requests.json'), 'utf8')).requests;
const rec = requests.find((r) => r.task === 'rec');
const regionReq = requests.find((r) => r.task === 'region_caption');
const STAGES = ['vision', 'tagger', 'aggregator', 'llm'];
const MAGENTA = [255, 0, 255];
let failed = 0, passed = 0;
function check(ok, what) {
  if (ok) passed++;
  else { failed++; console.log(`FAIL ${what}`); }
  return ok;
}
const boxOf = (s) => (/^\[([0-9.]+),([0-9.]+),([0-9.]+),([0-9.]+)\]$/.exec(s) || []).slice(1).map(Number);
function iou(a, b) {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0])), h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h;
  return u > 0 ? (w * h) / u : 0;
}
const near = (p, c, tol = 12) => p && p.every((v, i) => i > 2 || Math.abs(v - c[i]) <= tol);

const browser = await chromium.launch({
  executablePath: process.env.LION_CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const t0 = Date.now();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const pageErrors = [], outside = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('request', (r) => { if (!r.url().startsWith(base) && !/^(data|blob):/.test(r.url())) outside.push(r.url()); });
  page.setDefaultTimeout(30000);

  await page.goto(`${base}/`);
  check((await page.title()) === 'LION', `the page at / has title '${await page.title()}'`);
  for (const f of ['app.js', 'style.css']) {
    const r = await page.request.get(`${base}/${f}`);
    check(r.ok(), `GET /${f}: ${r.status()}`);
  }

  // the answer box's state once a request has ended
  const answered = async () => {
    await page.waitForSelector('#answer-box[data-state=done], #answer-box[data-state=error]');
    return {
      state: await page.getAttribute('#answer-box', 'data-state'),
      text: await page.textContent('#answer'),
      error: (await page.isVisible('#error')) ? await page.textContent('#error') : '',
    };
  };
  const ask = async () => {
    await page.waitForSelector('#ask:not([disabled])');
    await page.click('#ask');
    return answered();
  };

  // --- an image pasted, then one dropped ------------------------------------------------------
  const giveImage = (how, name) => page.evaluate(([how, name, b64]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], name, { type: 'image/png' }));
    if (how === 'paste') document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
    else document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, [how, name, fs.readFileSync(path.join(examplesDir, regionReq.image)).toString('base64')]);
  await giveImage('paste', 'pasted.png');
  check(await page.waitForSelector('#canvas:not([hidden])').then(() => true, () => false), 'a pasted image is not shown');
  check(/^pasted\.png · 64×64/.test(await page.textContent('#image-name')), `pasted: '${await page.textContent('#image-name')}'`);
  await giveImage('drop', regionReq.image);
  await page.waitForFunction((n) => document.getElementById('image-name').textContent.startsWith(n), regionReq.image).catch(() => {});
  check((await page.textContent('#image-name')).startsWith(regionReq.image), `dropped: '${await page.textContent('#image-name')}'`);

  // --- a region dragged on the image, the example region caption --------------------------

  if (apiKey) { // keys on: without one, the API's 401 message; with it, answers
    await page.fill('#api-key', '');
    const a = await ask();
    check(a.state === 'error' && a.error.length > 5 && /401/.test(a.error), `without a key: state ${a.state}, error '${a.error}'`);
    check(await page.$('#api-key.needed'), 'the key field is not marked as needed after a 401');
    await page.fill('#api-key', apiKey);
    check(await page.evaluate(() => localStorage.getItem('lion.apiKey')) === apiKey, 'the key is not kept in localStorage');
  }
  await page.waitForSelector('#server.ok', { timeout: 15000 }).catch(() => check(false, 'the header never says ready'));

  await page.check('input[name=task][value=region]');
  const cb = await page.$eval('#canvas', (c) => { const r = c.getBoundingClientRect(); return { x: r.left, y: r.top, w: r.width, h: r.height }; });
  const want = boxOf(regionReq.instruction.match(/\[[^\]]+\]/)[0]);
  await page.mouse.move(cb.x + want[0] * cb.w, cb.y + want[1] * cb.h);
  await page.mouse.down();
  await page.mouse.move(cb.x + ((want[0] + want[2]) / 2) * cb.w, cb.y + ((want[1] + want[3]) / 2) * cb.h, { steps: 3 });
  await page.mouse.move(cb.x + want[2] * cb.w, cb.y + want[3] * cb.h, { steps: 3 });
  await page.mouse.up();
  const dragged = boxOf((await page.inputValue('#instruction')).trim());
  check(dragged.length === 4 && dragged.every((v, i) => Math.abs(v - want[i]) < 0.01),
    `dragging ${JSON.stringify(want)} gave '${await page.inputValue('#instruction')}'`);
  check(/^Please provide a short description for this region: \[\d\.\d{3},\d\.\d{3},\d\.\d{3},\d\.\d{3}\]\.$/.test(await page.textContent('#prompt')),
    `region prompt '${await page.textContent('#prompt')}'`);
  // the example's exact region, typed
  await page.fill('#instruction', want.map((v) => v.toFixed(3)).join(',').replace(/^/, '[').replace(/$/, ']'));
  check((await page.textContent('#prompt')) === regionReq.instruction, `region prompt '${await page.textContent('#prompt')}' vs '${regionReq.instruction}'`);
  let a = await ask();
  check(a.state === 'done' && a.text === regionReq.reference_answer,
    `region caption: state ${a.state}, '${a.text}' (expected '${regionReq.reference_answer}') ${a.error}`);

  // --- an error: the API's message, not a blank page ---------------------------------------
  await page.check('input[name=task][value=vqa]');
  await page.fill('#instruction', 'x'.repeat(5000));
  a = await ask();
  check(a.state === 'error' && /instruction/i.test(a.error) && /413/.test(a.error), `over-long instruction: state ${a.state}, error '${a.error}'`);

  // --- the example REC question, second on its image (uploaded with the file picker) ---------
  await page.setInputFiles('#file2', path.join(examplesDir, rec.image));
  await page.waitForFunction(() => document.getElementById('history').children.length === 0);
  await page.fill('#instruction', 'What shape is the green object?');
  a = await ask();
  check(a.state === 'done' && a.text.length > 0, `question: state ${a.state}, '${a.text}' ${a.error}`);
  const visionMs = async () => Number((await page.textContent('#timings .t-vision b')).replace(/ ms$/, ''));
  const firstVision = await visionMs();
  // the vision workers' feature cache hits, as the gateway counts them from their heartbeats
  const authHeader = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  const visionHits = async () => {
    const m = /^lion_cache_hits_total\{stage="vision",model="tiny-lion"\} (\d+)/m.exec(await (await fetch(`${base}/metrics`, { headers: authHeader })).text());
    return m ? Number(m[1]) : NaN;
  };
  const hitsBefore = await visionHits();

  const pixel = (b) => page.evaluate((b) => {
    const c = document.getElementById('canvas');
    const x = Math.round(b[0] * c.width), y = Math.round(((b[1] + b[3]) / 2) * c.height);
    return [...c.getContext('2d').getImageData(x, y, 1, 1).data];
  }, b);
  const recAnswer = boxOf(rec.reference_answer);
  const before = await pixel(recAnswer);

  await page.check('input[name=task][value=rec]');
  const phrase = rec.instruction.replace(/^Please provide the bounding box coordinate of the region this sentence describes: /, '').replace(/\.$/, '');
  await page.fill('#instruction', phrase);
  check((await page.textContent('#prompt')) === rec.instruction, `REC prompt '${await page.textContent('#prompt')}' vs '${rec.instruction}'`);
  a = await ask();
  check(a.state === 'done' && a.text === rec.reference_answer, `REC: state ${a.state}, '${a.text}' (the reference's '${rec.reference_answer}') ${a.error}`);
  const got = boxOf(a.text);
  check(got.length === 4 && iou(got, boxOf(rec.expected)) >= 0.5, `REC box ${a.text} vs the truth ${rec.expected}: IoU < 0.5`);
  const listed = await page.$$eval('#boxes [data-box]', (els) => els.map((e) => JSON.parse(e.dataset.box)));
  check(listed.length === 1 && listed[0].every((v, i) => Math.abs(v - recAnswer[i]) < 0.001), `boxes listed ${JSON.stringify(listed)}`);
  // the box drawn: its left edge (at half its height) is the box colour, which the image there was not
  const after = await pixel(listed[0] || recAnswer);
  check(near(after, MAGENTA) && !near(before, MAGENTA), `canvas at the box's left edge: ${after} (before the answer: ${before})`);
  const inside = await page.evaluate((b) => {
    const c = document.getElementById('canvas');
    return [...c.getContext('2d').getImageData(Math.round(((b[0] + b[2]) / 2) * c.width), Math.round(((b[1] + b[3]) / 2) * c.height), 1, 1).data];
  }, recAnswer);
  check(!near(inside, MAGENTA), `the box is filled: ${inside}`);
  // the second question on this image: the vision stage's feature cache answered it (the
  // gateway's count grows within a heartbeat or two), and the timings say so: the answer
  // carries "cache": {"vision": "hit"} and the page marks it, whatever the times were (on a
  // loaded machine a hit need not be faster than the miss).
  let hitsAfter = hitsBefore;
  for (let i = 0; i < 40 && !(hitsAfter > hitsBefore); i++) {
    await new Promise((r) => setTimeout(r, 100));
    hitsAfter = await visionHits();
  }
  check(hitsAfter === hitsBefore + 1, `vision cache hits ${hitsBefore} -> ${hitsAfter} for the second question about the image`);
  const vision = await visionMs();
  check(await page.isVisible('#timings .t-vision .hit'),
        `vision ${vision} ms after ${firstVision} ms: the timings do not show the cache hit the answer reported`);
  check(await page.$$eval('#tags .tag', (t) => t.length) > 0, 'no tags shown');
  check(await page.$$eval('#history li', (l) => l.length) === 2, 'the history does not list both questions');
  await page.screenshot({ path: path.join(outDir, 'web-page-ask.png') });

  // --- Watch: the pipeline -----------------------------------------------------------------
  await page.click('#tab-watch');
  await page.waitForFunction((stages) => stages.every((s) => document.querySelector(`.stage[data-stage="${s}"] .workers li.live`)), STAGES,
    { timeout: 10000 }).catch(() => {});
  for (const s of STAGES) {
    const replicas = await page.$$eval(`.stage[data-stage="${s}"] .workers li.live`, (l) => l.map((e) => e.dataset.replica));
    check(replicas.length > 0 && replicas.every((r) => r), `stage ${s}: live workers ${JSON.stringify(replicas)}`);
  }
  check(await page.isVisible('#recent-empty'), 'the note on the empty recent list is not shown');
  // a request made while someone watches is listed, with its trace
  const png = fs.readFileSync(path.join(examplesDir, rec.image)).toString('base64');
  const res = await fetch(`${base}/v1/generate`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}) },
    body: JSON.stringify({ image: png, instruction: rec.instruction, task: rec.category }),
  });
  const id = (await res.json()).request_id;
  const row = `#recent tr[data-id="${id}"]`;
  if (check(await page.waitForSelector(row, { timeout: 10000 }).then(() => true, () => false), `request ${id} never listed in the recent requests`)) {
    await page.click(row);
    await page.waitForSelector('#trace .hop');
    const hops = await page.$$eval('#trace .hop', (h) => h.map((e) => ({ stage: e.dataset.stage, text: e.textContent, tensors: e.querySelectorAll('.tensor').length })));
    check(STAGES.every((s) => hops.some((h) => h.stage === s)), `trace stages ${JSON.stringify(hops.map((h) => h.stage))}`);
    check(hops.some((h) => h.tensors > 0), 'the trace shows no tensor shapes');
    check((await page.textContent('#trace h3')) === id, 'the trace is not the clicked request');
  }
  await page.screenshot({ path: path.join(outDir, 'web-page-watch.png') });

  check(pageErrors.length === 0, `errors in the page: ${pageErrors.join('; ')}`);
  check(outside.length === 0, `the page asked for outside URLs: ${outside.join(', ')}`);
} finally {
  await browser.close();
}
console.log(`web page: ${passed} passed, ${failed} failed (${((Date.now() - t0) / 1000).toFixed(1)} s); screenshots in ${outDir}`);
process.exit(failed ? 1 : 0);
