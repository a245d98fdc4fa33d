// unnoise lab, static mode: the streamed runs of parts 3–7, as the server's streams (lab/streams.py,
// lab/learned.py) but computed in the page: the replay from the schedule alone, the rest painted by the
// runtime's real networks (runtime.paintSteps).  Each run is an async generator of [event, data]; it checks
// its query first (a refusal throws before any work, as a 422 does) and throws signal.reason on Stop.
import { Refused, checked } from "./checks.js";
import { roundHalfEven } from "./engine/schedules.js";
import { nextTask } from "./engine/tasks.js";
import { compareToReference, pngDataUrl, seenBy } from "./pictures.js";

const stopIf = (signal) => { if (signal?.aborted) throw signal.reason; };

/** Where each spacing puts its steps (lab/sweeps.py spacing_chart), from the engine's σ lists. */
export function spacingChart(engine, curve, ab, steps, spacings) {
  const rows = [];
  for (const spacing of spacings) {
    let sigmas;
    try { sigmas = Array.from(engine.sigmas(ab, steps, spacing)); } catch (e) { throw new Refused(e.message); }
    const ts = sigmas.slice(0, -1).map((s) => engine.sigmaToT(s, ab)), noisy = sigmas.slice(0, -1).filter((s) => s > 1).length;
    rows.push({ spacing, sigmas, ts, noisy_steps: noisy, clean_steps: steps - noisy });
  }
  return { schedule: curve.name, num_steps: curve.num_steps, steps, crossing_step: curve.crossing_step, spacings: rows };
}

// --- the replay (part 4): from the static, subtract the noise that was added -----------------------------
// Descending timesteps from T−1 (trailing); at a zero-terminal-SNR end (ᾱ = 0: no trace of the picture) one later.
function replayTimesteps(engine, ab, steps) {
  let ts;
  try { ts = engine.timesteps(ab.length, steps, "trailing"); } catch (e) { throw new Refused(e.message); }
  if (ab[ts[0]] === 0) ts[0] = ab.length - 2;
  return ts.filter((t, k) => k === 0 || t !== ts[k - 1]);
}

async function* replay(lab, query, signal) {
  const S = lab.specs;
  const v = checked(query, { image: S.image, schedule: S.schedule, steps: { type: "int", ge: 1, le: lab.limits.max_steps, def: 50 },
    seed: S.seed, model: { ...S.model, def: undefined } });
  const picture = lab.picture(v.image);
  if (v.model !== null) { yield* modelReplay(lab, v, picture, signal); return; }
  const curve = lab.curves.get(v.schedule), ab = lab.alphas(v.schedule), ts = replayTimesteps(lab.engine.schedules, ab, v.steps);
  const { width, height } = picture, n = width * height;
  const x0 = Float64Array.from({ length: 3 * n }, (_, i) => picture.pixels[3 * (i % n) + Math.floor(i / n)] / 127.5 - 1);
  const eps = new lab.engine.random.TorchGenerator(v.seed).randn(3 * n); // (3, H, W), as /api/forward's ε
  const a0 = ab[ts[0]], start = x0.map((x, i) => Math.sqrt(a0) * x + Math.sqrt(1 - a0) * eps[i]);
  const recovered = start.map((x, i) => (x - Math.sqrt(1 - a0) * eps[i]) / Math.sqrt(a0)); // x0 from the static and ε
  yield ["start", { kind: "replay", image: picture.id, schedule: curve.name, seed: v.seed, steps: ts.length, ts, width, height }];
  const png = (x) => pngDataUrl(x, width, height);
  for (const [k, t] of ts.entries()) {
    stopIf(signal);
    const s = Math.sqrt(ab[t]), xt = k === 0 ? start : recovered.map((x, i) => s * x + Math.sqrt(1 - ab[t]) * eps[i]);
    yield ["step", { index: k, total: ts.length, t, signal: s, noise: Math.sqrt(Math.max(0, 1 - s * s)), x_t: png(xt),
      eps: k ? null : png(eps), x0: k ? null : png(recovered) }];
    await nextTask(); // the page draws and hears Stop between steps
  }
  yield ["done", { image: png(recovered) }];
}

