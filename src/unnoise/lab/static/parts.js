// unnoise lab, parts 5–7: image to image, the guidance dial, where the steps go.
import { $, Player, Work, api, crisp, query, showError, state } from "./common.js";

// Model and sampler pickers: the server's own lists (/api/status, /api/samplers), never the page's guesses.
// Picking a model fills its part's sampler, steps and guidance with that model's own defaults
// (status.model_defaults): a 4-call distilled student and a 20-step teacher want different settings.
// Every model menu starts on the server's default model (emoji when the lab has it: a reader who types
// "a red heart" should get a heart, not a digit).
export function fillSelects(models, samplers, defaults = {}, defaultModel = "") {
  for (const select of document.querySelectorAll(".sampler-select")) {
    select.replaceChildren(...samplers.samplers.map((s) => {
      const o = new Option(s.name, s.name, s.name === samplers.default, s.name === samplers.default);
      o.title = `${s.paper} · order ${s.order}${s.stochastic ? " · stochastic" : ""}`;
      return o;
    }));
  }
  for (const select of document.querySelectorAll(".model-select")) {
    const first = models.includes(defaultModel) ? defaultModel : models[0];
    const options = models.length ? models.map((m) => new Option(m, m, m === first, m === first)) : [new Option("default", "", true, true)];
    select.replaceChildren(...options);
    const prefix = select.id.replace(/-model$/, "");
    const apply = () => applyModelDefaults(prefix, defaults[select.value]);
    select.addEventListener("change", apply);
    apply();
  }
}

export const DIAL_SCALES = "0, 1, 3, 7, 12";

// d: one model's defaults; a distilled student's guidance_range is the w it learned (w is its input).
export function applyModelDefaults(prefix, d) {
  if (!d) return;
  const set = (name, value) => {
    const el = document.getElementById(`${prefix}-${name}`);
    if (el && value !== undefined && value !== null) el.value = String(value);
  };
  set("sampler", d.sampler);
  if (prefix !== "steps") set("steps", d.steps);  // part 7 compares spacings at its own small step count
  set("guidance", d.guidance);
  if (prefix === "dial") set("scales", d.guidance_range ? spreadScales(d.guidance_range) : DIAL_SCALES);
}

// Five scales across a student's learned range [lo, hi], e.g. [1, 6] → "1, 2.25, 3.5, 4.75, 6".
export function spreadScales([lo, hi]) {
  return [0, 1, 2, 3, 4].map((k) => +(lo + (k * (hi - lo)) / 4).toFixed(2)).join(", ");
}

// Which learned parts the server offers; without one, the part keeps its controls off and its note on.
function enablePart(status, part, prefix) {
  const on = status.learned && (status.parts || []).includes(part);
  $(`${prefix}-controls`).disabled = !on;
  $(`${prefix}-needs`).hidden = on;
  return on;
}

// --- part 5: image to image (the part 3 player, plus the picture it starts from), and the strength ladder ----
// What a strength did, in facts: how many of the steps re-painted the picture.
function strengthWords(s, run, steps) {
  return s >= 1 ? `all ${steps} steps, from pure static` : `the last ${run} of ${steps} steps re-painted`;
}

