// unnoise lab: the page's side.  Plain ES module, no build step, no network beyond this server.
//
// The forward process is composed here, exactly: the server sends the picture x0 (uint8), one
// noise draw ε (float32) and each schedule's ᾱ list (float64 in JSON); a slider move is then
// x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε per pixel, with no round trip.
import { $, Player, Work, api, bytes, query, showError, state } from "./common.js";
import { fillSelects, wireDial, wireImg2img, wireSteps } from "./parts.js";

const COLORS = {
  linear: "#2f6fd6", "linear+ztsnr": "#7aa7f0", cosine: "#b0328f", "cosine+ztsnr": "#e08cc9",
  sigmoid: "#1d8a5a", "sigmoid+ztsnr": "#6fcf9f",
};
const PLAY_SECONDS = 4; // a full dissolve, t = 0 … T−1

// --- part 1: forward ---------------------------------------------------------------------------
const canvas = $("forward-canvas"), ctx = canvas.getContext("2d");
let frame = null; // ImageData reused across slider moves

async function loadPicture(image, seed) {
  const data = await api.json(`/api/forward?image=${encodeURIComponent(image)}&seed=${seed}`);
  const u8 = bytes(data.x0), x0 = new Float64Array(u8.length);
  for (let i = 0; i < u8.length; i++) x0[i] = u8[i] / 127.5 - 1;
  const eb = bytes(data.noise);
  Object.assign(state, {
    image: data.image, seed: data.seed, width: data.width, height: data.height,
    x0, eps: new Float32Array(eb.buffer, eb.byteOffset, eb.byteLength / 4),
  });
  canvas.width = data.width; canvas.height = data.height;
  canvas.classList.toggle("pixelated", data.width < 128);
  frame = ctx.createImageData(data.width, data.height);
  drawForward();
}

function shares(t) {
  const ab = state.schedules.get(state.schedule).ab[t];
  return [Math.sqrt(ab), Math.sqrt(1 - ab)];
}

function drawForward() {
  if (!frame || !state.schedules.size) return;
  const start = performance.now();
  const [signal, noise] = shares(state.t);
  const { x0, eps } = state, px = frame.data, n = state.width * state.height;
  for (let p = 0, i = 0, q = 0; p < n; p++, q += 4) {
    // Uint8ClampedArray clamps and rounds half to even, as the server's PNGs do
    px[q] = (signal * x0[i] + noise * eps[i++] + 1) * 127.5;
    px[q + 1] = (signal * x0[i] + noise * eps[i++] + 1) * 127.5;
    px[q + 2] = (signal * x0[i] + noise * eps[i++] + 1) * 127.5;
    px[q + 3] = 255;
  }
  ctx.putImageData(frame, 0, 0);
  state.composeMs = performance.now() - start;
  $("t-value").textContent = `t = ${state.t}`;
  $("signal-value").textContent = signal.toFixed(3);
  $("noise-value").textContent = noise.toFixed(3);
  $("signal-bar").style.width = `${100 * signal}%`;
  $("noise-bar").style.width = `${100 * noise}%`;
  drawChart();
}

function setT(t) {
  const T = state.schedules.get(state.schedule).ab.length;
  state.t = Math.max(0, Math.min(T - 1, Math.round(t)));
  $("t-slider").value = state.t;
  drawForward();
}

let playT = 0, lastTick = 0; // play advances a fractional t by the clock, so its speed is frame-rate free
let looping = false; // one animation loop at a time, however fast play/pause are pressed
function tick(now) {
  if (!state.playing) { looping = false; return; }
  const T = state.schedules.get(state.schedule).ab.length;
  if (lastTick) playT += ((now - lastTick) / 1000) * (T / PLAY_SECONDS);
  lastTick = now;
  if (playT >= T - 1) { setT(T - 1); setPlaying(false); looping = false; return; }
  setT(playT);
  requestAnimationFrame(tick);
}

function setPlaying(on) {
  state.playing = on;
  $("play").textContent = on ? "❚❚ Pause" : "▶ Play";
  if (!on) return;
  const T = state.schedules.get(state.schedule).ab.length;
  if (state.t >= T - 1) setT(0);
  playT = state.t; lastTick = 0;
  if (!looping) { looping = true; requestAnimationFrame(tick); }
}

async function upload(file) {
  showError("forward-error", "");
  if (!file) return;
  if (file.size > 5 * 1024 * 1024) {
    showError("forward-error", `“${file.name}” is ${(file.size / 2 ** 20).toFixed(1)} MB; the limit is 5 MB.`);
    return;
  }
  try {
    const info = await api.json("/api/images", {
      method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
    });
    await loadPicture(info.id, state.seed);
  } catch (e) {
    showError("forward-error", `Could not use “${file.name}”: ${e.message}`);
  }
}

