// unnoise lab: what every part of the page shares (no build step: plain ES modules).

export const $ = (id) => document.getElementById(id);

export const state = {
  schedules: new Map(), // name → {ab: Float64Array, crossing, ztsnr}
  schedule: "linear", compare: new Set(["linear", "cosine"]), view: "shares",
  t: 0, image: "cat", seed: 0,
  x0: null, eps: null, width: 0, height: 0, // Float64Array x0 in [−1, 1], Float32Array ε, both (H, W, 3)
  playing: false, composeMs: 0,
};
window.lab = state; // for the browser tests and the curious

// --- talking to the lab: every request of the page goes through `api` -------------------------------
// Served (`unnoise lab`): fetch JSON and read the server's event streams.  Static (an exported site, whose
// index.html carries <meta name="unnoise-site" content="site.json">): local.js answers the very same paths in
// the page, with the same JSON and the same events, so the parts never know which lab they talk to.  (No probe
// request decides it: in served mode a 404 would be a console error.)
let local = null; // the static site's answerer, or null while a server answers
export const api = {
  get mode() { return local ? "static" : "served"; },

  /** Chooses the mode once, before the first request. */
  async init() {
    const site = document.querySelector('meta[name="unnoise-site"]')?.content;
    if (!site) return;
    const { LocalLab } = await import("./local.js");
    local = await LocalLab.open(new URL(site, document.baseURI));
  },

  /** The JSON answer of `path` (an /api/… path with its query), or an Error in the page's own words. */
  async json(path, options = {}) {
    if (local) return local.json(path, options);
    const r = await fetch(path, options);
    if (!r.ok) throw new Error(await errorText(r));
    return r.json();
  },

  /** The events of a streamed run, [name, data] each (start, step…, done or error); aborting `signal` stops it. */
  async* stream(path, { signal } = {}) {
    if (local) { yield* local.stream(path, { signal }); return; }
    const response = await fetch(path, { signal });
    if (!response.ok) throw new Error(await errorText(response));
    yield* events(response);
  },
};

export async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.detail && body.detail.length) return friendly(body.detail[0]);
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

// --- a refused request in the page's own words -------------------------------------------------
// A 422 from the request's checks carries detail [{loc, msg}] in the validator's wording ("List should have
// at most 6 items after validation"); the page says it as a person would ("Pick at most 6 guidance values").
const FIELDS = { // query name → [what one is called, what several are called]
  scale: ["guidance value", "guidance values"], strength: ["strength", "strengths"], spacing: ["spacing", "spacings"],
  steps: ["steps"], guidance: ["guidance"], seed: ["the seed"], prompt: ["the prompt"], model: ["the model"],
  sampler: ["the sampler"], schedule: ["the schedule"], image: ["the picture"], num_images: ["the number of images"],
};
const ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth"];
const upper = (text) => text.charAt(0).toUpperCase() + text.slice(1);

/** @param {{loc: string[], msg: string}} detail one entry of a 422's detail list @returns {string} */
export function friendly({ loc = [], msg = "" }) {
  const path = loc.filter((p) => !["query", "path", "body"].includes(p));
  const [one, many = one] = FIELDS[path[0]] || [path[0] || "the request"];
  let m;
  if ((m = msg.match(/^List should have at most (\d+) items?/))) return `Pick at most ${m[1]} ${+m[1] === 1 ? one : many}.`;
  if ((m = msg.match(/^List should have at least (\d+) items?/))) return `Pick at least ${m[1]} ${+m[1] === 1 ? one : many}.`;
  const item = path.length > 1 && /^\d+$/.test(path[1]) ? `the ${ORDINALS[+path[1]] ?? `${+path[1] + 1}th`} ${one}` : one;
  const rules = [
    [/^Input should be greater than or equal to (\S+)/, (n) => `must be at least ${n}`],
    [/^Input should be less than or equal to (\S+)/, (n) => `can be at most ${n}`],
    [/^Input should be greater than (\S+)/, (n) => `must be more than ${n}`],
    [/^Input should be less than (\S+)/, (n) => `must be less than ${n}`],
    [/^Input should be a valid integer/, () => "must be a whole number"],
    [/^Input should be a valid number/, () => "must be a number"],
    [/^String should have at most (\d+) characters?/, (n) => `can be at most ${n} characters long`],
    [/^String should match pattern/, () => "is not one this lab knows: pick it again"],
    [/^Input should be (.+)$/, (list) => `must be one of ${list.replaceAll("'", "")}`],
    [/^Field required/, () => "is missing"],
  ];
  for (const [pattern, say] of rules) {
    if ((m = msg.match(pattern))) return `${upper(item)} ${say(m[1])}.`;
  }
  return `${upper(item)}: ${msg}`;
}

