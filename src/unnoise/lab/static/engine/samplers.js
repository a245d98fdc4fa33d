// Mirrors src/unnoise/sampling (core.py, ancestral.py, euler.py, dpm_solver.py, unipc.py, consistency.py and
// the registry in __init__.py).  σ view (Karras et al. 2022): x = x0 + σ·ε, denoise(x, σ) ≈ E[x0 | x].
//
// Every entry of SAMPLERS is {name, order, stochastic, callsPerStep, model, paper, odeOptions, nfe(steps), run}:
//   run(denoise, x, sigmas, {randn, onStep, signal, ...options}) → Promise of x0 (x's array type)
//   denoise(x, sigma) → Promise of x̂0 (sigma a number; rounded to float32 when x is a Float32Array, as
//     Python's Run.denoise passes σ in x's dtype); x = start noise·sigmas[0], the batch flat, row-major;
//   sigmas strictly descending, last exactly 0 (schedules.sigmas);
//   randn(n) → Float32Array|Float64Array of n fresh unit normals for the whole batch (image b's from its own
//     generator: random.js batchRandn); only stochastic steps call it, in Python's order;
//   onStep({index, total, sigma, sigmaNext, x, denoised}) once per step (may be async); returning false stops
//     the run with SamplingCancelled; signal: an AbortSignal, checked before every step (throws its reason).
// Arithmetic is float64 per element, stored in x's array type (Float32Array in the page; the tests also run
// Float64Array against Python float64).  All history is local to a call.

export class SamplingCancelled extends Error {
  constructor(message = "sampling cancelled", { step = null, denoised = null } = {}) {
    super(message);
    this.name = "SamplingCancelled";
    this.step = step;
    this.denoised = denoised;
  }
}

/** core.check_sigmas: σ_0 > σ_1 > … > σ_N = 0, finite. */
export function checkSigmas(sigmas) {
  const sig = Array.from(sigmas, Number);
  if (sig.length < 2) throw new Error(`sigmas must have at least 2 entries, got ${sig.length}`);
  if (!sig.every(Number.isFinite)) throw new Error("sigmas must be finite");
  if (sig.some((s) => s < 0)) throw new Error("sigmas must be non-negative");
  for (let i = 0; i + 1 < sig.length; i++) if (!(sig[i] > sig[i + 1])) throw new Error("sigmas must be strictly descending");
  if (sig[sig.length - 1] !== 0) throw new Error(`sigmas must end in exactly 0 (got ${sig[sig.length - 1]})`);
  return sig;
}

/** core.Run: one invocation's validated inputs and the step reporting; holds no history. */
class Run {
  constructor(denoise, x, sigmas, { randn = null, onStep = null, signal = null } = {}) {
    if (typeof denoise !== "function") throw new Error("denoise must be a function (x, sigma) → Promise of x̂0");
    this.denoiser = denoise;
    this.sigmas = checkSigmas(sigmas);
    this.randn = randn;
    this.onStep = onStep;
    this.signal = signal;
    this.kind = x.constructor;
  }

  get steps() {
    return this.sigmas.length - 1;
  }

  /** Abort between steps: the signal's reason is thrown. */
  check() {
    if (this.signal?.aborted) throw this.signal.reason ?? new Error("sampling aborted");
  }

  /** D(x, σ) with σ in x's precision; the result in x's array type. */
  async denoise(x, sigma) {
    const s = this.kind === Float32Array ? Math.fround(sigma) : sigma;
    const denoised = await this.denoiser(x, s);
    if (!denoised || denoised.length !== x.length) {
      throw new Error(`denoiser returned ${denoised?.length} values, expected ${x.length}`);
    }
    return denoised instanceof this.kind ? denoised : this.kind.from(denoised);
  }

  /** x̂0 = D(x, σ_i) (or the given σ), reported to onStep. */
  async observe(i, x, sigma = null) {
    const s = sigma ?? this.sigmas[i];
    const denoised = await this.denoise(x, s);
    await this.report(i, x, denoised, s);
    return denoised;
  }

  async report(i, x, denoised, sigma = null) {
    if (this.onStep) {
      const info = { index: i, total: this.steps, sigma: sigma ?? this.sigmas[i], sigmaNext: this.sigmas[i + 1], x, denoised };
      if ((await this.onStep(info)) === false) {
        throw new SamplingCancelled(`cancelled by onStep at step ${i}`, { step: i, denoised });
      }
    }
    this.check();
  }