export function wireImg2img(status) {
  const strength = $("i2i-strength");
  const showStrength = () => { $("i2i-strength-value").textContent = (+strength.value).toFixed(2); };
  strength.addEventListener("input", showStrength);
  showStrength();
  if (!enablePart(status, "img2img", "i2i")) return;
  $("i2i-player").hidden = false;
  const player = new Player("i2i"), work = new Work("i2i", ["i2i-run", "i2i-ladder-run"]);
  window.lab.img2img = player;
  const init = $("i2i-init");
  crisp(init);
  const controls = ["prompt", "model", "sampler", "steps", "guidance", "seed"];
  $("i2i-run").addEventListener("click", () => {
    const q = query("i2i", [...controls, "strength"], { image: state.image });
    $("i2i-images").classList.remove("placeholder");
    work.run((signal, progress) => player.run(`/api/img2img?${q}`, { signal, progress, onStart: (start) => { init.src = start.init; } }));
  });
  if (!(status.parts || []).includes("ladder")) { $("i2i-ladder-run").disabled = true; return; }
  const ladder = new TileRun("i2i", null);
  window.lab.ladder = ladder;
  $("i2i-ladder-run").addEventListener("click", () => {
    const strengths = $("i2i-strengths").value.split(/[\s,;]+/).filter(Boolean);
    const q = query("i2i", controls, { image: state.image, strength: strengths });
    let imgs = [], lines = [];
    const box = $("i2i-ladder"), note = $("i2i-ladder-note");
    box.hidden = false; note.hidden = true;
    work.run((signal, progress) => ladder.run(`/api/img2img/ladder?${q}`, {
      signal, progress,
      onStart: (start) => {
        [imgs, lines] = makeTiles(box, [["the picture", "as the model sees it"],
          ...start.strengths.map((s) => [`strength ${s}`, "waiting"])]);
        imgs[0].src = start.init;
      },
      onStep: (step) => {
        for (const tile of step.tiles) { imgs[tile.tile + 1].src = tile.x0; lines[tile.tile + 1].textContent = `step ${tile.step + 1}/${tile.steps}`; }
      },
      onDone: (done) => {
        const { runs, steps } = ladder.start;
        done.images.forEach((src, k) => { imgs[k + 1].src = src; lines[k + 1].textContent = strengthWords(done.strengths[k], runs[k], steps); });
        note.textContent = `Each picture is part 1's picture noised “strength” of the way up the schedule, then painted back `
          + `under the prompt for that share of the ${ladder.start.steps} steps, from seed ${ladder.start.seed}. `
          + "The lower the strength, the more of the original survives; at 1 it starts from pure static.";
        note.hidden = false;
      },
    }));
  });
}

// --- tiles: several runs side by side (parts 6 and 7) -------------------------------------------------------
// Each `step` event carries the tiles that moved; a new run of a part aborts its previous one.
class TileRun {
  // readout: the id of the line that says which step it is at (null: none)
  constructor(prefix, readout = `${prefix}-readout`) { Object.assign(this, { p: prefix, readout, finished: false, start: null, done: null }); }

  async run(url, { onStart, onStep, onDone, signal = undefined, progress = () => {} }) {
    Object.assign(this, { finished: false, start: null, done: null });
    showError(`${this.p}-error`, "");
    const readout = this.readout && $(this.readout);
    if (readout) readout.textContent = "starting…";
    try {
      for await (const [name, data] of api.stream(url, { signal })) {
        if (name === "start") { this.start = data; onStart(data); progress(0, data.total); }
        else if (name === "step") {
          onStep(data);
          progress(data.index + 1, data.total);
          if (readout) readout.textContent = `step ${data.index + 1}/${data.total}`;
        }
        else if (name === "error") throw new Error(data.error);
        else if (name === "done") { this.done = data; onDone(data); this.finished = true; }
      }
    } catch (e) {
      if (readout) readout.textContent = e.name === "AbortError" ? "stopped: you pressed Stop" : "stopped";
      if (e.name !== "AbortError") showError(`${this.p}-error`, e.message);
    }
  }
}

// Tiles with a bold title and a line under it; returns their images and the lines.
function makeTiles(box, captions) {
  box.classList.remove("placeholder");
  box.style.setProperty("--tiles", captions.length);
  const figures = captions.map(([title, sub]) => {
    const fig = document.createElement("figure"), frame = document.createElement("div"), img = new Image();
    img.alt = title;
    crisp(img);
    frame.append(img);
    const cap = document.createElement("figcaption"), b = document.createElement("b"), line = document.createElement("span");
    b.textContent = title; line.textContent = sub;
    cap.append(b, line);
    fig.append(frame, cap);
    return fig;
  });
  box.replaceChildren(...figures);
  return [figures.map((f) => f.querySelector("img")), figures.map((f) => f.querySelector("span"))];
}

// --- part 6: the guidance dial -------------------------------------------------------------------------------
function dialWords(w) {
  if (w === 0) return "ignores the prompt";
  if (w === 1) return "the plain conditional model";
  if (w <= 4) return "follows the prompt";
  if (w <= 9) return "pushes harder";
  return "overcooked?";
}