function wireForward() {
  $("t-slider").addEventListener("input", (e) => { setPlaying(false); setT(+e.target.value); });
  $("play").addEventListener("click", () => setPlaying(!state.playing));
  $("new-noise").addEventListener("click", () => loadPicture(state.image, (state.seed + 1) >>> 0).catch((e) => showError("forward-error", e.message)));
  $("use-cat").addEventListener("click", () => { showError("forward-error", ""); loadPicture("cat", state.seed); });
  $("upload").addEventListener("change", (e) => { upload(e.target.files[0]); e.target.value = ""; });
  $("schedule-select").addEventListener("change", (e) => {
    state.schedule = e.target.value;
    state.compare.add(state.schedule);
    syncCompare();
    drawForward();
    noteCrossing();
  });
  const zone = $("dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    upload(e.dataTransfer.files[0]);
  });
}

// --- part 2: the schedule chart ----------------------------------------------------------------
const chart = $("schedule-canvas"), cctx = chart.getContext("2d");
const PAD = { left: 46, right: 14, top: 14, bottom: 34 };

function logSnr(ab) { return Math.log(ab) - Math.log1p(-ab); } // −∞ at a zero-terminal-SNR end

function chartRange(names) {
  if (state.view === "shares") return [0, 1];
  let lo = Infinity, hi = -Infinity;
  for (const name of names) {
    for (const ab of state.schedules.get(name).ab) {
      const v = logSnr(ab);
      if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
  }
  return [Math.floor(lo / 5) * 5 - 2, Math.ceil(hi / 5) * 5];
}

function drawChart() {
  if (!state.schedules.size) return;
  const dpr = window.devicePixelRatio || 1, W = chart.clientWidth, H = chart.clientHeight;
  if (chart.width !== Math.round(W * dpr)) { chart.width = Math.round(W * dpr); chart.height = Math.round(H * dpr); }
  cctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  cctx.clearRect(0, 0, W, H);
  const names = [...state.schedules.keys()].filter((n) => state.compare.has(n) || n === state.schedule);
  const T = state.schedules.get(state.schedule).ab.length;
  const [lo, hi] = chartRange(names);
  const x = (t) => PAD.left + (t / (T - 1)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - (Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);

  // axes and grid
  cctx.font = "11px system-ui, sans-serif"; cctx.fillStyle = "#626873"; cctx.strokeStyle = "#ebe9e4"; cctx.lineWidth = 1;
  const yStep = state.view === "shares" ? 0.25 : 5;
  cctx.textAlign = "right"; cctx.textBaseline = "middle";
  for (let v = Math.ceil(lo / yStep) * yStep; v <= hi + 1e-9; v += yStep) {
    cctx.beginPath(); cctx.moveTo(PAD.left, y(v)); cctx.lineTo(W - PAD.right, y(v)); cctx.stroke();
    cctx.fillText(state.view === "shares" ? v.toFixed(2) : String(v), PAD.left - 6, y(v));
  }
  cctx.textAlign = "center"; cctx.textBaseline = "top";
  for (let t = 0; t <= T; t += T >= 1000 ? 200 : 100) cctx.fillText(String(t), x(Math.min(t, T - 1)), H - PAD.bottom + 6);
  cctx.fillText("timestep t", (PAD.left + W - PAD.right) / 2, H - 14);
  if (state.view === "logsnr") { cctx.strokeStyle = "#b9b5ad"; cctx.beginPath(); cctx.moveTo(PAD.left, y(0)); cctx.lineTo(W - PAD.right, y(0)); cctx.stroke(); }

  // curves: the forward's schedule on top and thicker
  const order = names.filter((n) => n !== state.schedule).concat([state.schedule]);
  for (const name of order) {
    const { ab, crossing } = state.schedules.get(name), main = name === state.schedule;
    cctx.strokeStyle = COLORS[name] || "#555"; cctx.lineWidth = main ? 2.6 : 1.4; cctx.globalAlpha = main ? 1 : 0.8;
    const curves = state.view === "shares"
      ? [[(a) => Math.sqrt(a), []], [(a) => Math.sqrt(1 - a), [6, 4]]]
      : [[logSnr, []]];
    for (const [f, dash] of curves) {
      cctx.setLineDash(dash); cctx.beginPath();
      for (let t = 0; t < T; t++) t ? cctx.lineTo(x(t), y(f(ab[t]))) : cctx.moveTo(x(t), y(f(ab[t])));
      cctx.stroke();
    }
    cctx.setLineDash([]);
    // the crossing: signal = noise, i.e. ᾱ = 1/2, log-SNR = 0
    const cy = state.view === "shares" ? y(Math.SQRT1_2) : y(0);
    cctx.fillStyle = COLORS[name]; cctx.beginPath(); cctx.arc(x(crossing), cy, main ? 5 : 3.5, 0, 2 * Math.PI); cctx.fill();
    if (main) {
      cctx.strokeStyle = COLORS[name]; cctx.setLineDash([2, 3]); cctx.lineWidth = 1;
      cctx.beginPath(); cctx.moveTo(x(crossing), PAD.top); cctx.lineTo(x(crossing), H - PAD.bottom); cctx.stroke(); cctx.setLineDash([]);
      cctx.fillStyle = "#1d1f24"; cctx.textAlign = "left"; cctx.textBaseline = "bottom";
      cctx.fillText(`signal = noise at t ≈ ${crossing.toFixed(0)}`, x(crossing) + 6, H - PAD.bottom - 6);
    }
    if (!Number.isFinite(logSnr(ab[T - 1])) && state.view === "logsnr") { // ztsnr: log-SNR → −∞
      cctx.fillStyle = COLORS[name]; cctx.textAlign = "right"; cctx.textBaseline = "bottom";
      cctx.fillText("→ −∞", x(T - 1) - 2, y(lo) - 2);
    }
  }
  cctx.globalAlpha = 1;

  // the slider's t, tracked live
  const t = Math.round(state.t), ab = state.schedules.get(state.schedule).ab[t];
  cctx.strokeStyle = "#8a8f98"; cctx.lineWidth = 1.5;
  cctx.beginPath(); cctx.moveTo(x(t), PAD.top); cctx.lineTo(x(t), H - PAD.bottom); cctx.stroke();
  const marks = state.view === "shares" ? [[Math.sqrt(ab), "#2f6fd6"], [Math.sqrt(1 - ab), "#e07a2e"]] : [[logSnr(ab), "#1d1f24"]];
  for (const [v, color] of marks) {
    cctx.fillStyle = "#fff"; cctx.strokeStyle = color; cctx.lineWidth = 2;
    cctx.beginPath(); cctx.arc(x(t), y(v), 4.5, 0, 2 * Math.PI); cctx.fill(); cctx.stroke();
  }
  $("chart-legend").textContent = state.view === "shares"
    ? "solid: signal √ᾱₜ · dashed: noise √(1−ᾱₜ) · dot: where they cross"
    : "log-SNR = log(ᾱₜ / (1−ᾱₜ)): it crosses 0 where signal = noise, and falls to −∞ at a zero-terminal-SNR end";
}

function chartToT(event) {
  const r = chart.getBoundingClientRect(), T = state.schedules.get(state.schedule).ab.length;
  return ((event.clientX - r.left - PAD.left) / (r.width - PAD.left - PAD.right)) * (T - 1);
}

function noteCrossing() {
  const parts = [...state.schedules.keys()].filter((n) => state.compare.has(n) || n === state.schedule)
    .map((n) => `${n}: t ≈ ${state.schedules.get(n).crossing.toFixed(1)}`);
  $("crossing-note").textContent = `Signal = noise (ᾱ = ½) at ${parts.join(" · ")}.`;
}

function syncCompare() {
  for (const box of $("compare").querySelectorAll("input")) {
    box.checked = state.compare.has(box.value) || box.value === state.schedule;
    box.disabled = box.value === state.schedule;
  }
}

function wireSchedule() {
  const select = $("schedule-select"), compare = $("compare");
  for (const name of state.schedules.keys()) {
    select.add(new Option(name, name, false, name === state.schedule));
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" value="${name}"> <span class="swatch" style="background:${COLORS[name]}"></span> ${name}`;
    compare.append(label);
  }
  compare.addEventListener("change", (e) => {
    e.target.checked ? state.compare.add(e.target.value) : state.compare.delete(e.target.value);
    drawChart(); noteCrossing();
  });
  syncCompare();
  for (const [id, view] of [["view-shares", "shares"], ["view-logsnr", "logsnr"]]) {
    $(id).addEventListener("click", () => {
      state.view = view;
      $("view-shares").setAttribute("aria-pressed", view === "shares");
      $("view-logsnr").setAttribute("aria-pressed", view === "logsnr");
      drawChart();
    });
  }
  let dragging = false;
  chart.addEventListener("pointerdown", (e) => { dragging = true; chart.setPointerCapture(e.pointerId); setPlaying(false); setT(chartToT(e)); });
  chart.addEventListener("pointermove", (e) => { if (dragging) setT(chartToT(e)); });
  chart.addEventListener("pointerup", () => { dragging = false; });
  new ResizeObserver(() => drawChart()).observe(chart);
  noteCrossing();
}

// --- part 4: the replay, and beside it (with a model) the learned reverse from the very same static --------
function wireReplay(status) {
  const withModel = status.learned && (status.parts || []).includes("replay") && (status.parts || []).includes("img2img");
  const replay = new Player("replay"), versus = new Player("versus"), work = new Work("replay", ["replay-run"]);
  Object.assign(window.lab, { replay, versus });
  $("versus-controls").disabled = !withModel;
  $("versus-needs").hidden = withModel; $("versus-player").hidden = !withModel;
  $("replay-caption-model").hidden = !withModel; $("replay-caption-alone").hidden = withModel;
  if (withModel) {
    $("replay-run").textContent = "Run both";
    replay.linked = [versus]; versus.linked = [replay];
  }
  $("replay-run").addEventListener("click", () => {
    $("replay-images").classList.remove("placeholder"); $("learned-side").classList.remove("placeholder");
    const steps = $("replay-steps").value, seed = state.seed, image = state.image;
    if (!withModel) {
      const q = new URLSearchParams({ image, schedule: state.schedule, steps, seed });
      work.run((signal, progress) => replay.run(`/api/replay?${q}`, { signal, progress }));
      return;
    }
    const model = $("versus-model").value, prompt = $("versus-prompt").value;
    const onStart = (start) => {
      $("replay-note").textContent = `Both sides: ${start.width} × ${start.height} (the ${model} model's size), seed ${seed}, `
        + `${start.steps} steps on its ${start.schedule} schedule (${start.spacing} spacing), starting at σ = ${start.sigma.toFixed(1)}, `
        + `where √ᾱ = ${start.signal.toFixed(4)} of the picture is left (“new noise” in part 1 draws another seed).`;
    };
    work.run(
      (signal, progress) => replay.run(`/api/replay?${new URLSearchParams({ image, steps, seed, model })}`, { signal, progress, onStart }),
      (signal, progress) => versus.run(`/api/img2img?${new URLSearchParams({ image, steps, seed, model, prompt, strength: 1 })}`, { signal, progress }),
    );
  });
}

// --- part 3: the learned reverse ---------------------------------------------------------------
function wireLearned(status) {
  const learned = status.learned;
  $("learn-controls").disabled = !learned;
  $("learn-needs").hidden = learned;
  if (!learned) return;
  $("learn-player").hidden = false;
  const player = new Player("learn"), work = new Work("learn", ["learn-run"]);
  window.lab.learned = player;
  $("learn-run").addEventListener("click", () => {
    $("learn-images").classList.remove("placeholder");
    const url = `/api/generate?${query("learn", ["prompt", "model", "sampler", "steps", "guidance", "seed"])}`;
    work.run((signal, progress) => player.run(url, { signal, progress }));
  });
}

// --- the static site (an exported lab, no server): the words that promised one -------------------------
function staticWords() {
  $("forward-note").textContent = "Drawn in your browser from the picture, one fixed noise draw ε and the schedule's "
    + "exact ᾱₜ list, so every position of the slider is exact.";
  $("replay-note").textContent = "Uses part 1's picture and noise seed (“new noise” there draws another); every step "
    + "is computed in this page.";
  $("footer").textContent = "unnoise lab, as a static page: the models' real networks paint here, in your browser "
    + "(ONNX Runtime Web), from unnoise's own schedules · nothing leaves this machine";
}

// --- start -------------------------------------------------------------------------------------
async function main() {
  if (!document.querySelector('meta[name="unnoise-site"]')) (await import("./served.js")).install(); // else runtime.js
  await api.init();
  if (api.mode === "static") staticWords();
  const list = await api.json("/api/schedules");
  for (const s of list.schedules) {
    state.schedules.set(s.name, { ab: Float64Array.from(s.alphas_cumprod), crossing: s.crossing_step, ztsnr: s.zero_terminal_snr });
  }
  state.schedule = list.default;
  $("t-slider").max = state.schedules.get(state.schedule).ab.length - 1;
  wireSchedule();
  wireForward();
  await loadPicture("cat", 0);
  const [status, samplers] = await Promise.all([api.json("/api/status"), api.json("/api/samplers")]);
  fillSelects(status.models || [], samplers, status.model_defaults || {}, status.default_model || "");
  const chip = $("model-status");
  chip.textContent = status.learned ? "a trained model is loaded" : "no trained model loaded yet: parts 3, 5, 6 and 7 are waiting for one";
  chip.classList.toggle("ready", status.learned);
  wireLearned(status);
  wireReplay(status);
  wireImg2img(status);
  wireDial(status);
  await wireSteps(status);
  document.body.dataset.ready = "1";
}

main().catch((e) => showError("forward-error", `The lab could not start: ${e.message}`));
