// Mirrors src/unnoise/denoisers.py (DiscreteDenoiser) and diffusion.predict_x0: a network trained on the
// discrete DDPM grid, wrapped as the samplers' one model-facing type D(x, σ, cond) → x̂0 in the σ view.
//   x_t = x·sqrt(ᾱ), ᾱ = 1/(1 + σ²) of the requested σ itself; t = sigmaToT(σ) (fractional, log σ
//   interpolated); the network's ε̂ / v̂ / x̂0 is turned into x̂0 in float64, returned in x's array type.
// Also `clipped`, the Painter's projection of the guided x̂0 onto [−clip, clip] (generation.generate's run).
// Pure ES module (no DOM); tested against the Python classes by tests/test_js_engine.py.

import { sigmaToT } from "./schedules.js";

export const PREDICTION_TYPES = ["epsilon", "v_prediction", "sample"];

/**
 * σ per image as a Float64Array(B): a number is broadcast to the batch.
 * @param {number|ArrayLike<number>} sigma
 * @param {number} batch
 */
export function sigmaPerImage(sigma, batch) {
  if (typeof sigma === "number") return new Float64Array(batch).fill(sigma);
  if (sigma.length !== batch) throw new Error(`sigma must have ${batch} entries, got ${sigma.length}`);
  return Float64Array.from(sigma);
}

/** diffusion.predict_x0 for one value, everything float64. */
export function predictX0(ab, xt, output, predictionType) {
  if (predictionType === "epsilon") return (xt - Math.sqrt(1 - ab) * output) / Math.sqrt(ab);
  if (predictionType === "v_prediction") return Math.sqrt(ab) * xt - Math.sqrt(1 - ab) * output;
  return output; // "sample"
}

function checkPredictionType(predictionType, alphasCumprod) {
  if (!PREDICTION_TYPES.includes(predictionType)) {
    throw new Error(`unknown prediction type ${JSON.stringify(predictionType)}; choose from ${PREDICTION_TYPES.join(", ")}`);
  }
  if (predictionType === "epsilon" && alphasCumprod[alphasCumprod.length - 1] === 0) {
    throw new Error("epsilon prediction cannot recover x0 at zero terminal SNR; use v_prediction or sample (Lin et al. 2023, §3.2)");
  }
}

/**
 * DiscreteDenoiser around `network`.
 * @param {{alphasCumprod: Float64Array, predictionType?: string, imageSize: number,
 *   network: (xt: Float32Array, t: Float32Array, cond: any) => Promise<ArrayLike<number>>, clamp?: number|null}} o
 *   imageSize: C·H·W of one image (the batch is x.length / imageSize); clamp: clip this denoiser's own x̂0
 *   to [−clamp, clamp] (null, the default, as DiscreteDenoiser; the Painter clips *after* guidance: `clipped`).
 * @returns {(x: Float32Array|Float64Array, sigma: number|ArrayLike<number>, cond?: any) => Promise<Float32Array|Float64Array>}
 */
export function makeDenoiser({ alphasCumprod, predictionType = "epsilon", network, imageSize, clamp = null }) {
  checkPredictionType(predictionType, alphasCumprod);
  if (typeof network !== "function") throw new Error("network must be a function (xt, t, cond) → Promise of the output");
  return async function denoise(x, sigma, cond = null) {
    const size = imageSize ?? x.length;
    const batch = x.length / size;
    if (!Number.isInteger(batch) || batch < 1) throw new Error(`x has ${x.length} values, not a batch of images of ${size}`);
    const sig = sigmaPerImage(sigma, batch);
    if (!sig.every((s) => Number.isFinite(s) && s >= 0)) throw new Error("sigma must be finite and non-negative");
    const ab = sig.map((s) => 1 / (1 + s * s)); // ᾱ(σ), exact for this σ
    const t = Float32Array.from(sig, (s) => sigmaToT(s, alphasCumprod));
    const xt = new Float64Array(x.length); // DDPM-scaled input, float64 as in Python
    for (let i = 0; i < x.length; i++) xt[i] = x[i] * Math.sqrt(ab[Math.floor(i / size)]);
    const output = await network(Float32Array.from(xt), t, cond);
    if (output.length !== x.length) throw new Error(`network returned ${output.length} values, expected ${x.length}`);
    const out = new x.constructor(x.length);
    for (let i = 0; i < x.length; i++) out[i] = predictX0(ab[Math.floor(i / size)], xt[i], output[i], predictionType);
    return clamp == null ? out : clip(out, clamp);
  };
}

function clip(values, bound) {
  for (let i = 0; i < values.length; i++) values[i] = Math.min(Math.max(values[i], -bound), bound);
  return values;
}

/**
 * generation.generate's run(): x̂0 of `denoise` clipped to [−bound, bound] (null: as it is).  Images live in
 * [−1, 1], so projecting x̂0 onto that box can only shrink its error (Ho et al. 2020, clip_denoised).
 * @param {(x: any, sigma: any) => Promise<Float32Array|Float64Array>} denoise
 * @param {number|null} bound
 */
export function clipped(denoise, bound = 1.0) {
  if (bound == null) return denoise;
  return async (x, sigma) => clip(Float32Array.from(await denoise(x, sigma)), bound);
}