// Part 4 beside a model: the replay on the picture as the model sees it, from x0 + σ0·ε with the seed's ε
// at the model's size and σ grid: the very static image to image at strength 1 starts from.
async function* modelReplay(lab, v, picture, signal) {
  const m = lab.model(v.model), size = m.image_size, C = m.channels, n = size * size;
  const ab = lab.alphas(m.schedule), spacing = m.defaults.spacing;
  let sigmas;
  try { sigmas = Array.from(lab.engine.schedules.sigmas(ab, v.steps, spacing)); } catch (e) { throw new Refused(e.message); }
  const x0 = seenBy(picture, size, C), eps = new lab.engine.random.TorchGenerator(v.seed).randn(C * n);
  const recovered = Float64Array.from(x0), png = (x) => pngDataUrl(x, size, size);
  const ts = sigmas.slice(0, -1).map((s) => lab.engine.schedules.sigmaToT(s, ab));
  yield ["start", { kind: "replay", image: picture.id, seed: v.seed, model: v.model, width: size, height: size,
    model_prompts: m.example_prompts.slice(0, 8), schedule: m.schedule, steps: v.steps, spacing, ts, sigma: sigmas[0],
    signal: (1 + sigmas[0] ** 2) ** -0.5 }];
  for (let k = 0; k < sigmas.length - 1; k++) {
    stopIf(signal);
    const sigma = sigmas[k], scale = (1 + sigma * sigma) ** -0.5;
    const xt = recovered.map((x, i) => (x + sigma * eps[i]) * scale);
    yield ["step", { index: k, total: sigmas.length - 1, t: ts[k], signal: scale, noise: Math.sqrt(1 - scale * scale),
      x_t: png(xt), eps: k ? null : png(eps), x0: k ? null : png(recovered) }];
    await nextTask(); // the page draws and hears Stop between steps
  }
  yield ["done", { image: png(recovered) }];
}

// --- the learned runs: the runtime paints, each step's pictures become data URLs ---------------------------
const PAINT = ["prompt", "model", "sampler", "steps", "guidance", "seed"];

function paintQuery(lab, query, extra = {}, overrides = {}) {
  const S = lab.specs;
  const v = checked(query, { prompt: S.prompt, model: S.model, ...S.optional, seed: S.seed, ...overrides, ...extra });
  const d = lab.model(v.model).defaults;
  for (const k of ["sampler", "steps", "guidance"]) if (v[k] === null || v[k] === undefined) v[k] = d[k];
  return v;
}

// The server's start event names the request's fields (lab.start: asdict(request)) and what the run adds.
const fields = (v, names) => Object.fromEntries(names.map((k) => [k, v[k]]));

// The runtime's run, started: its checks (an empty prompt, a sampler it lacks) refuse before our start event,
// as the server's do before its stream opens.  → {events: the rest of the run, start: the runtime's start}
async function begin(runtime, request, signal) {
  const events = runtime.paintSteps(request, { signal }), first = await events.next();
  return { events, start: first.value };
}

async function* frames(events, signal, size) {
  const png = (x) => pngDataUrl(x, size, size);
  for await (const ev of events) {
    stopIf(signal);
    if (ev.kind === "step") {
      yield ["step", { index: ev.index, total: ev.total, t: ev.t, signal: ev.signal, noise: Math.sqrt(Math.max(0, 1 - ev.signal ** 2)),
        x_t: png(ev.x_t), eps: png(ev.eps), x0: png(ev.x0) }];
    } else if (ev.kind === "done") yield ["done", { image: png(ev.images[0]) }];
  }
}