  noise(x) {
    if (typeof this.randn !== "function") throw new Error("this sampler draws fresh noise: pass randn");
    const z = this.randn(x.length);
    if (z.length !== x.length) throw new Error(`randn(${x.length}) returned ${z.length} values`);
    return z;
  }
}

// --- element-wise helpers (float64 arithmetic, stored in x's array type) -------------------------------------

/** core.toward: x̂0 + keep·(x − x̂0), the exponential-integrator / DDIM / Euler step. */
export function toward(denoised, x, keep) {
  const out = new x.constructor(x.length);
  for (let i = 0; i < x.length; i++) out[i] = denoised[i] + keep * (x[i] - denoised[i]);
  return out;
}

/** a + k·b */
function axpy(a, k, b) {
  const out = new a.constructor(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + k * b[i];
  return out;
}

/** (a − b)/r */
function diffOver(a, b, r) {
  const out = new a.constructor(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (a[i] - b[i]) / r;
  return out;
}

function factorial(n) {
  let f = 1;
  for (let k = 2; k <= n; k++) f *= k;
  return f;
}

/** core.phi_functions: [φ_1(z), …, φ_n(z)], a series near 0, the recursion elsewhere. */
export function phiFunctions(z, n) {
  const out = [];
  if (Math.abs(z) < 1.0) {
    for (let k = 1; k <= n; k++) {
      let sum = 0;
      for (let j = 0; j < 20; j++) sum += z ** j / factorial(j + k);
      out.push(sum);
    }
    return out;
  }
  out.push(Math.expm1(z) / z);
  for (let k = 1; k < n; k++) out.push((out[k - 1] - 1.0 / factorial(k)) / z);
  return out;
}

/** core.lambdas: λ_i = −log σ_i, +∞ at σ = 0. */
export function lambdas(sigmas) {
  return sigmas.map((s) => (s > 0 ? -Math.log(s) : Infinity));
}

function checkEta(eta) {
  if (typeof eta !== "number" || !Number.isFinite(eta) || eta < 0) throw new Error(`eta must be a finite number ≥ 0, got ${eta}`);
  return eta;
}

// --- ancestral.py: DDPM, DDIM, Euler-ancestral ------------------------------------------------------------------

/** ancestral.ancestral_split: (σ_down, σ_up) of one ancestral step; σ_down² + σ_up² = σ_next². */
export function ancestralSplit(sigma, sigmaNext, eta) {
  if (sigmaNext === 0) return [0.0, 0.0];
  const ratio2 = (sigmaNext / sigma) ** 2;
  const keep = (1.0 - eta ** 2) + eta ** 2 * ratio2;
  if (keep <= 0.0) return [0.0, sigmaNext];
  return [sigmaNext * Math.sqrt(keep), sigmaNext * Math.min(1.0, eta * Math.sqrt(1.0 - ratio2))];
}

async function ancestral(denoise, x, sigmas, opts, eta) {
  eta = checkEta(eta);
  const run = new Run(denoise, x, sigmas, opts);
  for (let i = 0; i < run.steps; i++) {
    run.check();
    const sigma = run.sigmas[i];
    const denoised = await run.observe(i, x); // x̂0
    const [sigmaDown, sigmaUp] = ancestralSplit(sigma, run.sigmas[i + 1], eta);
    x = toward(denoised, x, sigmaDown / sigma); // 1. x̂0 + σ_down·ε̂
    if (sigmaUp > 0) x = axpy(x, sigmaUp, run.noise(x)); // 2. fresh noise, only when drawn in Python
  }
  return x;
}

/** DDIM, Song et al. 2021 (eq. 12 with σ_t(η) of eq. 16); η = 0 (default) is deterministic. */
export const ddim = (denoise, x, sigmas, { eta = 0.0, ...opts } = {}) => ancestral(denoise, x, sigmas, opts, eta);
/** DDPM ancestral sampling, Ho et al. 2020 Algorithm 2 (= DDIM with η = 1). */
export const ddpm = (denoise, x, sigmas, opts = {}) => ancestral(denoise, x, sigmas, opts, 1.0);
/** Euler-ancestral (k-diffusion): the DDIM update with this η. */
export const euler_ancestral = (denoise, x, sigmas, { eta = 1.0, ...opts } = {}) => ancestral(denoise, x, sigmas, opts, eta);

// --- euler.py: Karras et al. 2022, Algorithm 2 ----------------------------------------------------------------------

function churn(run, x, i, { sChurn, sTmin, sTmax, sNoise }) {
  const sigma = run.sigmas[i];
  const gamma = sTmin <= sigma && sigma <= sTmax ? Math.min(sChurn / run.steps, Math.SQRT2 - 1.0) : 0.0;
  if (gamma === 0.0) return [x, sigma];
  const sigmaHat = sigma * (1.0 + gamma);
  return [axpy(x, Math.sqrt(sigmaHat ** 2 - sigma ** 2) * sNoise, run.noise(x)), sigmaHat];
}

async function karras(denoise, x, sigmas, opts, correct) {
  const { s_churn: sChurn = 0.0, s_tmin: sTmin = 0.0, s_tmax: sTmax = Infinity, s_noise: sNoise = 1.0, ...rest } = opts;
  const run = new Run(denoise, x, sigmas, rest);
  for (let i = 0; i < run.steps; i++) {
    run.check();
    let sigma;
    [x, sigma] = churn(run, x, i, { sChurn, sTmin, sTmax, sNoise });
    const sigmaNext = run.sigmas[i + 1];
    const denoised = await run.observe(i, x, sigma);
    const xEuler = toward(denoised, x, sigmaNext / sigma); // 1. Euler step (line 7)
    if (!correct || sigmaNext === 0) {
      x = xEuler;
      continue;
    }
    const denoisedNext = await run.denoise(xEuler, sigmaNext); // 2. trapezoidal correction (lines 9–11)
    const out = new x.constructor(x.length);
    for (let k = 0; k < x.length; k++) {
      const d = (x[k] - denoised[k]) / sigma;
      const dNext = (xEuler[k] - denoisedNext[k]) / sigmaNext;
      out[k] = x[k] + (sigmaNext - sigma) * 0.5 * (d + dNext);
    }
    x = out;
  }
  return x;
}

/** Euler's method, Karras et al. 2022 Algorithm 2 without the correction (order 1). */
export const euler = (denoise, x, sigmas, opts = {}) => karras(denoise, x, sigmas, opts, false);
/** Heun's 2nd-order method, Karras et al. 2022 Algorithm 2 (2 calls per step, 1 on the last). */
export const heun = (denoise, x, sigmas, opts = {}) => karras(denoise, x, sigmas, opts, true);

// --- dpm_solver.py: DPM-Solver++ multistep, ODE and SDE (Lu et al. 2022) ------------------------------------------

/** dpm_solver.ORDER_3_MAX_H: dpmpp_3m_sde's order-3 step only where h ≤ this. */
export const ORDER_3_MAX_H = 1.0;

async function dpmSolverPP(denoise, x, sigmas, opts, { order, eta, order3MaxH = Infinity }) {
  eta = checkEta(eta);
  if (!(typeof order3MaxH === "number" && order3MaxH > 0)) throw new Error(`order3_max_h must be a number > 0, got ${order3MaxH}`);
  const run = new Run(denoise, x, sigmas, opts);
  const lam = lambdas(run.sigmas);
  let history = []; // [λ_j, x̂0_j] of the last order − 1 steps, newest last
  for (let i = 0; i < run.steps; i++) {
    run.check();
    const sigmaNext = run.sigmas[i + 1];
    const m0 = await run.observe(i, x); // x̂0 at λ_i
    if (sigmaNext === 0) {
      x = m0; // h = ∞: the first-order step lands on x̂0 exactly (lower order final)
      continue;
    }
    const h = lam[i + 1] - lam[i];
    const bigH = (1.0 + eta) * h;
    const [phi1, phi2, phi3] = phiFunctions(-bigH, 3);
    let xNext = toward(m0, x, Math.exp(-bigH)); // 1. first order (DPM-Solver++(1) = DDIM)
    let p = Math.min(order, history.length + 1, run.steps - i); // 2. multistep corrections
    if (p === 3 && h > order3MaxH) p = 2;
    if (p >= 2) {
      const [lam1, m1] = history[history.length - 1];
      const r0 = (lam[i] - lam1) / h;
      const d10 = diffOver(m0, m1, r0); // ≈ h·x̂0'(λ_i)
      if (p === 2 && (order === 2 || h > order3MaxH)) {
        xNext = axpy(xNext, 0.5 * bigH * phi1, d10); // midpoint weight ½·(1 − e^{−H})
      } else if (p === 2) {
        xNext = axpy(xNext, bigH * phi2, d10);
      } else {
        const [lam2, m2] = history[history.length - 2];
        const r1 = (lam1 - lam2) / h;
        const d11 = diffOver(m1, m2, r1);
        const d2 = diffOver(d10, d11, r0 + r1); // ≈ h²·x̂0''/2
        const d1 = axpy(d10, r0, d2); // ≈ h·x̂0'(λ_i) to second order
        xNext = axpy(axpy(xNext, bigH * phi2, d1), 2.0 * bigH * phi3, d2);
      }
    }
    if (eta > 0) xNext = axpy(xNext, sigmaNext * Math.sqrt(-Math.expm1(-2.0 * eta * h)), run.noise(x)); // 3. SDE noise
    history = history.concat([[lam[i], m0]]).slice(-(order - 1));
    x = xNext;
  }
  return x;
}

/** DPM-Solver++(2M), Lu et al. 2022 Algorithm 2 (midpoint form). */
export const dpmpp_2m = (denoise, x, sigmas, opts = {}) => dpmSolverPP(denoise, x, sigmas, opts, { order: 2, eta: 0.0 });
/** SDE-DPM-Solver++(2M), Lu et al. 2022 §5, k-diffusion's η (η = 0 is dpmpp_2m). */
export const dpmpp_2m_sde = (denoise, x, sigmas, { eta = 1.0, ...opts } = {}) =>
  dpmSolverPP(denoise, x, sigmas, opts, { order: 2, eta });
/** DPM-Solver++(3M) SDE (Lu et al. 2022, App. B), order 2 on steps with h > order3_max_h. */
export const dpmpp_3m_sde = (denoise, x, sigmas, { eta = 1.0, order3_max_h = ORDER_3_MAX_H, ...opts } = {}) =>
  dpmSolverPP(denoise, x, sigmas, opts, { order: 3, eta, order3MaxH: order3_max_h });

// --- unipc.py: UniPC, Zhao et al. 2023 (data prediction) ------------------------------------------------------------

export const UNIPC_VARIANTS = ["bh1", "bh2"];
const REFERENCE_WEIGHT = [0.5];

/** Solve A·a = b by Gaussian elimination with partial pivoting (A small and square). */
function solve(A, b) {
  const n = b.length;
  const M = A.map((row, j) => [...row, b[j]]);
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r][c]) > Math.abs(M[piv][c])) piv = r;
    [M[c], M[piv]] = [M[piv], M[c]];
    for (let r = c + 1; r < n; r++) {
      const f = M[r][c] / M[c][c];
      for (let k = c; k <= n; k++) M[r][k] -= f * M[c][k];
    }
  }
  const a = new Array(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = M[r][n];
    for (let k = r + 1; k < n; k++) s -= M[r][k] * a[k];
    a[r] = s / M[r][r];
  }
  return a;
}