export function wireDial(status) {
  if (!enablePart(status, "dial", "dial")) return;
  const run = new TileRun("dial"), work = new Work("dial", ["dial-run"]);
  window.lab.dial = run;
  $("dial-run").addEventListener("click", () => {
    const scales = $("dial-scales").value.split(/[\s,;]+/).filter(Boolean);
    const q = query("dial", ["prompt", "model", "sampler", "steps", "seed"], { scale: scales });
    let imgs = [];
    work.run((signal, progress) => run.run(`/api/guidance?${q}`, {
      signal, progress,
      onStart: (start) => { [imgs] = makeTiles($("dial-tiles"), start.scales.map((w) => [`w = ${w}`, dialWords(w)])); },
      onStep: (step) => { for (const tile of step.tiles) imgs[tile.tile].src = tile.x0; },
      onDone: (done) => {
        done.images.forEach((src, k) => { imgs[k].src = src; });
        $("dial-readout").textContent = `done: ${done.scales.length} scales × ${run.start.steps} steps, one batch`;
      },
    }));
  });
}

// --- part 7: where the steps go ------------------------------------------------------------------------------
const SPACING_COLORS = { leading: "#b0328f", linspace: "#2f6fd6", trailing: "#e07a2e", karras: "#1d8a5a", log_snr: "#6b4fd6", log_snr_trailing: "#8c6d1f" };

function fmtSigma(s) { return s >= 100 ? s.toFixed(0) : s >= 1 ? s.toFixed(1) : s.toPrecision(2); }
const lastSigma = (row) => row.sigmas[row.sigmas.length - 2]; // the smallest σ > 0: the last step starts there

function drawStepsChart() {
  const chart = state.stepsChart, canvas = $("steps-canvas"), g = canvas.getContext("2d");
  if (!chart) return;
  const dpr = window.devicePixelRatio || 1, W = canvas.clientWidth, H = canvas.clientHeight;
  if (canvas.width !== Math.round(W * dpr)) { canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr); }
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  const T = chart.num_steps, rows = chart.spacings;
  g.font = "12.5px system-ui, sans-serif"; // the row labels: the left margin fits the longest
  const labelW = Math.max(0, ...rows.map((r) => g.measureText(r.spacing).width));
  const narrow = W < 520, pad = { left: Math.ceil(labelW) + 16, right: narrow ? 12 : 112, top: 22, bottom: 40 };
  const x = (t) => pad.left + (1 - t / (T - 1)) * (W - pad.left - pad.right); // noisy on the left: the reverse runs left to right
  const rowH = (H - pad.top - pad.bottom) / rows.length, y = (k) => pad.top + (k + 0.5) * rowH;
  const cx = x(chart.crossing_step), bottom = H - pad.bottom;
  g.fillStyle = "#fdf1e7"; g.fillRect(pad.left, pad.top, cx - pad.left, bottom - pad.top);
  g.fillStyle = "#eaf1fc"; g.fillRect(cx, pad.top, W - pad.right - cx, bottom - pad.top);
  g.font = "12px system-ui, sans-serif"; g.textBaseline = "bottom";
  g.fillStyle = "#a3551d"; g.textAlign = "left"; g.fillText(narrow ? "noisy end (σ > 1)" : "noisy end: σ > 1, noise outweighs signal", pad.left + 4, pad.top - 5);
  g.fillStyle = "#2f5fb0"; g.textAlign = "right"; g.fillText(narrow ? "clean (σ < 1)" : "clean end: σ < 1", W - pad.right - 4, pad.top - 5);
  g.font = "11px system-ui, sans-serif"; g.fillStyle = "#626873"; g.textAlign = "center"; g.textBaseline = "top";
  for (let t = 0; t <= T; t += T >= 1000 ? 200 : 100) g.fillText(String(t), x(Math.min(t, T - 1)), bottom + 5);
  const axis = narrow ? `timestep t · σ = 1 at t ≈ ${chart.crossing_step.toFixed(0)}`
    : `timestep t (${chart.schedule} schedule) · signal = noise at t ≈ ${chart.crossing_step.toFixed(0)}`;
  g.fillText(axis, (pad.left + W - pad.right) / 2, bottom + 21);
  g.strokeStyle = "#8a8f98"; g.lineWidth = 1; g.setLineDash([3, 3]);
  g.beginPath(); g.moveTo(cx, pad.top); g.lineTo(cx, bottom); g.stroke(); g.setLineDash([]);
  rows.forEach((row, k) => {
    const color = SPACING_COLORS[row.spacing] || "#555";
    g.strokeStyle = "#d9d6cf"; g.lineWidth = 1; g.beginPath(); g.moveTo(pad.left, y(k)); g.lineTo(W - pad.right, y(k)); g.stroke();
    g.font = "12.5px system-ui, sans-serif"; g.fillStyle = "#1d1f24"; g.textAlign = "right"; g.textBaseline = "middle";
    g.fillText(row.spacing, pad.left - 8, y(k));
    if (!narrow) {
      g.font = "11.5px system-ui, sans-serif"; g.fillStyle = "#626873"; g.textAlign = "left";
      g.fillText(`${row.noisy_steps} noisy · ${row.clean_steps} clean`, W - pad.right + 8, y(k));
    }
    g.fillStyle = color;
    for (const t of row.ts) { g.beginPath(); g.arc(x(t), y(k), 4.5, 0, 2 * Math.PI); g.fill(); }
    g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath(); g.arc(x(0), y(k), 3, 0, 2 * Math.PI); g.stroke(); // σ = 0: every run ends there
  });
  $("steps-legend").textContent = `Each dot is where one of the ${chart.steps} steps starts (its σ as a timestep); every run ends at σ = 0, the ring. `
    + rows.map((r) => `${r.spacing}: σ ${fmtSigma(r.sigmas[0])} → ${fmtSigma(lastSigma(r))}`).join(" · ");
}

