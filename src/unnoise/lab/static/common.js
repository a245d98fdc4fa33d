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

// --- talking to the server ---------------------------------------------------------------------
export async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

export async function getJSON(path, options) {
  const r = await fetch(path, options);
  if (!r.ok) throw new Error(await errorText(r));
  return r.json();
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
// Reads a text/event-stream from fetch (not EventSource: we need the JSON of a 4xx, and
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

export class Player {
  // Buffers a run's steps; plays, pauses and scrubs over the ones that have arrived.
  // `mirror` names a second set of images ({mirror}-xt, -eps, -x0) that shows the same frame.
  constructor(prefix, mirror = null) {
    this.p = prefix; this.mirror = mirror; this.frames = []; this.shown = -1; this.playing = true; this.timer = null;
    this.controller = null; this.total = 0; this.finished = false;
    $(`${prefix}-play`).addEventListener("click", () => this.setPlaying(!this.playing));
    for (const p of mirror ? [prefix, mirror] : [prefix]) {
      for (const part of ["xt", "eps", "x0"]) {
        const img = $(`${p}-${part}`);
        img.addEventListener("load", () => img.classList.toggle("pixelated", img.naturalWidth < img.clientWidth));
      }
    }
    $(`${prefix}-scrub`).addEventListener("input", (e) => { this.setPlaying(false); this.show(+e.target.value); });
  }

  async run(url, onStart = null) {
    if (this.controller) this.controller.abort();
    const controller = (this.controller = new AbortController());
    Object.assign(this, { frames: [], shown: -1, total: 0, finished: false });
    showError(`${this.p}-error`, "");
    $(`${this.p}-readout`).textContent = "starting…";
    this.setPlaying(true);
    try {
      const response = await fetch(url, { signal: controller.signal });
      if (!response.ok) throw new Error(await errorText(response));
      for await (const [name, data] of events(response)) {
        if (name === "start") { this.total = data.steps; if (onStart) onStart(data); }
        else if (name === "step") this.add(data);
        else if (name === "error") throw new Error(data.error);
        else if (name === "done") { this.add({ final: true, x_t: data.image, eps: null, x0: data.image }); this.finished = true; this.readout(); }
      }
    } catch (e) {
      if (e.name !== "AbortError") { showError(`${this.p}-error`, e.message); $(`${this.p}-readout`).textContent = "stopped"; }
    } finally {
      if (this.controller === controller) this.controller = null;
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
    for (const p of this.mirror ? [this.p, this.mirror] : [this.p]) {
      $(`${p}-xt`).src = f.x_t; $(`${p}-eps`).src = f.eps; $(`${p}-x0`).src = f.x0;
    }
    $(`${this.p}-scrub`).value = k;
    this.readout();
  }

  readout() {
    const f = this.frames[this.shown];
    if (!f) return;
    const more = this.finished ? "" : ` (${this.frames.length}/${this.total} in)`;
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