/** unipc._weights: Σ_k a_k·r_k^j = b_j for j = 0 … len(rks) − 1 (the UniPC order conditions). */
function weights(rks, b) {
  const n = rks.length;
  if (n === 0) return [];
  const lhs = Array.from({ length: n }, (_, j) => rks.map((r) => r ** j));
  return solve(lhs, b.slice(0, n));
}

/** unipc._combine: x_base − B(h)·Σ_k a_k·D_k. */
function combine(base, bH, ws, diffs) {
  for (let k = 0; k < ws.length && k < diffs.length; k++) base = axpy(base, -(bH * ws[k]), diffs[k]);
  return base;
}

/** UniPC-p (Zhao et al. 2023, Algorithms 1–3); order p + 1 with the corrector. */
export async function unipc(denoise, x, sigmas, { order = 2, variant = null, corrector = true, ...opts } = {}) {
  if (![1, 2, 3].includes(order)) throw new Error(`unipc order must be 1, 2 or 3, got ${order}`);
  if (variant !== null && !UNIPC_VARIANTS.includes(variant)) throw new Error(`unknown unipc variant ${variant}`);
  const reference = variant !== null;
  const run = new Run(denoise, x, sigmas, opts);
  const lam = lambdas(run.sigmas);
  let history = []; // [λ_j, x̂0_j], newest last
  let pending = null;
  for (let i = 0; i < run.steps; i++) {
    run.check();
    const sigmaNext = run.sigmas[i + 1];
    const m0 = await run.denoise(x, run.sigmas[i]); // x̂0 at the predicted x_i
    if (pending !== null && corrector) { // 1. UniC with the value just computed
      const { base, bH, rks, b, diffs, mPrev } = pending;
      const ws = reference && rks.length === 0 ? REFERENCE_WEIGHT : weights([...rks, 1.0], b);
      x = combine(base, bH, ws, [...diffs, diffOver(m0, mPrev, 1)]);
    }
    await run.report(i, x, m0);
    history = history.concat([[lam[i], m0]]).slice(-order);
    if (sigmaNext === 0) {
      x = m0;
      pending = null;
      continue;
    }
    const h = lam[i + 1] - lam[i]; // 2. UniP-p from the corrected x_i
    const p = Math.min(order, history.length, run.steps - i);
    const phis = phiFunctions(-h, p + 1);
    const bH = variant === "bh1" ? -h : -h * phis[0];
    const b = Array.from({ length: p }, (_, k) => (-h * phis[k + 1] * factorial(k + 1)) / bH);
    const older = history.slice(0, -1).reverse().slice(0, p - 1); // history[-2::-1][:p − 1]
    const rks = older.map(([lamK]) => (lamK - lam[i]) / h);
    const diffs = older.map(([, mK], k) => diffOver(mK, m0, rks[k]));
    const base = toward(m0, x, Math.exp(-h));
    const ws = reference && rks.length === 1 ? REFERENCE_WEIGHT : weights(rks, b);
    x = combine(base, bH, ws, diffs);
    pending = { base, bH, rks, b, diffs, mPrev: m0 };
  }
  return x;
}