async function loadStepsChart() {
  const q = new URLSearchParams({ schedule: "linear", steps: $("steps-steps").value || 8 });
  try {
    state.stepsChart = await api.json(`/api/spacings?${q}`);
    showError("steps-error", "");
    drawStepsChart();
  } catch (e) { showError("steps-error", e.message); }
}

const ordinal = (k) => ["", "", "second ", "third ", "fourth ", "fifth ", "sixth "][k] ?? `${k}th `; // "the furthest", "the second furthest"
const MUSHY = 0.9; // detail ratio below this: clearly less fine detail than the reference (above 1/MUSHY: grainier)

function detailWords(ratio) {
  if (ratio < MUSHY) return "mushier than the reference";
  if (ratio > 1 / MUSHY) return "grainier than the reference";
  return "about as much as the reference";
}

// What this run shows about the folklore, from its own numbers (no verdict is written in advance), as a
// plain-words headline and the details under it.  Noisy-starved: the fewest steps starting at σ > 1 (ties:
// the lower first σ); clean-starved: the fewest at σ ≤ 1 (ties: the higher last σ, i.e. the bigger final jump
// to σ = 0).  A half of the claim holds when its spacing is the worst of the tiles on its measure (and, for
// detail, clearly mushy: ratio < MUSHY).
/** @returns {{headline: string, details: string}} */
export function stepsVerdict(chart, metrics, start) {
  const rows = chart.spacings.map((r, k) => ({ ...r, ...metrics[k] }));
  if (rows.length < 2) return { headline: "Pick at least two spacings to compare.", details: "" };
  const noisy = [...rows].sort((a, b) => a.noisy_steps - b.noisy_steps || a.sigmas[0] - b.sigmas[0])[0];
  const clean = [...rows].sort((a, b) => a.clean_steps - b.clean_steps || lastSigma(b) - lastSigma(a))[0];
  const shapeRank = [...rows].sort((a, b) => b.shape_error - a.shape_error).indexOf(noisy) + 1;
  const mushRank = [...rows].sort((a, b) => a.detail_ratio - b.detail_ratio).indexOf(clean) + 1;
  const n = rows.length, steps = chart.steps;
  const shapes = shapeRank === 1, mushy = mushRank === 1 && clean.detail_ratio < MUSHY;
  const lostShapes = `${noisy.spacing}, which spends the fewest steps where the picture is still mostly noise, `
    + (shapes ? "got the big shapes most wrong" : "did not get the big shapes most wrong");
  const mushDetail = `${clean.spacing}, which spends the fewest steps on the last fine touches, `
    + (mushy ? "left the fine detail mushiest"
      : clean.detail_ratio < MUSHY ? "left the fine detail a little mushy, but not the mushiest"
      : clean.detail_ratio > 1 / MUSHY ? "left the fine detail grainy rather than mushy"
      : "kept about as much fine detail as the reference");
  const headline = shapes && mushy ? `The folklore held up in this run: ${lostShapes}, and ${mushDetail}.`
    : shapes ? `Half of the folklore held up in this run: ${lostShapes}, but ${mushDetail}.`
    : mushy ? `Half of the folklore held up in this run: ${mushDetail}, but ${lostShapes}.`
    : `The folklore did not hold up in this run: ${lostShapes}, and ${mushDetail}.`;
  let details = `How it was judged: each picture against a ${start.reference_steps}-step reference. `
    + `Big shapes (blurred pictures compared): ${noisy.spacing}, with ${noisy.noisy_steps} of ${steps} steps in the noisy half `
    + `(σ > 1), came out the ${ordinal(shapeRank)}furthest off of ${n} (shape error ${noisy.shape_error.toFixed(3)}). `
    + `Fine detail (what blurring takes away): ${clean.spacing}, with ${clean.clean_steps} of ${steps} steps in the clean half, `
    + `kept ${clean.detail_ratio.toFixed(2)}× the reference's, ${detailWords(clean.detail_ratio)} (the ${ordinal(mushRank)}mushiest of ${n}).`;
  if (start.stochastic) details += " This sampler draws fresh noise every step, so part of each difference is luck.";
  return { headline, details };
}