async function* generate(lab, query, signal) {
  const v = paintQuery(lab, query, { num_images: { type: "int", ge: 1, le: lab.limits.max_images, def: 1 } });
  const m = lab.model(v.model), runtime = await lab.paintRuntime();
  const { events } = await begin(runtime, { ...fields(v, PAINT), numImages: v.num_images }, signal);
  yield ["start", { kind: "generate", ...fields(v, [...PAINT, "num_images"]), width: m.image_size, height: m.image_size,
    model_prompts: m.example_prompts.slice(0, 8) }];
  yield* frames(events, signal, m.image_size);
}

async function* img2img(lab, query, signal) {
  const S = lab.specs;
  const v = paintQuery(lab, query, { image: S.image, strength: { type: "float", gt: 0, le: 1, def: lab.lab.constants.default_strength } });
  const m = lab.model(v.model), picture = lab.picture(v.image), init = seenBy(picture, m.image_size, m.channels);
  const runtime = await lab.paintRuntime();
  const { events } = await begin(runtime, { ...fields(v, PAINT), init, strength: v.strength }, signal);
  yield ["start", { kind: "img2img", ...fields(v, [...PAINT, "strength"]), image: picture.id, width: m.image_size,
    height: m.image_size, model_prompts: m.example_prompts.slice(0, 8), init: pngDataUrl(init, m.image_size, m.image_size) }];
  yield* frames(events, signal, m.image_size);
}

// Runs one after another, each step's x̂0 a tile of one side-by-side stream of `total` events; the finals.
// `first`: the first run, begun (so its refusal came before the start event).
async function* inTurn(runtime, requests, signal, size, finals, first) {
  let count = 0;
  const total = requests.reduce((a, r) => a + r.count, 0);
  for (const [k, r] of requests.entries()) {
    const events = k === 0 ? first.events : runtime.paintSteps(r.request, { signal });
    for await (const ev of events) {
      stopIf(signal);
      if (ev.kind === "step") {
        yield ["step", { index: count++, total, tiles: [{ tile: k, step: ev.index, steps: ev.total, t: ev.t, sigma: ev.sigma, x0: pngDataUrl(ev.x0, size, size) }] }];
      } else if (ev.kind === "done") finals.push(ev.images[0]);
    }
  }
}

async function* ladder(lab, query, signal) {
  const S = lab.specs, c = lab.lab.constants;
  const v = paintQuery(lab, query, { image: S.image, strength: { type: "float", gt: 0, le: 1, list: [1, lab.limits.max_tiles], def: c.ladder_strengths } },
    { steps: { type: "int", ge: 1, le: lab.limits.max_sweep_steps } });
  const m = lab.model(v.model), size = m.image_size, picture = lab.picture(v.image), init = seenBy(picture, size, m.channels);
  const runs = v.strength.map((s) => Math.max(1, Math.min(v.steps, roundHalfEven(v.steps * s)))); // as Painter._img2img_start
  const runtime = await lab.paintRuntime(), requests = v.strength.map((s, k) => ({ count: runs[k], request: { ...fields(v, PAINT), init, strength: s } }));
  const first = await begin(runtime, requests[0].request, signal);
  yield ["start", { kind: "ladder", ...fields(v, PAINT), strengths: v.strength, image: picture.id, width: size, height: size,
    model_prompts: m.example_prompts.slice(0, 8), init: pngDataUrl(init, size, size), total: runs.reduce((a, b) => a + b, 0), runs }];
  const finals = [];
  yield* inTurn(runtime, requests, signal, size, finals, first);
  yield ["done", { images: finals.map((x) => pngDataUrl(x, size, size)), strengths: v.strength }];
}