// --- a part at work: a progress bar and a Stop button; its run buttons off until it ends ---------
export class Work {
  /** @param {string} prefix the part's id prefix ({prefix}-error marks where the bar goes) @param {string[]} buttons */
  constructor(prefix, buttons) {
    Object.assign(this, { p: prefix, buttons, controllers: [], counts: [] });
    const box = document.createElement("div");
    box.className = "working"; box.id = `${prefix}-working`; box.hidden = true; box.setAttribute("role", "status");
    box.innerHTML = `<span class="spinner" aria-hidden="true"></span><div class="progress" id="${prefix}-progress">`
      + `<i></i></div><span class="mono working-text"></span><button type="button" class="stop" id="${prefix}-stop">■ Stop</button>`;
    const controls = $(`${prefix}-controls`); // right under the part's controls, else above its error line
    if (controls) controls.after(box); else $(`${prefix}-error`).before(box);
    Object.assign(this, { box, bar: box.querySelector(".progress"), text: box.querySelector(".working-text") });
    $(`${prefix}-stop`).addEventListener("click", () => { for (const c of this.controllers) c.abort(); });
  }

  get busy() { return this.controllers.length > 0; }

  /** Runs tasks side by side, each `(signal, progress(done, total)) => Promise`, until all end or Stop. */
  async run(...tasks) {
    if (this.busy) return;
    this.controllers = tasks.map(() => new AbortController());
    this.counts = tasks.map(() => [0, 0]);
    this.show(true);
    try {
      await Promise.all(tasks.map((task, k) => task(this.controllers[k].signal, (done, total) => this.progress(k, done, total))));
    } finally {
      this.controllers = [];
      this.show(false);
    }
  }

  progress(k, done, total) {
    this.counts[k] = [done, total];
    const [d, t] = this.counts.reduce(([a, b], [c, e]) => [a + c, b + e], [0, 0]);
    const known = this.counts.every(([, e]) => e > 0);
    this.bar.classList.toggle("indeterminate", !known);
    this.bar.firstChild.style.width = known ? `${(100 * Math.min(d, t)) / t}%` : "";
    this.text.textContent = known ? `${Math.min(d, t)} of ${t} steps` : (api.mode === "static" ? "working…" : "working… (waiting for the server)");
  }

  show(on) {
    this.box.hidden = !on;
    $(`${this.p}-error`).closest("section").setAttribute("aria-busy", String(on));
    for (const id of this.buttons) $(id).disabled = on;
    if (on) for (let k = 0; k < this.counts.length; k++) this.progress(k, 0, 0);
  }
}

export function bytes(b64) {
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function showError(id, message) {
  const el = $(id);
  el.textContent = message || "";
  el.hidden = !message;
}

// --- streamed runs: the replay and the learned reverse share one player ------------------------
// Reads a server's text/event-stream from fetch (not EventSource: we need the JSON of a 4xx, and
// aborting the fetch is how the page tells the server to stop).
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield [name, data ? JSON.parse(data) : {}];
    }
  }
}

// The painting controls of parts 3, 5, 6 and 7 are written once, here: index.html marks each row with
// data-controls="PREFIX", data-fields (which of FIELDS, in order), data-run (the button's words) and, where they
// differ from the defaults, data-steps, data-steps-max and data-placeholder; what else the row holds stays after.
const FIELDS_HTML = {
  prompt: (p, d) => `<label class="grow">prompt <input id="${p}-prompt" type="text" maxlength="300" `
    + `placeholder="${d.placeholder || "a smiling cat"}"></label>`,
  model: (p) => `<label>model <select id="${p}-model" class="model-select"></select></label>`,
  sampler: (p) => `<label>sampler <select id="${p}-sampler" class="sampler-select"></select></label>`,
  steps: (p, d) => `<label>steps <input id="${p}-steps" type="number" min="1" max="${d.stepsMax || 1000}" value="${d.steps || 20}"></label>`,
  guidance: (p) => `<label>guidance <input id="${p}-guidance" type="number" min="0" max="30" step="0.5" value="5"></label>`,
  seed: (p) => `<label>seed <input id="${p}-seed" type="number" min="0" value="0"></label>`,
};
for (const row of document.querySelectorAll("[data-controls]")) {
  const p = row.dataset.controls, d = row.dataset;
  row.insertAdjacentHTML("afterbegin", d.fields.split(" ").map((f) => FIELDS_HTML[f](p, d)).join("")
    + `<button id="${p}-run" class="primary" type="button">${d.run}</button>`);
}

// A player's controls are written once, here: index.html only marks where each goes
// (<div class="row" data-player="PREFIX" [data-label="what the scrub bar moves through"]>).
for (const row of document.querySelectorAll("[data-player]")) {
  const p = row.dataset.player, label = row.dataset.label || "scrub through the steps";
  row.innerHTML = `<button id="${p}-play" type="button" disabled>▶ Play</button>`
    + `<input id="${p}-scrub" type="range" min="0" max="0" value="0" disabled aria-label="${label}">`
    + `<output id="${p}-readout" class="mono">not run yet</output>`;
}

