// The in-page runtime of the static lab (`unnoise lab --export DIR`): the real networks in the browser.
//
// ONNX Runtime Web (WebAssembly, vendor/ort/) runs the exported text encoder and UNets; the pure engine
// (engine/: WordPiece, generation.generate with its schedules, torch-compatible draws, guidance and samplers,
// images.toRGBA) does the rest,
// exactly as the Python Painter does: snap the prompt to the model's vocabulary, encode it and the empty prompt,
// guide (classifier-free, or the student's w input), sample from the seed's noise, clamp x̂0 to [-1, 1], and
// turn the picture into bytes as images.to_pil does.
//
//   loadSite(baseUrl)            → the site (site.json, lazily created ORT sessions per model)
//   paintSteps(request, {signal}) → async generator: {kind:"start"}, {kind:"step", …} per step, {kind:"done", …}
//   window.unnoise = {ready, paint(request)}: the page's contract (README, "The lab without a server")

import * as ort from "./vendor/ort/ort.wasm.min.mjs";
import { WordPiece } from "./engine/wordpiece.js";
import { sigmaToT } from "./engine/schedules.js";
import { generate, img2imgStart } from "./engine/generation.js";
import { toRGBA } from "./engine/images.js";
import { SAMPLERS } from "./engine/samplers.js";
import { nextTask } from "./engine/tasks.js";

const VENDOR = new URL("./vendor/ort/", import.meta.url);
const DIM = 384; // MiniLM's hidden size: token states (B, L, 384), pooled (B, 384)

/** A clear, one-line error for input the page was given (what the Python side calls a PaintError). */
export class PaintError extends Error {
  constructor(message) { super(message); this.name = "PaintError"; }
}

async function fetchPart(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** The bytes of a file, or of a list of parts (the exporter cuts big files), fetched in parallel and joined; gzip
 *  is inflated here unless the host already did (some answer .gz with Content-Encoding: gzip): the magic decides. */
async function fetchBytes(urls) {
  const parts = await Promise.all([urls].flat().map(fetchPart));
  let bytes = parts[0];
  if (parts.length > 1) {
    bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (bytes.set(p, at), at + p.length), 0);
  }
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
  const inflated = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(inflated).arrayBuffer());
}

async function fetchJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

