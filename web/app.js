/* LION's page: Ask (an image, a task, an instruction -> the streamed answer, boxes drawn on
 * the image, tags, stage timings) and Watch (the pipeline: stages, workers, recent requests
 * and their traces, polled from GET /v1/pipeline only while that view is open).
 * Plain JS, no framework, no external assets; the API is docs/api.md. */
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const STAGES = ['vision', 'tagger', 'aggregator', 'llm'];
  const BOX_COLOUR = '#ff00ff';      /* answer boxes (the e2e test reads this colour back) */
  const REGION_COLOUR = '#00a8ff';   /* the region being described */
  const KEY_STORE = 'lion.apiKey';
  const POLL_MS = 1000;

  /* The instruction templates of models/tiny-lion/examples/requests.json, per task. */
  const TASKS = {
    caption: {
      kind: 'image_level', label: 'Instruction (sent as it is)', initial: 'A short image caption:',
      prompt: (v) => v.trim(),
    },
    vqa: {
      kind: 'image_level', label: 'Question', placeholder: 'What color is the cross?',
      prompt: (v) => (/^question:/i.test(v.trim()) ? v.trim() : `Question: ${v.trim()} Short answer:`),
    },
    rec: {
      kind: 'region_level', label: 'What to find', placeholder: 'the green triangle',
      prompt: (v) => {
        const t = v.trim();
        if (/^please provide the bounding box/i.test(t)) return t;
        return `Please provide the bounding box coordinate of the region this sentence describes: ${/[.!?]$/.test(t) ? t : t + '.'}`;
      },
    },
    region: {
      kind: 'region_level', label: 'Region [x1,y1,x2,y2] (drag a box on the image)', placeholder: '[0.250,0.250,0.750,0.750]',
      prompt: (v) => `Please provide a short description for this region: ${v.trim()}.`,
    },
  };

  const state = {
    image: null,          /* {name, b64, img (HTMLImageElement), w, h, bytes, slowest: {stage: ms}} */
    task: 'caption',
    values: { caption: TASKS.caption.initial, vqa: '', rec: '', region: '' },
    region: null,         /* [x1,y1,x2,y2] normalised, for the region task */
    shown: null,          /* the history entry shown (its boxes drawn) */
    history: [],
    running: null,        /* AbortController of the request in flight */
    drag: null,
  };

  /* ---- small helpers --------------------------------------------------------------------- */
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  const fmtMs = (ms) => (ms == null ? '–' : ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : Math.round(ms).toString()) + ' ms';
  const pct = (x) => (x == null || !isFinite(x) ? '–' : Math.round(x * 100) + '%');
  const f3 = (x) => Math.min(1, Math.max(0, x)).toFixed(3);
  const boxText = (b) => `[${b.map(f3).join(',')}]`;
  function el(tag, cls, html) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (html != null) e.innerHTML = html;
    return e;
  }
  function headers(json) {
    const h = {};
    if (json) h['Content-Type'] = 'application/json';
    const key = $('api-key').value.trim();
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }
  /* An HTTP error as the API words it ({"error": {"code", "message"}}), else what we have. */
  async function apiError(res) {
    let text = '';
    try { text = await res.text(); } catch (e) { /* the body is gone */ }
    let message = text.trim().slice(0, 400) || res.statusText || 'no message';
    let code = '';
    try {
      const j = JSON.parse(text);
      if (j && j.error) { message = j.error.message || message; code = j.error.code || ''; }
    } catch (e) { /* not JSON */ }
    if (res.status === 401 || res.status === 403) keyNeeded(true);
    return { status: res.status, code, message };
  }
  function keyNeeded(on) {
    $('api-key').classList.toggle('needed', on);
    if (on) $('api-key').title = 'the gateway asks for an API key (Authorization: Bearer ...)';
  }

  /* ---- header: tabs, key, server status ---------------------------------------------------- */
  function showView(name) {
    for (const v of ['ask', 'watch']) {
      $(`view-${v}`).hidden = v !== name;
      $(`tab-${v}`).setAttribute('aria-selected', String(v === name));
    }
    if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
    if (name === 'watch') watch.start(); else watch.stop();
    if (name === 'ask') layoutCanvas();
  }
  for (const b of document.querySelectorAll('nav button')) b.addEventListener('click', () => showView(b.dataset.view));
  $('key-form').addEventListener('submit', (e) => e.preventDefault());

  try { $('api-key').value = localStorage.getItem(KEY_STORE) || ''; } catch (e) { /* storage off */ }
  let keyTimer = null;
  $('api-key').addEventListener('input', () => {
    keyNeeded(false);
    try { localStorage.setItem(KEY_STORE, $('api-key').value.trim()); } catch (e) { /* storage off */ }
    clearTimeout(keyTimer);
    keyTimer = setTimeout(refreshServer, 400);
  });

  let modelName = '';
  /* The models the gateway serves (its -region names left out: the task picks the route);
   * a picker only when there is more than one. */
  function showModels(list) {
    const names = list.map((m) => m.id).filter((id) => !/-region$/.test(id));
    modelName = names[0] || '';
    const sel = $('model');
    sel.innerHTML = names.map((n) => `<option value="${esc(n)}">${esc(n)}</option>`).join('');
    $('model-label').hidden = names.length < 2;
  }
  async function refreshServer() {
    const s = $('server');
    try {
      const res = await fetch('readyz', { headers: headers(false), cache: 'no-store' });
      let detail = '';
      try { const j = await res.json(); detail = j.error ? j.error.message : ''; } catch (e) { /* not JSON */ }
      if (!modelName) {
        try {
          const m = await fetch('v1/models', { headers: headers(false), cache: 'no-store' });
          if (m.ok) showModels((await m.json()).data || []);
        } catch (e) { /* later */ }
      }
      s.className = `server ${res.ok ? 'ok' : 'bad'}`;
      s.textContent = res.ok ? `ready${modelName ? ' · ' + modelName : ''}` : `not ready: ${detail || res.status}`;
    } catch (e) {
      s.className = 'server bad';
      s.textContent = 'gateway unreachable';
    }
  }

  /* ---- the image --------------------------------------------------------------------------- */
  const drop = $('drop');
  const canvas = $('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });

  function isJpegOrPng(bytes) {
    return (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) ||
           (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff);
  }
  function b64(buf) {
    const bytes = new Uint8Array(buf);
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }
  function loadImg(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error('the browser cannot decode this file as an image'));
      img.src = url;
    });
  }
  async function setImageFile(file) {
    if (!file) return;
    try {
      let buf = await file.arrayBuffer();
      const url = URL.createObjectURL(file);
      let img;
      try { img = await loadImg(url); } finally { URL.revokeObjectURL(url); }
      let converted = false;
      if (!isJpegOrPng(new Uint8Array(buf, 0, Math.min(4, buf.byteLength)))) {
        /* the gateway takes JPEG and PNG: anything else the browser decodes goes as PNG */
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0);
        const blob = await new Promise((r) => c.toBlob(r, 'image/png'));
        buf = await blob.arrayBuffer();
        converted = true;
      }
      state.image = { name: file.name || 'pasted image', b64: b64(buf), img, w: img.naturalWidth, h: img.naturalHeight,
                      bytes: buf.byteLength, slowest: {} };
      state.history = [];
      state.shown = null;
      state.region = null;
      if (state.task === 'region') { state.values.region = ''; $('instruction').value = ''; }
      renderHistory();
      clearAnswer();
      drop.classList.add('has-image');
      $('drop-hint').hidden = true;
      canvas.hidden = false;
      $('image-info').hidden = false;
      $('image-name').textContent = `${state.image.name} · ${img.naturalWidth}×${img.naturalHeight} · ` +
        `${(buf.byteLength / 1024).toFixed(1)} KiB${converted ? ' (converted to PNG)' : ''}`;
      layoutCanvas();
      updatePrompt();
    } catch (e) {
      clearAnswer();
      showError({ message: `${file.name || 'this file'}: ${e.message}` });
    }
  }

  /* The canvas is the image scaled to the column (small images scaled up), in device pixels. */
  function layoutCanvas() {
    const im = state.image;
    if (!im || $('view-ask').hidden) return;
    const availW = Math.max(200, drop.clientWidth - 20);
    const availH = Math.max(240, window.innerHeight * 0.72);
    const scale = Math.min(availW / im.w, availH / im.h);
    const cssW = Math.max(1, Math.floor(im.w * scale)), cssH = Math.max(1, Math.floor(im.h * scale));
    const dpr = window.devicePixelRatio || 1;
    canvas.style.width = `${cssW}px`;
    canvas.style.height = `${cssH}px`;
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    drawCanvas();
  }
  function drawCanvas() {
    const im = state.image;
    if (!im) return;
    const W = canvas.width, H = canvas.height, dpr = window.devicePixelRatio || 1;
    ctx.imageSmoothingEnabled = W / im.w < 3;  /* small images stay crisp when scaled up */
    ctx.clearRect(0, 0, W, H);
    ctx.drawImage(im.img, 0, 0, W, H);
    const lw = Math.max(2, Math.round(3 * dpr));
    const rect = (b) => {
      const x1 = Math.round(b[0] * W), y1 = Math.round(b[1] * H), x2 = Math.round(b[2] * W), y2 = Math.round(b[3] * H);
      return [x1, y1, x2 - x1, y2 - y1];
    };
    const region = state.drag ? state.drag.box : state.task === 'region' ? state.region : state.shown && state.shown.region;
    if (region) {
      const [x, y, w, h] = rect(region);
      ctx.save();
      ctx.fillStyle = 'rgba(0, 168, 255, 0.12)';
      ctx.fillRect(x, y, w, h);
      ctx.setLineDash([6 * dpr, 4 * dpr]);
      ctx.lineWidth = lw;
      ctx.strokeStyle = REGION_COLOUR;
      ctx.strokeRect(x, y, w, h);
      ctx.restore();
    }
    const boxes = state.shown && !state.drag ? state.shown.boxes || [] : [];
    boxes.forEach((b, i) => {
      const [x, y, w, h] = rect(b);
      ctx.lineWidth = lw;
      ctx.strokeStyle = BOX_COLOUR;
      ctx.strokeRect(x, y, w, h);
      if (boxes.length > 1) {   /* a number above the box's corner, off its edges */
        const fs = Math.round(12 * dpr);
        ctx.font = `bold ${fs}px system-ui, sans-serif`;
        const label = String(i + 1), tw = ctx.measureText(label).width + 6 * dpr;
        const ly = y - lw - fs - 4 * dpr >= 0 ? y - lw - fs - 4 * dpr : y + h + lw;
        ctx.fillStyle = BOX_COLOUR;
        ctx.fillRect(x, ly, tw, fs + 4 * dpr);
        ctx.fillStyle = '#fff';
        ctx.fillText(label, x + 3 * dpr, ly + fs);
      }
    });
  }
  window.addEventListener('resize', layoutCanvas);

  /* Picking, dropping, pasting. */
  $('file').addEventListener('change', (e) => { setImageFile(e.target.files[0]); e.target.value = ''; });
  $('file2').addEventListener('change', (e) => { setImageFile(e.target.files[0]); e.target.value = ''; });
  drop.addEventListener('click', (e) => { if (!state.image && e.target === drop) $('file').click(); });
  drop.addEventListener('keydown', (e) => { if (!state.image && (e.key === 'Enter' || e.key === ' ')) $('file').click(); });
  for (const t of ['dragenter', 'dragover']) {
    window.addEventListener(t, (e) => { e.preventDefault(); if (!$('view-ask').hidden) drop.classList.add('over'); });
  }
  window.addEventListener('dragleave', (e) => { if (!e.relatedTarget) drop.classList.remove('over'); });
  window.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = [...(e.dataTransfer?.files || [])].find((x) => x.type.startsWith('image/')) || e.dataTransfer?.files[0];
    if (f) { showView('ask'); setImageFile(f); }
  });
  document.addEventListener('paste', (e) => {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.kind === 'file' && i.type.startsWith('image/'));
    if (!item) return;  /* text pastes go where they were going */
    e.preventDefault();
    showView('ask');
    setImageFile(item.getAsFile());
  });

  /* Dragging a region on the image (the region task). */
  function normPoint(e) {
    const r = canvas.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (e.clientY - r.top) / r.height))];
  }
  canvas.addEventListener('pointerdown', (e) => {
    if (state.task !== 'region' || !state.image) return;
    canvas.setPointerCapture(e.pointerId);
    const p = normPoint(e);
    state.drag = { from: p, box: [p[0], p[1], p[0], p[1]] };
    drawCanvas();
  });
  canvas.addEventListener('pointermove', (e) => {
    if (!state.drag) return;
    const a = state.drag.from, b = normPoint(e);
    state.drag.box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
    drawCanvas();
  });
  const endDrag = () => {
    if (!state.drag) return;
    const b = state.drag.box;
    state.drag = null;
    if (b[2] - b[0] > 0.01 && b[3] - b[1] > 0.01) {
      state.region = b.map((x) => Number(f3(x)));
      state.values.region = boxText(state.region);
      $('instruction').value = state.values.region;
      state.shown = null;
    }
    updatePrompt();
    drawCanvas();
  };
  canvas.addEventListener('pointerup', endDrag);
  canvas.addEventListener('pointercancel', endDrag);

  /* ---- the task and the prompt -------------------------------------------------------------- */
  function parseBox(s) {
    const m = /^\s*\[\s*([0-9.]+)\s*,\s*([0-9.]+)\s*,\s*([0-9.]+)\s*,\s*([0-9.]+)\s*\]\s*\.?\s*$/.exec(s);
    if (!m) return null;
    const b = m.slice(1, 5).map(Number);
    return b.every((x) => x >= 0 && x <= 1) && b[2] > b[0] && b[3] > b[1] ? b : null;
  }
  function setTask(task) {
    state.values[state.task] = $('instruction').value;
    state.task = task;
    const t = TASKS[task];
    $('instruction-label').textContent = t.label;
    $('instruction').placeholder = t.placeholder || '';
    $('instruction').value = state.values[task];
    $('region-hint').hidden = task !== 'region';
    drop.classList.toggle('region', task === 'region');
    if (task === 'region') state.region = parseBox(state.values.region);
    updatePrompt();
    drawCanvas();
  }
  for (const r of document.querySelectorAll('input[name=task]')) r.addEventListener('change', () => setTask(r.value));
  $('instruction').addEventListener('input', () => {
    state.values[state.task] = $('instruction').value;
    if (state.task === 'region') { state.region = parseBox($('instruction').value); drawCanvas(); }
    updatePrompt();
  });
  /* What would be sent, or why nothing can be. */
  function currentPrompt() {
    const v = $('instruction').value;
    if (state.task === 'region') {
      const b = parseBox(v);
      if (!b) return { why: 'drag a box on the image (or type [x1,y1,x2,y2], each 0..1)' };
      return { prompt: TASKS.region.prompt(boxText(b)), region: b };
    }
    if (!v.trim()) return { why: state.task === 'caption' ? 'type an instruction' : `type ${TASKS[state.task].label.toLowerCase()}` };
    return { prompt: TASKS[state.task].prompt(v) };
  }
  function updatePrompt() {
    const p = currentPrompt();
    $('prompt').textContent = p.prompt || '—';
    $('prompt').title = p.why || '';
    $('task-kind').textContent = TASKS[state.task].kind;
    $('ask').disabled = !!state.running || !state.image || !p.prompt;
    $('ask').title = !state.image ? 'choose an image first' : p.why || '';
  }

  /* ---- asking ------------------------------------------------------------------------------ */
  const box = $('answer-box');
  function clearAnswer() {
    box.dataset.state = 'idle';
    $('answer').textContent = '';
    $('error').hidden = true;
    for (const id of ['tags', 'boxes', 'timings', 'answer-meta']) $(id).innerHTML = '';
  }
  function showError(err) {
    box.dataset.state = 'error';
    const e = $('error');
    e.hidden = false;
    e.innerHTML = `${esc(err.message)}${err.status || err.code ? ` <span class="code">(${esc([err.status, err.code].filter(Boolean).join(' '))})</span>` : ''}`;
  }

  /* The stage timings as one stacked bar with a legend; vision near 0 ms on an image already
   * seen is the feature cache's hit. */
  function timingsBar(t, opt = {}) {
    const wrap = el('div');
    const parts = STAGES.filter((s) => typeof t[s] === 'number');
    const sum = parts.reduce((a, s) => a + t[s], 0) || 1;
    const bar = el('div', 'tbar');
    bar.title = parts.map((s) => `${s} ${fmtMs(t[s])}`).join(', ');
    for (const s of parts) {
      const seg = el('span', `s-${s}`);
      seg.style.width = `${(100 * t[s]) / sum}%`;
      bar.appendChild(seg);
    }
    wrap.appendChild(bar);
    if (opt.legend !== false) {
      const lg = el('div', 'tlegend');
      for (const s of parts) {
        const hit = opt.hits && opt.hits.includes(s);
        lg.appendChild(el('span', `t-${s}`, `<i class="s-${s}"></i>${s} <b>${fmtMs(t[s])}</b>${hit ? ` <span class="hit">${s === 'vision' ? 'feature ' : ''}cache hit</span>` : ''}`));
      }
      if (typeof t.total === 'number') lg.appendChild(el('span', 't-total', `total <b>${fmtMs(t.total)}</b>`));
      wrap.appendChild(lg);
    }
    return wrap;
  }
  /* A cached stage (vision: the feature cache; tagger: its RAM cache) answers an image it has
   * seen without computing: under a millisecond, or a small part of the slowest time seen for
   * this image (its miss; a loaded or sanitized build spends a few ms sending the tensors). */
  const CACHED = ['vision', 'tagger'];
  function cacheHit(entry, s) {
    /* an answer that says which stages its cache answered ("cache": {"vision": "hit"}) is believed */
    if (entry.cache && typeof entry.cache === 'object' && s in entry.cache) return entry.cache[s] === 'hit' || entry.cache[s] === true;
    const v = entry.timings && entry.timings[s];
    return typeof v === 'number' && v < Math.max(1, 0.3 * ((state.image && state.image.slowest[s]) || 0));
  }

  function showEntry(entry) {
    state.shown = entry;
    clearAnswer();
    box.dataset.state = entry.state;
    $('answer').textContent = entry.text || '';
    if (entry.error) showError(entry.error);
    $('tags').innerHTML = (entry.tags || []).map((t) => `<span class="tag">${esc(t)}</span>`).join('');
    const im = state.image;
    $('boxes').innerHTML = (entry.boxes || []).map((b, i) =>
      `<div data-box="${esc(JSON.stringify(b))}"><span class="swatch"></span>${entry.boxes.length > 1 ? `${i + 1}: ` : ''}` +
      `<code>${esc(boxText(b))}</code>${im ? ` <span class="muted">= pixels (${Math.round(b[0] * im.w)}, ${Math.round(b[1] * im.h)}) – (${Math.round(b[2] * im.w)}, ${Math.round(b[3] * im.h)})</span>` : ''}</div>`).join('');
    if (entry.timings) $('timings').appendChild(timingsBar(entry.timings, { hits: CACHED.filter((s) => cacheHit(entry, s)) }));
    const meta = [];
    if (entry.request_id) meta.push(`<a href="#watch" class="trace-link" data-id="${esc(entry.request_id)}">${esc(entry.request_id)}</a>`);
    if (entry.generated_tokens != null) meta.push(`${entry.generated_tokens} tokens`);
    if (entry.finish_reason) meta.push(`finish: ${esc(entry.finish_reason)}`);
    $('answer-meta').innerHTML = meta.join(' · ');
    for (const li of $('history').children) li.classList.toggle('sel', li.entry === entry);
    drawCanvas();
  }
  $('answer-meta').addEventListener('click', (e) => {
    const a = e.target.closest('.trace-link');
    if (!a) return;
    e.preventDefault();
    watch.want(a.dataset.id);
    showView('watch');
  });

  function renderHistory() {
    const ol = $('history');
    ol.innerHTML = '';
    $('history-head').hidden = state.history.length < 1;
    for (const h of state.history) {
      const li = el('li');
      li.entry = h;
      const ans = h.error ? `<div class="a err">${esc(h.error.message)}</div>` : `<div class="a">${esc(h.text || '…')}</div>`;
      li.innerHTML = `<div class="q">${esc(h.prompt)} <span class="pill">${esc(h.kind)}</span></div>${ans}`;
      if (h.timings) {
        const t = el('div', 't');
        t.appendChild(timingsBar(h.timings, { legend: false }));
        const v = h.timings.vision;
        t.appendChild(el('span', null, `${fmtMs(h.timings.total)} total${typeof v === 'number' ? `, vision ${fmtMs(v)}${cacheHit(h, 'vision') ? ' <span class="hit">(cache hit)</span>' : ''}` : ''}`));
        li.appendChild(t);
      }
      li.classList.toggle('sel', h === state.shown);
      li.addEventListener('click', () => { if (!state.running) showEntry(h); });
      ol.appendChild(li);
    }
  }

  /* Server-sent events from a fetch body: calls onEvent(name, data) per event. */
  async function readEvents(res, onEvent) {
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (data.length) onEvent(name, data.join('\n'));
      }
    }
  }

  async function ask() {
    const p = currentPrompt();
    if (!state.image || !p.prompt || state.running) return;
    const entry = { prompt: p.prompt, kind: TASKS[state.task].kind, task: state.task, region: p.region || null,
                    text: '', state: 'waiting' };
    const image = state.image;   /* the answer belongs to this image, even if another is dropped meanwhile */
    state.history.unshift(entry);
    renderHistory();
    showEntry(entry);
    const body = { image: state.image.b64, instruction: p.prompt, task: entry.kind, stream: true };
    if (!$('model-label').hidden && $('model').value) body.model = $('model').value;
    if ($('greedy').checked) body.num_beams = 1;
    const ctl = new AbortController();
    state.running = ctl;
    $('stop').hidden = false;
    updatePrompt();
    let finished = false;
    const fail = (err) => { entry.error = err; entry.state = 'error'; finished = true; };
    try {
      const res = await fetch('v1/generate', { method: 'POST', headers: headers(true), body: JSON.stringify(body), signal: ctl.signal });
      const type = res.headers.get('Content-Type') || '';
      if (!res.ok) fail(await apiError(res));
      else if (!type.startsWith('text/event-stream')) {
        /* a gateway that answers whole (no streaming): take the answer as it is */
        const j = await res.json();
        Object.assign(entry, { text: j.text, boxes: j.boxes, tags: j.tags, timings: j.timings_ms, cache: j.cache, request_id: j.request_id,
                               generated_tokens: j.generated_tokens, finish_reason: j.finish_reason, state: 'done' });
        finished = true;
      } else {
        keyNeeded(false);
        await readEvents(res, (name, data) => {
          let j;
          try { j = JSON.parse(data); } catch (e) { return; }
          if (name === 'text') {
            entry.text += j.text || '';
            entry.state = 'streaming';
            if (state.shown === entry) { $('answer').textContent = entry.text; box.dataset.state = 'streaming'; }
          } else if (name === 'done') {
            Object.assign(entry, { text: j.text, boxes: j.boxes || [], tags: j.tags || [], timings: j.timings_ms, cache: j.cache,
                                   request_id: j.request_id, generated_tokens: j.generated_tokens,
                                   finish_reason: j.finish_reason, state: 'done' });
            finished = true;
          } else if (name === 'error') {
            fail({ code: j.error?.code, message: j.error?.message || data });
          }
        });
        if (!finished) fail({ message: 'the gateway closed the stream before the answer (is it still running?)' });
      }
    } catch (e) {
      if (e.name === 'AbortError') fail({ message: 'stopped: the gateway cancels the request' });
      else fail({ message: `no answer from the gateway: ${e.message}` });
      refreshServer();
    }
    for (const s of CACHED) {
      const v = entry.state === 'done' && entry.timings && entry.timings[s];
      if (typeof v === 'number') image.slowest[s] = Math.max(image.slowest[s] || 0, v);
    }
    state.running = null;
    $('stop').hidden = true;
    updatePrompt();
    if (state.image !== image) return;
    renderHistory();
    if (state.shown === entry || !state.shown) showEntry(entry);
  }
  $('ask-form').addEventListener('submit', (e) => { e.preventDefault(); ask(); });
  $('stop').addEventListener('click', () => state.running && state.running.abort());

  /* ---- Watch: the pipeline, polled while this view is open ---------------------------------- */
  const watch = (() => {
    let timer = null, busy = false, data = null, selected = null, wanted = null, serverNow = 0;
    const rates = [];

    function start() {
      if (timer) return;
      poll();
      timer = setInterval(poll, POLL_MS);
    }
    function stop() { clearInterval(timer); timer = null; }
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) stop(); else if (!$('view-watch').hidden) start();
    });

    async function poll() {
      if (busy) return;
      busy = true;
      try {
        const res = await fetch('v1/pipeline', { headers: headers(false), cache: 'no-store' });
        if (!res.ok) {
          const err = await apiError(res);
          $('watch-status').innerHTML = `<span class="st-err">GET /v1/pipeline: ${esc(err.message)} (${esc(err.status)})</span>`;
        } else {
          data = await res.json();
          const d = Date.parse(res.headers.get('Date') || '');
          /* ages on the server's clock when this browser's differs (the Date header has 1 s steps) */
          serverNow = isFinite(d) && Math.abs(Date.now() - d) > 2000 ? d + 500 : Date.now();
          rates.push(data.requests?.per_second || 0);
          if (rates.length > 120) rates.shift();
          $('watch-status').textContent = `updated ${new Date().toLocaleTimeString()}`;
          render();
        }
      } catch (e) {
        $('watch-status').innerHTML = `<span class="st-err">the gateway does not answer: ${esc(e.message)}</span>`;
      } finally {
        busy = false;
      }
    }

    function render() {
      const r = data.requests || {};
      const up = data.uptime_s || 0;
      const upText = up < 120 ? `${up.toFixed(0)} s` : up < 7200 ? `${(up / 60).toFixed(0)} min` : `${(up / 3600).toFixed(1)} h`;
      $('totals').innerHTML = [
        [(data.models || []).length > 1 ? 'models' : 'model',
          esc((data.models || []).length > 1 ? data.models.map((m) => m.name).join(', ') : data.model || '–')],
        ['uptime', upText], ['in flight', r.in_flight ?? '–'],
        ['requests/s', r.per_second != null ? r.per_second.toFixed(2) : '–'], ['requests', r.total ?? '–'],
        ['cancelled', r.cancelled ?? '–'],
      ].map(([k, v]) => `<div><b>${v}</b><span>${k}</span></div>`).join('');
      spark();
      renderStages(data.stages || [], (data.models || []).length > 1);
      renderRecent(data.recent || []);
    }

    function spark() {
      const c = $('spark'), g = c.getContext('2d');
      const dpr = window.devicePixelRatio || 1;
      c.width = 240 * dpr; c.height = 36 * dpr;
      g.clearRect(0, 0, c.width, c.height);
      const max = Math.max(1, ...rates);
      g.strokeStyle = '#2457c5';
      g.lineWidth = 1.5 * dpr;
      g.beginPath();
      rates.forEach((v, i) => {
        const x = c.width - (rates.length - 1 - i) * (c.width / 119), y = c.height - 3 * dpr - (v / max) * (c.height - 8 * dpr);
        if (i) g.lineTo(x, y); else g.moveTo(x, y);
      });
      g.stroke();
      g.fillStyle = '#66707c';
      g.font = `${10 * dpr}px system-ui, sans-serif`;
      g.fillText(`req/s, 2 min (max ${max.toFixed(1)})`, 4 * dpr, 11 * dpr);
    }

    /* several models: each card names its model (a Pink model has a vision and an llm card) */
    function renderStages(stages, manyModels) {
      const host = $('stages');
      host.innerHTML = '';
      for (const s of stages) {
        const workers = s.workers || [];
        const card = el('div', `stage${workers.length ? '' : ' dead'}`);
        card.dataset.stage = s.name;
        if (s.model) card.dataset.model = s.model;
        card.dataset.workers = String(workers.length);
        card.style.setProperty('--c', STAGES.includes(s.name) ? `var(--${s.name})` : '#999');
        const looked = (s.cache_hits || 0) + (s.cache_misses || 0);
        const cache = looked ? `${pct(s.cache_hit_rate)} <span class="muted">(${s.cache_hits}/${looked})</span>` : '–';
        const busyF = Math.min(1, Math.max(0, s.busy_fraction || 0));
        card.innerHTML =
          `<h3>${manyModels && s.model ? `<span class="muted">${esc(s.model)}</span> ` : ''}${esc(s.name)} <small>${workers.length ? `${workers.length} worker${workers.length > 1 ? 's' : ''}` : '<span class="st-err">no live worker</span>'}</small></h3>` +
          `<div class="nums"><span>queue</span><b class="q">${s.queue ?? '–'}</b><span>in flight</span><b class="f">${s.in_flight ?? '–'}</b>` +
          `<span>jobs</span><b>${s.jobs_total ?? '–'}</b><span>cache hits</span><b>${cache}</b>` +
          `<span>busy</span><b>${pct(s.busy_fraction)}</b></div>` +
          `<div class="meter" title="busy fraction: the share of the last seconds its workers were working"><span style="width:${(busyF * 100).toFixed(1)}%"></span></div>`;
        const ul = el('ul', 'workers');
        for (const w of workers) {
          const stale = (w.last_seen_ms ?? 0) > 3000;
          const li = el('li', stale ? 'stale' : 'live');
          li.dataset.replica = w.replica;
          const wl = (w.cache_hits || 0) + (w.cache_misses || 0);
          li.title = `last heard ${fmtMs(w.last_seen_ms)} ago`;
          li.innerHTML = `<span><span class="dot"></span>${esc(w.replica)}</span>` +
            `<span class="muted">${w.outstanding ?? 0}/${w.capacity ?? '?'} jobs${wl ? ` · ${w.cache_hits}/${wl} hits` : ''}</span>`;
          ul.appendChild(li);
        }
        card.appendChild(ul);
        host.appendChild(card);
      }
    }

    function age(ms) {
      if (!ms) return '';
      const s = Math.max(0, (serverNow - ms) / 1000);
      return s < 60 ? `${s.toFixed(0)} s` : `${(s / 60).toFixed(0)} min`;
    }
    function hopTimings(rq) {
      const t = {};
      for (const h of rq.stages || []) if (typeof h.worker_ms === 'number') t[h.stage] = (t[h.stage] || 0) + h.worker_ms;
      return t;
    }
    /* Rows are rebuilt only when the list changes (a row under the pointer stays clickable);
     * otherwise only the ages move. */
    let shownIds = '', shownTrace = null;
    function renderRecent(recent) {
      $('recent-empty').hidden = recent.length > 0;
      const tb = $('recent');
      if (wanted && recent.some((x) => x.id === wanted)) { selected = wanted; wanted = null; }
      const ids = recent.map((x) => x.id).join(' ');
      if (ids !== shownIds) {
        shownIds = ids;
        tb.innerHTML = '';
        for (const rq of recent) {
          const tr = el('tr');
          tr.dataset.id = rq.id;
          tr.rq = rq;
          tr.innerHTML = `<td class="mono">${esc(rq.id)}</td><td>${esc(rq.route || '')}</td>` +
            `<td class="${rq.status >= 400 ? 'st-err' : ''}">${esc(rq.status ?? '')}</td><td></td>` +
            `<td class="num">${fmtMs(rq.total_ms)}</td><td class="num muted age"></td>`;
          tr.children[3].appendChild(timingsBar(hopTimings(rq), { legend: false }));
          tb.appendChild(tr);
        }
      }
      for (const tr of tb.children) {
        tr.classList.toggle('sel', tr.dataset.id === selected);
        tr.querySelector('.age').textContent = age(tr.rq.finished_unix_ms);
      }
      const rq = recent.find((x) => x.id === selected);
      if (rq) { if (shownTrace !== rq.id) renderTrace(rq); }
      else if (wanted) {
        shownTrace = null;
        $('trace').innerHTML = `<p class="muted small">${esc(wanted)} is not among the recent requests: ` +
          'they are recorded only while someone watches (it may have run before this view was open).</p>';
      } else if (!selected) { shownTrace = null; $('trace').innerHTML = '<p class="muted small">Click a request to see its trace.</p>'; }
    }
    $('recent').addEventListener('click', (e) => {
      const tr = e.target.closest('tr');
      if (!tr || !tr.rq) return;
      selected = tr.dataset.id;
      wanted = null;
      for (const r of $('recent').children) r.classList.toggle('sel', r === tr);
      renderTrace(tr.rq);
    });

    function renderTrace(rq) {
      shownTrace = rq.id;
      const t = $('trace');
      const known = new Set(['stage', 'replica', 'worker_ms', 'tensors']);
      let html = `<h3>${esc(rq.id)}</h3><div class="muted">${esc(rq.route || '')} · status ${esc(rq.status ?? '')} · ` +
        `total ${fmtMs(rq.total_ms)}${rq.finished_unix_ms ? ` · finished ${esc(new Date(rq.finished_unix_ms).toLocaleTimeString())}` : ''}</div>`;
      t.innerHTML = html;
      t.appendChild(timingsBar(hopTimings(rq)));
      for (const h of rq.stages || []) {
        const hop = el('div', 'hop');
        hop.dataset.stage = h.stage;
        hop.style.setProperty('--c', STAGES.includes(h.stage) ? `var(--${h.stage})` : '#999');
        const extra = Object.keys(h).filter((k) => !known.has(k) && (typeof h[k] === 'number' || typeof h[k] === 'string'))
          .map((k) => `${esc(k)} ${esc(typeof h[k] === 'number' && /_ms$/.test(k) ? fmtMs(h[k]) : h[k])}`).join(' · ');
        html = `<div class="hop-head"><b>${esc(h.stage)}</b><span class="mono">${esc(h.replica || '')}</span><span>${fmtMs(h.worker_ms)}</span></div>`;
        if (extra) html += `<div class="muted">${extra}</div>`;
        if ((h.tensors || []).length) {
          html += '<table>' + h.tensors.map((x) => `<tr class="tensor"><td class="mono">${esc(x.name)}</td><td class="muted">${esc(x.dtype || '')}</td>` +
            `<td class="mono">[${esc((x.shape || []).join(', '))}]</td></tr>`).join('') + '</table>';
        }
        hop.innerHTML = html;
        t.appendChild(hop);
      }
    }

    return { start, stop, want: (id) => { wanted = id; selected = null; } };
  })();

  /* ---- start ------------------------------------------------------------------------------- */
  $('instruction').value = state.values.caption;
  setTask('caption');
  showView(location.hash === '#watch' ? 'watch' : 'ask');
  refreshServer();
  setInterval(() => { if (!document.hidden) refreshServer(); }, 30000);
})();