export class Player {
  // Buffers a run's steps; plays, pauses and scrubs over the ones that have arrived.  Scrubbing also
  // moves the players in `linked` (part 4's two sides pass the same noise levels, step for step).
  constructor(prefix) {
    this.p = prefix; this.frames = []; this.shown = -1; this.playing = true; this.timer = null;
    this.total = 0; this.finished = false; this.linked = [];
    $(`${prefix}-play`).addEventListener("click", () => this.setPlaying(!this.playing));
    for (const part of ["xt", "eps", "x0"]) crisp($(`${prefix}-${part}`));
    $(`${prefix}-scrub`).addEventListener("input", (e) => {
      for (const p of [this, ...this.linked]) { p.setPlaying(false); p.show(Math.min(+e.target.value, p.frames.length - 1)); }
    });
  }

  // Streams url until it ends or `signal` aborts; progress(done, total) after every event.
  async run(url, { onStart = null, signal = undefined, progress = () => {} } = {}) {
    Object.assign(this, { frames: [], shown: -1, total: 0, finished: false, stopped: false });
    showError(`${this.p}-error`, "");
    $(`${this.p}-readout`).textContent = "starting…";
    this.setPlaying(true);
    try {
      for await (const [name, data] of api.stream(url, { signal })) {
        if (name === "start") { this.total = data.steps; if (onStart) onStart(data); }
        else if (name === "step") this.add(data);
        else if (name === "error") throw new Error(data.error);
        else if (name === "done") { this.add({ final: true, x_t: data.image, eps: null, x0: data.image }); this.finished = true; this.readout(); }
        progress(Math.min(this.frames.length, this.total), this.total);
      }
    } catch (e) {
      this.stopped = true;
      this.setPlaying(false); // the steps that arrived stay to scrub; the readout says why it ended
      $(`${this.p}-readout`).textContent = e.name === "AbortError" ? "stopped: you pressed Stop" : "stopped";
      if (e.name !== "AbortError") showError(`${this.p}-error`, e.message);
    }
  }

  add(step) {
    const prev = this.frames[this.frames.length - 1];
    if (step.total) this.total = step.total; // image to image runs fewer steps than it was asked for
    step.eps = step.eps ?? prev?.eps; // null = unchanged since the previous step
    step.x0 = step.x0 ?? prev?.x0;
    this.frames.push(step);
    const scrub = $(`${this.p}-scrub`);
    scrub.max = this.frames.length - 1; scrub.disabled = false;
    $(`${this.p}-play`).disabled = false;
    if (!this.timer && this.playing && this.shown < this.frames.length - 1) this.schedule();
  }

  schedule() { this.timer = setTimeout(() => { this.timer = null; this.advance(); }, 80); }

  advance() {
    if (!this.playing || this.shown >= this.frames.length - 1) return;
    this.show(this.shown + 1);
    if (this.shown < this.frames.length - 1) this.schedule();
    else if (this.finished) this.setPlaying(false);
  }

  show(k) {
    const f = this.frames[k];
    if (!f) return;
    this.shown = k;
    $(`${this.p}-xt`).src = f.x_t; $(`${this.p}-eps`).src = f.eps; $(`${this.p}-x0`).src = f.x0;
    $(`${this.p}-scrub`).value = k;
    this.readout();
  }

  readout() {
    const f = this.frames[this.shown];
    if (!f) return;
    const more = this.finished ? "" : this.stopped ? " (stopped)" : ` (${this.frames.length}/${this.total} in)`;
    $(`${this.p}-readout`).textContent = f.final
      ? `the finished picture, after ${this.total} steps`
      : `step ${f.index + 1}/${f.total} · t = ${Math.round(f.t)} · signal ${f.signal.toFixed(3)}${more}`;
  }

  setPlaying(on) {
    this.playing = on;
    $(`${this.p}-play`).textContent = on ? "❚❚ Pause" : "▶ Play";
    if (on && this.finished && this.shown >= this.frames.length - 1) this.shown = -1; // replay from the start
    if (on && !this.timer) this.schedule();
  }
}

// Small pictures (a model's 32 × 32) shown large: crisp pixels, not blur; the tile takes the picture's shape.
export function crisp(img) {
  img.addEventListener("load", () => {
    img.classList.toggle("pixelated", img.naturalWidth < img.clientWidth);
    img.parentElement.style.aspectRatio = `${img.naturalWidth} / ${img.naturalHeight}`;
  });
}

// The request of a part from its controls ({prefix}-{name}); an empty model means "the server's default".
export function query(prefix, names, extra = {}) {
  const q = new URLSearchParams();
  for (const name of names) {
    const value = $(`${prefix}-${name}`).value;
    if (!(name === "model" && value === "")) q.append(name, value);
  }
  for (const [name, values] of Object.entries(extra)) for (const v of [].concat(values)) q.append(name, v);
  return q;
}
