// Mirrors src/unnoise/schedules.py: ᾱ_t of every named schedule (float64), the σ view
// σ = sqrt((1 − ᾱ)/ᾱ), Schedule.sigma_to_t and Schedule.sigmas for every spacing.
// Pure ES module (no DOM), tested against the Python side by tests/test_js_engine.py.

export const NAMES = ["linear", "cosine", "sigmoid"];
export const SPACINGS = ["leading", "linspace", "trailing", "karras", "log_snr", "log_snr_trailing"];
export const LAST_SIGMA_SPACING = "log_snr@";
export const ZTSNR_SUFFIX = "+ztsnr";
export const DEFAULT_SPACING = "log_snr";
const MAX_TRAIN_STEPS = 100000;
const MAX_INFERENCE_STEPS = 10000;

/** torch.linspace(start, end, steps) in float64 (its two-sided formula). */
export function linspace(start, end, steps) {
  const out = new Float64Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const step = (end - start) / (steps - 1);
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? start + step * i : end - step * (steps - i - 1);
  }
  return out;
}

/** numpy's, torch's and Python's round: half to even. */
export function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function linearBetas(numSteps, betaStart, betaEnd) {
  return linspace(betaStart, betaEnd, numSteps);
}

function sigmoidBetas(numSteps, betaStart, betaEnd) {
  // Jabri et al. 2022 (RIN); same form as diffusers' "sigmoid".
  return linspace(-6, 6, numSteps).map((v) => (1 / (1 + Math.exp(-v))) * (betaEnd - betaStart) + betaStart);
}

function cosineBetas(numSteps, s = 0.008, maxBeta = 0.999) {
  // Nichol & Dhariwal 2021, eq. 17, β capped at 0.999
  const f = (u) => Math.cos(((u + s) / (1 + s)) * Math.PI / 2) ** 2;
  const betas = new Float64Array(numSteps);
  for (let i = 0; i < numSteps; i++) {
    betas[i] = Math.min(1 - f((i + 1) / numSteps) / f(i / numSteps), maxBeta);
  }
  return betas;
}

/** Lin et al. 2023, Algorithm 1: ᾱ_T = 0 exactly, ᾱ_0 kept. */
export function rescaleZeroTerminalSnr(alphasCumprod) {
  const sqrtAb = alphasCumprod.map(Math.sqrt);
  const first = sqrtAb[0];
  const last = sqrtAb[sqrtAb.length - 1];
  const out = sqrtAb.map((v) => ((v - last) * first / (first - last)) ** 2);
  out[0] = alphasCumprod[0];
  out[out.length - 1] = 0;
  return out;
}

function parseName(name, options) {
  if (typeof name !== "string") throw new Error(`schedule name must be a string, got ${name}`);
  let base = name;
  let ztsnr = Boolean(options.zeroTerminalSnr);
  if (base.endsWith(ZTSNR_SUFFIX)) {
    base = base.slice(0, -ZTSNR_SUFFIX.length);
    ztsnr = true;
  }
  if (!NAMES.includes(base)) {
    throw new Error(`unknown schedule ${JSON.stringify(name)}; choose from ${NAMES.join(", ")} (optionally with '${ZTSNR_SUFFIX}')`);
  }
  return [base, ztsnr];
}

/**
 * ᾱ_t for t = 0 … numSteps − 1, as schedules.get(name, numSteps).alphas_cumprod.
 * @param {string} name "linear" | "cosine" | "sigmoid", optionally with "+ztsnr"
 * @param {number} numSteps
 * @param {{zeroTerminalSnr?: boolean, betaStart?: number, betaEnd?: number}} options
 * @returns {Float64Array}
 */
export function alphasCumprod(name, numSteps = 1000, options = {}) {
  const [base, ztsnr] = parseName(name, options);
  const { betaStart = 1e-4, betaEnd = 0.02 } = options;
  if (!Number.isInteger(numSteps) || numSteps < 2 || numSteps > MAX_TRAIN_STEPS) {
    throw new Error(`num_steps must be an integer between 2 and ${MAX_TRAIN_STEPS}, got ${numSteps}`);
  }
  if (!(0 < betaStart && betaStart < betaEnd && betaEnd < 1)) {
    throw new Error(`need 0 < beta_start < beta_end < 1, got ${betaStart}, ${betaEnd}`);
  }
  const betas = base === "linear" ? linearBetas(numSteps, betaStart, betaEnd)
    : base === "sigmoid" ? sigmoidBetas(numSteps, betaStart, betaEnd) : cosineBetas(numSteps);
  const out = new Float64Array(numSteps);
  let prod = 1;
  for (let i = 0; i < numSteps; i++) {
    prod *= 1 - betas[i];
    out[i] = prod;
  }
  return ztsnr ? rescaleZeroTerminalSnr(out) : out;
}

/** Schedule.inference_sigmas: σ_t for every grid step, a zero-terminal-SNR end made finite. */
export function inferenceSigmas(alphasCumprod) {
  const sig = alphasCumprod.map((ab) => Math.sqrt((1 - ab) / ab));
  const n = sig.length;
  if (!Number.isFinite(sig[n - 1])) sig[n - 1] = sig[n - 2] ** 2 / sig[n - 3];
  return sig;
}

/** First index i with sorted[i] >= value (torch.searchsorted, left side). */
function searchsorted(sorted, value) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const LOG_SIGMAS = new WeakMap(); // alphasCumprod → log σ of its grid (computed once per array)

function logSigmasOf(alphasCumprod) {
  if (!LOG_SIGMAS.has(alphasCumprod)) LOG_SIGMAS.set(alphasCumprod, inferenceSigmas(alphasCumprod).map(Math.log));
  return LOG_SIGMAS.get(alphasCumprod);
}