// --- consistency.py: Song et al. 2023, Algorithm 1 (multistep) --------------------------------------------------

/** Multistep consistency sampling: x̂0 = f(x, σ_i), then x = x̂0 + σ_{i+1}·z (the last step: x̂0 itself). */
export async function consistency(denoise, x, sigmas, opts = {}) {
  const run = new Run(denoise, x, sigmas, opts);
  for (let i = 0; i < run.steps; i++) {
    run.check();
    const denoised = await run.observe(i, x);
    const sigmaNext = run.sigmas[i + 1];
    x = sigmaNext === 0 ? denoised : axpy(denoised, sigmaNext, run.noise(x));
  }
  return x;
}

// --- the registry (sampling/__init__.py) -------------------------------------------------------------------------

const KARRAS = "Karras et al. 2022, Elucidating the Design Space (EDM), Algorithm 2";
const DPMPP = "Lu et al. 2022, DPM-Solver++";

function entry(name, run, order, stochastic, callsPerStep, paper, odeOptions = {}, model = "denoiser") {
  const nfe = (steps) => callsPerStep * (steps - 1) + 1;
  return Object.freeze({ name, run, order, stochastic, callsPerStep, paper, odeOptions, model, nfe });
}

/** Every sampler by its Python name, with the metadata of sampling.SAMPLERS. */
export const SAMPLERS = Object.freeze(Object.fromEntries([
  entry("ddpm", ddpm, 1, true, 1, "Ho et al. 2020, DDPM, Algorithm 2 (σ_t² = β̃_t)", null),
  entry("ddim", ddim, 1, false, 1, "Song et al. 2021, DDIM, eq. 12 (η = 0)"),
  entry("euler", euler, 1, false, 1, KARRAS + " without correction"),
  entry("euler_ancestral", euler_ancestral, 1, true, 1, "Karras et al. 2022 / k-diffusion, Euler ancestral", { eta: 0.0 }),
  entry("heun", heun, 2, false, 2, KARRAS),
  entry("dpmpp_2m", dpmpp_2m, 2, false, 1, DPMPP + ", Algorithm 2 (2M)"),
  entry("dpmpp_2m_sde", dpmpp_2m_sde, 2, true, 1, DPMPP + ", §5 (SDE-DPM-Solver++ 2M)", { eta: 0.0 }),
  entry("dpmpp_3m_sde", dpmpp_3m_sde, 3, true, 1, DPMPP + ", App. B (3M), SDE form", { eta: 0.0 }),
  entry("unipc", unipc, 3, false, 1, "Zhao et al. 2023, UniPC (UniP-2 + UniC)"),
  entry("consistency", consistency, 1, true, 1, "Song et al. 2023, Consistency Models, Algorithm 1 (multistep)", null, "consistency"),
].map((s) => [s.name, s])));