let runtimeReady = null;
/** ORT's WebAssembly runtime, once: threads only where the page is cross-origin isolated (SharedArrayBuffer). */
function ortRuntime() {
  runtimeReady ??= (async () => {
    ort.env.wasm.wasmPaths = VENDOR.href;
    ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? (navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.wasmBinary = await fetchBytes(new URL("ort-wasm-simd-threaded.wasm.gz", VENDOR));
    return ort;
  })();
  return runtimeReady;
}

async function session(url) {
  const bytes = fetchBytes(url); // downloads and inflates while the runtime compiles
  bytes.catch(() => {}); // its failure is thrown below, once awaited (not also as an unhandled rejection)
  await ortRuntime();
  return ort.InferenceSession.create(await bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
}

/** One exported site: site.json, the text encoder, and each model's card, UNet and vocabulary on first use. */
export class Site {
  constructor(base, site) {
    this.base = base;
    this.site = site;
    this.limits = site.limits;
    this.samplers = site.samplers.filter((name) => name in SAMPLERS);
    this.models = {}; // name → Promise of {card, session, vocabulary}
  }

  url(path) { return new URL(path, this.base); }

  urls(paths) { return [paths].flat().map((p) => this.url(p)); }

  /** The text encoder session and the WordPiece tokenizer (shared by every model). */
  text() {
    this.textReady ??= Promise.all([
      session(this.urls(this.site.text_encoder.file)),
      fetch(this.url(this.site.text_encoder.vocab)).then((r) => r.text()).then((t) => new WordPiece(t)),
    ]).then(([encoder, tokenizer]) => ({ encoder, tokenizer }));
    return this.textReady;
  }

  /** A model: its card (model.json), UNet session and snapping vocabulary, loaded once. */
  model(name) {
    if (!(name in this.site.models)) {
      throw new PaintError(`unknown model ${JSON.stringify(name)}; choose from ${Object.keys(this.site.models).join(", ")}`);
    }
    this.models[name] ??= (async () => {
      const card = await fetchJSON(this.url(this.site.models[name].card));
      const [unet, vocabulary] = await Promise.all([
        session(this.urls(card.unet)),
        card.vocabulary ? loadVocabulary(this, card.vocabulary) : null,
      ]);
      card.alphas = Float64Array.from(card.alphas_cumprod);
      return { card, unet, vocabulary };
    })();
    return this.models[name];
  }

  /** {tokens (B·L·384), mask (B·L, 0/1), pooled (B·384), length L} of prompts, as TextEncoder.encode. */
  async encode(prompts) {
    const { encoder, tokenizer } = await this.text();
    const { ids, mask, length } = tokenizer.encode(prompts, this.site.text_encoder.max_length);
    const B = prompts.length;
    const out = await encoder.run({
      input_ids: new ort.Tensor("int64", ids, [B, length]),
      mask: new ort.Tensor("bool", Uint8Array.from(mask), [B, length]),
    });
    return { tokens: out.tokens.data, mask: Uint8Array.from(mask), pooled: out.pooled.data, length };
  }
}

/** A model's snapping vocabulary: captions and known prompts now; the vectors (3.4 MB for emoji) on the first
 *  prompt that needs them, `await vocabulary.load()` (a known prompt is never snapped: it needs none). */
async function loadVocabulary(site, path) {
  const index = await fetchJSON(site.url(path));
  const vocabulary = { ...index, vectors: null, known: new Set(index.known) };
  let loading = null;
  vocabulary.load = () => (loading ??= fetchBytes(site.urls(index.vectors)).then((bytes) => {
    const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, index.count * index.dim);
    vocabulary.vectors = new Float32Array(halves.length);
    for (let i = 0; i < halves.length; i++) vocabulary.vectors[i] = halfToFloat(halves[i]);
  }));
  return vocabulary;
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

/** The key a prompt is known by (vocabulary._key: lower-cased, whitespace runs collapsed). */
const promptKey = (text) => text.toLowerCase().split(/\s+/).filter(Boolean).join(" ");

/** Vocabulary.split: [head, suffix] for a prompt ending in one of the vocabulary's suffixes (style tags, compared
 *  as keys) with something before it, else [prompt, ""]. */
export function splitPrompt(vocabulary, prompt) {
  const key = promptKey(prompt);
  for (const suffix of vocabulary.suffixes ?? []) {
    const tail = promptKey(suffix);
    const head = key.endsWith(tail) ? key.slice(0, key.length - tail.length).trim() : "";
    if (head) return [head, suffix];
  }
  return [prompt, ""];
}

/** Vocabulary.snap for one prompt, given the pooled vector of its head (splitPrompt): the nearest caption by
 *  cosine, the prompt's suffix appended, if it reaches the threshold and neither the prompt nor its head is empty
 *  or known to the model; {caption: null} paints the prompt as typed. */
export function snapPrompt(vocabulary, prompt, pooled) {
  let norm = 0;
  for (let d = 0; d < pooled.length; d++) norm += pooled[d] * pooled[d];
  norm = Math.max(Math.sqrt(norm), 1e-12);
  let best = -Infinity, index = 0;
  for (let v = 0; v < vocabulary.count; v++) {
    let dot = 0;
    const row = v * vocabulary.dim;
    for (let d = 0; d < vocabulary.dim; d++) dot += vocabulary.vectors[row + d] * pooled[d];
    if (dot > best) { best = dot; index = v; }
  }
  best /= norm;
  if (!prompt.trim()) return { caption: null, similarity: 0 };
  const [head, suffix] = splitPrompt(vocabulary, prompt);
  const caption = vocabulary.captions[index] + suffix;
  if (vocabulary.known.has(promptKey(prompt)) || vocabulary.known.has(promptKey(head)) || best < vocabulary.threshold) {
    return { caption: null, similarity: best };
  }
  return { caption, similarity: best };
}

const sites = new Map(); // base URL → Promise of its Site
/** The site at baseUrl (default: the page's folder), loaded once. */
export function loadSite(baseUrl = document.baseURI) {
  const base = new URL(".", new URL(baseUrl, document.baseURI));
  if (!sites.has(base.href)) sites.set(base.href, fetchJSON(new URL("site.json", base)).then((site) => new Site(base, site)));
  return sites.get(base.href);
}

/** The request with the model's defaults filled in and every value checked (PaintError, one line, if not). */
export function checkRequest(site, request, card) {
  if (request === null || typeof request !== "object") throw new PaintError("paint needs an object such as {prompt: \"cat face\"}");
  const { limits } = site;
  const defaults = card.defaults;
  const r = { ...request };
  if (typeof r.prompt !== "string") throw new PaintError(`prompt must be a string, got ${typeof r.prompt}`);
  if (!r.prompt.trim()) throw new PaintError("prompt is empty: type what to paint, e.g. \"cat face\"");
  if (r.prompt.length > limits.max_prompt_chars) {
    throw new PaintError(`prompt is too long: ${r.prompt.length} characters, at most ${limits.max_prompt_chars}`);
  }
  r.sampler ??= defaults.sampler;
  if (!site.samplers.includes(r.sampler)) {
    throw new PaintError(`unknown sampler ${JSON.stringify(r.sampler)}; choose from ${site.samplers.join(", ")}`);
  }
  r.steps ??= defaults.steps;
  if (!Number.isInteger(r.steps) || r.steps < 1 || r.steps > limits.max_steps) {
    throw new PaintError(`steps must be an integer from 1 to ${limits.max_steps}, got ${r.steps}`);
  }
  r.guidance ??= defaults.guidance; // a number, or one per image (the lab's guidance dial: one batch)
  for (const w of [].concat(r.guidance)) {
    if (typeof w !== "number" || !Number.isFinite(w) || w < 0 || w > limits.max_guidance) {
      throw new PaintError(`guidance must be a finite number from 0 to ${limits.max_guidance}, got ${w}`);
    }
  }
  r.seed ??= crypto.getRandomValues(new Uint32Array(1))[0] & 0x7fffffff;
  if (!Number.isInteger(r.seed) || r.seed < 0 || r.seed > limits.max_seed) {
    throw new PaintError(`seed must be an integer from 0 to ${limits.max_seed}, got ${r.seed}`);
  }
  r.spacing ??= defaults.spacing;
  r.snap = r.snap === undefined ? Boolean(card.vocabulary) : Boolean(r.snap);
  r.numImages ??= Array.isArray(r.guidance) ? r.guidance.length : 1;
  const most = Array.isArray(r.guidance) ? 6 : limits.max_images; // the lab's dial: up to 6 scales (LabConfig.max_tiles)
  if (!Number.isInteger(r.numImages) || r.numImages < 1 || r.numImages > most) {
    throw new PaintError(`numImages must be an integer from 1 to ${most}, got ${r.numImages}`);
  }
  if (Array.isArray(r.guidance) && r.guidance.length !== r.numImages) {
    throw new PaintError(`guidance must be one number or one per image (${r.numImages}), got ${r.guidance.length}`);
  }
  const size = card.shape[0] * card.shape[1] * card.shape[2];
  for (const [name, want] of [["noise", size * r.numImages], ["init", size]]) {
    if (r[name] == null) continue;
    if (typeof r[name].length !== "number" || r[name].length !== want) {
      throw new PaintError(`${name} must be ${want} numbers (${r.numImages > 1 && name === "noise" ? "numImages·" : ""}C·H·W = ${card.shape.join("·")}), got ${r[name].length ?? typeof r[name]}`);
    }
    r[name] = Float32Array.from(r[name]);
    if (!r[name].every(Number.isFinite)) throw new PaintError(`${name} must be finite numbers (it holds NaN or infinity)`);
  }
  r.strength ??= limits.default_strength;
  if (r.init && !(typeof r.strength === "number" && r.strength > 0 && r.strength <= 1)) {
    throw new PaintError(`strength must be in (0, 1], got ${r.strength}`);
  }
  return r;
}

/** Row `row` of the encoded prompts as a condition of batch 1 ({data, dims} tensors; guidance.js broadcasts it). */
function conditionRow(text, row) {
  const L = text.length;
  return {
    tokens: { data: text.tokens.slice(row * L * DIM, (row + 1) * L * DIM), dims: [1, L, DIM] },
    mask: { data: text.mask.slice(row * L, (row + 1) * L), dims: [1, L] },
    pooled: { data: text.pooled.slice(row * DIM, (row + 1) * DIM), dims: [1, DIM] },
  };
}

/** The UNet as generate()'s network (xt, t, cond) → output: guidance.js's conditions as ORT feeds, each call counted. */
function unetNetwork({ card, unet }, counter) {
  const [C, H, W] = card.shape;
  return async (xt, t, cond) => {
    counter.calls += 1;
    const rows = t.length;
    const feeds = {
      x: new ort.Tensor("float32", xt, [rows, C, H, W]),
      t: new ort.Tensor("float32", t, [rows]),
      tokens: new ort.Tensor("float32", Float32Array.from(cond.tokens.data), cond.tokens.dims),
      mask: new ort.Tensor("bool", Uint8Array.from(cond.mask.data), cond.mask.dims),
      pooled: new ort.Tensor("float32", Float32Array.from(cond.pooled.data), cond.pooled.dims),
    };
    if (card.takes_guidance) feeds.guidance = new ort.Tensor("float32", Float32Array.from(cond.guidance.data), cond.guidance.dims);
    const out = await unet.run(feeds);
    return out.out.data;
  };
}

/** Paint, step by step.  Yields {kind:"start", …}, then per step {kind:"step", index, total, t, sigma, signal,
 *  x_t, eps, x0} (Float32Array, image 0, (C, H, W)), then {kind:"done", image (x0 of the batch), rgba, width,
 *  height, ms, calls, conditionedOn}. */
export async function* paintSteps(request, { signal } = {}) {
  const started = performance.now();
  const site = await loadSite();
  const name = request?.model ?? site.site.default_model;
  const model = await site.model(name);
  const { card } = model;
  const r = checkRequest(site, request, card);
  const [C, H, W] = card.shape, size = C * H * W, B = r.numImages;
  let text = await site.encode([r.prompt, ""]);
  let conditionedOn = null, similarity = null;
  if (r.snap && model.vocabulary && !model.vocabulary.known.has(promptKey(r.prompt))) {
    await model.vocabulary.load();
    const [head] = splitPrompt(model.vocabulary, r.prompt); // a style-tagged prompt is snapped by its head
    const query = head === r.prompt ? text : await site.encode([head]);
    const snapped = snapPrompt(model.vocabulary, r.prompt, query.pooled.subarray(0, DIM));
    ({ similarity } = snapped);
    if (snapped.caption !== null) {
      conditionedOn = snapped.caption;
      text = await site.encode([conditionedOn, ""]);
    }
  }
  // image k from seed + k, as the Painter; `sameSeed` (the guidance dial): every row from the one seed, as the served dial
  const seeds = Array.from({ length: B }, (_, k) => (r.sameSeed ? r.seed : r.seed + k));
  const start = r.init // SDEdit (Painter._img2img_start): the last round(steps·strength) steps from the noised picture
    ? img2imgStart({ alphasCumprod: card.alphas, steps: r.steps, spacing: r.spacing, strength: r.strength, x0: r.init, seeds, noise: r.noise ?? null })
    : { xInit: null, sigmas: null };
  const total = start.sigmas ? start.sigmas.length - 1 : r.steps;
  const counter = { calls: 0 };
  yield { kind: "start", model: name, prompt: r.prompt, conditionedOn, similarity, sampler: r.sampler, steps: r.steps,
    guidance: r.guidance, seed: r.seed, spacing: r.spacing, total, width: W, height: H, channels: C };

  const queue = [];
  let wake = null, finished = false, failure = null, result = null;
  const push = (event) => { queue.push(event); wake?.(); wake = null; };
  const onStep = ({ index, total, sigma, x: xs, denoised }) => {
    const xi = xs.subarray(0, size), x0 = denoised.subarray(0, size);
    const scale = (1 + sigma * sigma) ** -0.5; // sqrt(ᾱ): the σ view's x is the DDPM x_t / sqrt(ᾱ)
    const xt = new Float32Array(size), eps = new Float32Array(size);
    for (let i = 0; i < size; i++) { xt[i] = xi[i] * scale; eps[i] = sigma > 0 ? (xi[i] - x0[i]) / sigma : 0; }
    push({ kind: "step", index, total, t: sigmaToT(sigma, card.alphas), sigma, signal: scale, x_t: xt, eps, x0: Float32Array.from(x0),
      batch: Float32Array.from(denoised) }); // batch: every image's x̂0 (the lab's dial shows them side by side)
    return nextTask(); // the page stays alive between steps (the sampler awaits onStep)
  };
  generate({ network: unetNetwork(model, counter), alphasCumprod: card.alphas, predictionType: card.prediction_type,
    imageShape: card.shape, seeds, cond: conditionRow(text, 0), uncond: conditionRow(text, 1), steps: r.steps,
    guidance: r.guidance, sampler: r.sampler, spacing: r.spacing, takesGuidance: card.takes_guidance,
    clip: card.clip_sample ?? null, noise: r.init ? null : r.noise ?? null, ...start, onStep, signal })
    .then((x0) => { result = x0; }, (e) => { failure = e; })
    .finally(() => { finished = true; wake?.(); wake = null; });
  for (;;) {
    if (queue.length) { yield queue.shift(); continue; }
    if (finished) break;
    await new Promise((resolve) => { wake = resolve; });
  }
  if (failure) throw failure;
  yield { kind: "done", image: result, images: Array.from({ length: B }, (_, k) => result.slice(k * size, (k + 1) * size)),
    rgba: toRGBA(result.subarray(0, size), C, H, W), width: W, height: H, channels: C,
    ms: performance.now() - started, calls: counter.calls, conditionedOn, seed: r.seed };
}

/** The contract: paint({prompt, model, sampler, steps, guidance, seed, snap, noise}) → {width, height, data
 *  (RGBA bytes, the model's native size), ms, calls}; every field but prompt defaults to the model's card. */
export async function paint(request) {
  const started = performance.now();
  let done = null;
  for await (const event of paintSteps(request)) if (event.kind === "done") done = event;
  return { width: done.width, height: done.height, data: done.rgba, ms: performance.now() - started,
    calls: done.calls, conditionedOn: done.conditionedOn, seed: done.seed };
}

/** Ready when the site, the runtime and the default model's sessions are loaded (the first paint is then quick). */
async function warmUp() {
  const site = await loadSite();
  await Promise.all([site.text(), site.model(site.site.default_model)]);
  return true;
}

if (typeof window !== "undefined" && document.querySelector('meta[name="unnoise-site"]')) {
  window.unnoise = { ready: warmUp(), paint, paintSteps, loadSite };
}