export async function wireSteps(status) {
  let work = { busy: false };
  const canvas = $("steps-canvas");
  new ResizeObserver(() => drawStepsChart()).observe(canvas);
  const run = new TileRun("steps");
  window.lab.steps = run;
  $("steps-steps").addEventListener("change", () => { if (!work.busy) loadStepsChart(); });
  await loadStepsChart();
  if (!enablePart(status, "spacings", "steps")) return;
  work = new Work("steps", ["steps-run"]);
  $("steps-run").addEventListener("click", () => {
    const verdict = $("steps-verdict");
    verdict.hidden = true;
    const q = query("steps", ["prompt", "model", "sampler", "steps", "guidance", "seed"]);
    let imgs = [], lines = [];
    work.run((signal, progress) => run.run(`/api/spacings/run?${q}`, {
      signal, progress,
      onStart: (start) => {
        state.stepsChart = start.chart;
        drawStepsChart();
        const tiles = [...start.spacings.map((s) => [s, "waiting"]), ["reference", `${start.reference_spacing}, ${start.reference_steps} steps`]];
        [imgs, lines] = makeTiles($("steps-tiles"), tiles);
      },
      onStep: (step) => {
        for (const tile of step.tiles) {
          imgs[tile.tile].src = tile.x0;
          if (tile.tile < lines.length - 1) lines[tile.tile].textContent = `step ${tile.step + 1}/${tile.steps}`;
        }
      },
      onDone: (done) => {
        done.images.forEach((src, k) => { imgs[k].src = src; });
        imgs[imgs.length - 1].src = done.reference;
        done.metrics.forEach((m, k) => { lines[k].textContent = `shapes off ${m.shape_error.toFixed(3)} · detail ${m.detail_ratio.toFixed(2)}×`; });
        const { headline, details } = stepsVerdict(run.start.chart, done.metrics, run.start);
        const strong = document.createElement("strong"), small = document.createElement("span");
        strong.textContent = headline; small.textContent = details;
        verdict.replaceChildren(strong, small);
        verdict.hidden = false;
        $("steps-readout").textContent = `done: ${done.images.length} spacings and the reference`;
      },
    }));
  });
}