async function* dial(lab, query, signal) {
  const S = lab.specs, c = lab.lab.constants, L = lab.limits;
  const v = checked(query, { prompt: S.prompt, model: S.model, sampler: { ...S.optional.sampler, def: "dpmpp_2m" },
    steps: { type: "int", ge: 1, le: L.max_steps, def: 20 }, seed: S.seed,
    scale: { type: "float", ge: 0, le: c.max_guidance, list: [1, L.max_tiles], def: c.dial_scales } });
  const m = lab.model(v.model), size = m.image_size, runtime = await lab.paintRuntime(), scales = v.scale;
  // every scale a row of one batch, all from the seed's one start noise (the same static), as the served dial
  const per = m.channels * size * size, one = lab.engine.random.painterNoise(v.seed, 1, m.channels, size, size).noise;
  const noise = new Float32Array(per * scales.length).map((_, i) => one[i % per]);
  const request = { ...fields(v, ["prompt", "model", "sampler", "steps", "seed"]), guidance: scales, numImages: scales.length, noise, sameSeed: true };
  const { events } = await begin(runtime, request, signal);
  yield ["start", { kind: "dial", ...fields(v, ["prompt", "model", "sampler", "steps", "seed"]), scales, width: size, height: size,
    model_prompts: m.example_prompts.slice(0, 8), total: v.steps }];
  const png = (x) => pngDataUrl(x, size, size);
  for await (const ev of events) {
    stopIf(signal);
    if (ev.kind === "step") {
      yield ["step", { index: ev.index, total: ev.total, tiles: scales.map((_, k) => ({ tile: k, step: ev.index, steps: ev.total,
        t: ev.t, sigma: ev.sigma, x0: png(ev.batch.subarray(k * per, (k + 1) * per)) })) }];
    } else if (ev.kind === "done") yield ["done", { images: ev.images.map(png), scales }];
  }
}

async function* spacings(lab, query, signal) {
  const S = lab.specs, c = lab.lab.constants, L = lab.limits;
  const v = checked(query, { prompt: S.prompt, model: S.model, sampler: { ...S.optional.sampler, def: "dpmpp_2m" },
    steps: { type: "int", ge: 1, le: L.max_sweep_steps, def: 8 }, guidance: { type: "float", ge: 0, le: c.max_guidance, def: 5 },
    seed: S.seed, spacing: S.spacing });
  const m = lab.model(v.model), size = m.image_size, names = [...new Set(v.spacing)];
  const chart = spacingChart(lab.engine.schedules, lab.curves.get(m.schedule), lab.alphas(m.schedule), v.steps, names); // a refusal before any work
  const refSteps = Math.min(L.max_steps, Math.max(c.min_reference_steps, 2 * v.steps)), refSpacing = m.defaults.spacing;
  const base = fields(v, ["prompt", "model", "sampler", "guidance", "seed"]);
  const requests = [...names.map((spacing) => ({ count: v.steps, request: { ...base, steps: v.steps, spacing } })),
    { count: refSteps, request: { ...base, steps: refSteps, spacing: refSpacing } }];
  const runtime = await lab.paintRuntime(), first = await begin(runtime, requests[0].request, signal);
  yield ["start", { kind: "spacings", ...fields(v, ["prompt", "model", "sampler", "steps", "guidance", "seed"]), spacings: names,
    width: size, height: size, model_prompts: m.example_prompts.slice(0, 8), chart, total: names.length * v.steps + refSteps,
    reference_steps: refSteps, reference_spacing: refSpacing, stochastic: lab.samplerList.samplers.find((s) => s.name === v.sampler).stochastic }];
  const finals = [];
  yield* inTurn(runtime, requests, signal, size, finals, first);
  const reference = finals.pop(), png = (x) => pngDataUrl(x, size, size);
  yield ["done", { images: finals.map(png), reference: png(reference), metrics: finals.map((x) => compareToReference(x, reference, size, size)) }];
}

/** The streamed routes: path → (lab, query, signal) → async generator of [event, data]. */
export const streams = {
  "/api/replay": replay, "/api/generate": generate, "/api/img2img": img2img, "/api/img2img/ladder": ladder,
  "/api/guidance": dial, "/api/spacings/run": spacings,
};