/**
 * Schedule.sigma_to_t: fractional t, linear in log σ between grid points, σ clamped to the grid.
 * @param {number} sigma
 * @param {Float64Array} alphasCumprod
 * @returns {number}
 */
export function sigmaToT(sigma, alphasCumprod) {
  const logSigmas = logSigmasOf(alphasCumprod);
  const n = logSigmas.length;
  const lo = Math.exp(logSigmas[0]);
  const hi = Math.exp(logSigmas[n - 1]);
  const logSigma = Math.log(Math.min(Math.max(sigma, lo), hi));
  const idx = Math.min(Math.max(searchsorted(logSigmas, logSigma), 1), n - 1);
  const a = logSigmas[idx - 1];
  const b = logSigmas[idx];
  const w = Math.min(Math.max((logSigma - a) / (b - a), 0), 1);
  return idx - 1 + w;
}

/** Schedule.t_to_sigma: σ at a fractional t, log σ interpolated; the inverse of sigmaToT. */
export function tToSigma(t, alphasCumprod) {
  const logSigmas = logSigmasOf(alphasCumprod);
  const n = logSigmas.length;
  const tc = Math.min(Math.max(t, 0), n - 1);
  const lo = Math.min(Math.floor(tc), n - 2);
  const w = tc - lo;
  return Math.exp((1 - w) * logSigmas[lo] + w * logSigmas[lo + 1]);
}

function checkSteps(steps, limit = MAX_INFERENCE_STEPS) {
  if (!Number.isInteger(steps)) throw new Error(`steps must be an integer, got ${steps}`);
  if (steps < 1 || steps > limit) throw new Error(`steps must be between 1 and ${limit}, got ${steps}`);
}

/** Schedule.timesteps: DDPM timestep spacings (Lin et al. 2023, Table 2), descending. */
export function timesteps(numTrainSteps, steps, spacing = "trailing") {
  checkSteps(steps, numTrainSteps);
  const T = numTrainSteps;
  const out = new Array(steps);
  for (let i = 0; i < steps; i++) {
    const k = steps - 1 - i; // ascending index of the descending entry i
    if (spacing === "linspace") out[i] = roundHalfEven(steps === 1 ? 0 : k * ((T - 1) / (steps - 1)));
    else if (spacing === "leading") out[i] = k * Math.floor(T / steps);
    else if (spacing === "trailing") out[i] = roundHalfEven(T - i * (T / steps)) - 1;
    else throw new Error(`unknown timestep spacing ${JSON.stringify(spacing)}; choose from leading, linspace, trailing`);
  }
  for (let i = 0; i + 1 < steps; i++) {
    if (!(out[i] > out[i + 1])) throw new Error(`${JSON.stringify(spacing)} spacing cannot place ${steps} distinct steps in ${T}`);
  }
  return out;
}

/** S of a "log_snr@S" spacing, null for a named one; an Error for anything else. */
export function lastSigma(spacing) {
  if (typeof spacing === "string" && spacing.startsWith(LAST_SIGMA_SPACING)) {
    const text = spacing.slice(LAST_SIGMA_SPACING.length);
    const value = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text) ? Number(text) : NaN;
    if (!(Number.isFinite(value) && value > 0)) {
      throw new Error(`spacing ${JSON.stringify(spacing)}: after 'log_snr@' comes the last σ, a positive number (e.g. log_snr@0.5)`);
    }
    return value;
  }
  if (!SPACINGS.includes(spacing)) {
    throw new Error(`unknown spacing ${JSON.stringify(spacing)} (choose from ${SPACINGS.join(", ")} or log_snr@S, S: the σ of the last call)`);
  }
  return null;
}

function withZero(sig) {
  const out = new Float64Array(sig.length + 1);
  out.set(sig);
  return out;
}

/**
 * Schedule.sigmas: inference noise levels, Float64Array(steps + 1), strictly descending, last exactly 0.
 * @param {Float64Array} alphasCumprod
 * @param {number} steps
 * @param {string|null} spacing a name of SPACINGS or "log_snr@S" (null or left out: DEFAULT_SPACING)
 * @param {number} rho Karras et al.'s ρ
 */
export function sigmas(alphasCumprod, steps, spacing = DEFAULT_SPACING, rho = 7.0) {
  spacing = spacing ?? DEFAULT_SPACING; // null, as Python's None: the default
  const inf = inferenceSigmas(alphasCumprod);
  const sigmaMin = inf[0];
  const sigmaMax = inf[inf.length - 1];
  const last = lastSigma(spacing);
  if (last !== null) {
    checkSteps(steps);
    if (!(sigmaMin <= last && last < sigmaMax)) {
      throw new Error(`spacing ${JSON.stringify(spacing)}: the last σ must lie in [${sigmaMin.toPrecision(4)}, ${sigmaMax.toPrecision(4)}) for this schedule`);
    }
    return withZero(linspace(Math.log(sigmaMax), Math.log(last), steps).map(Math.exp));
  }
  if (spacing === "leading" || spacing === "linspace" || spacing === "trailing") {
    return withZero(timesteps(inf.length, steps, spacing).map((t) => inf[t]));
  }
  checkSteps(steps);
  if (spacing === "karras") {
    // Karras et al. 2022, eq. 5
    const lo = sigmaMin ** (1 / rho);
    const hi = sigmaMax ** (1 / rho);
    return withZero(linspace(0, 1, steps).map((r) => (hi + r * (lo - hi)) ** rho));
  }
  // log_snr / log_snr_trailing: uniform in log-SNR; trailing drops the last of steps + 1 points
  const points = steps + (spacing === "log_snr_trailing" ? 1 : 0);
  const sig = linspace(Math.log(sigmaMax), Math.log(sigmaMin), points).subarray(0, steps).map(Math.exp);
  return withZero(sig);
}
