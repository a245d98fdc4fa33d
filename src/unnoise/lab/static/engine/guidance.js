// Mirrors src/unnoise/conditioning/guidance.py: guided() picks classifier-free guidance (Ho & Salimans 2022;
// cond and uncond as one batch of 2B, optional guidance rescale of Lin et al. 2023) or, for a
// guidance-distilled student whose config declares a guidance input, w as a network input (one pass of B).
//
//   guided({denoiser, cond, uncond, scale, takesGuidance, rescale = 0, rescaleSpace = "x0", imageSize, clip = null})
//     → async (x, sigma) → x̂0 (x's array type)
//   denoiser(x, sigma, cond) → Promise of x̂0: denoiser.js makeDenoiser (sigma a number or one per row);
//   cond, uncond: null, a tensor {data: TypedArray, dims: number[]} or an object of such tensors
//     ({tokens: (B|1, L, D) Float32Array, mask: (B|1, L) Uint8Array (0/1, a bool mask), pooled: (B|1, D)});
//     a batch of 1 is broadcast, and token sequences / masks of different L are right-padded with zeros, so a
//     prompt and a shorter negative prompt share one batch (guidance.batch_conditions);
//   scale: w, one number or one per image (the lab's dial; per-image scales are float32 as in Python);
//   takesGuidance: the model's UNetConfig.guidance_embedding: the network gets cond.guidance = {data:
//     Float32Array(B) of w, dims: [B]} and no uncond pass (then rescale must be 0);
//   rescale φ ∈ [0, 1] and rescaleSpace "x0" | "eps" | "v": guidance rescale as CFGDenoiser._rescaled;
//   imageSize: C·H·W of one image (the batch is x.length / imageSize);
//   clip: the guided x̂0 projected onto [−clip, clip] (denoiser.js `clipped`, Python's Clipped; the Painter's 1.0),
//     null: as it is.

import { clipped, sigmaPerImage } from "./denoiser.js";

export const RESCALE_SPACES = ["x0", "eps", "v"];

function checkNumber(name, value, low = -Infinity, high = Infinity) {
  if (typeof value !== "number" || !Number.isFinite(value)) throw new Error(`${name} must be a finite number, got ${value}`);
  if (!(low <= value && value <= high)) throw new Error(`${name} must lie in [${low}, ${high}], got ${value}`);
  return value;
}

/** guidance._scales: one number, or one per image as a Float32Array. */
function scales(scale) {
  if (typeof scale === "number") return checkNumber("guidance scale", scale);
  const out = Float32Array.from(scale ?? [], Number);
  if (out.length === 0 || !out.every(Number.isFinite)) {
    throw new Error(`guidance scales must be a number or a non-empty list of finite numbers, got ${scale}`);
  }
  return out;
}

/** The scale of image b. */
function scaleOf(scale, b) {
  return typeof scale === "number" ? scale : scale[b];
}

function checkPerImage(scale, batch) {
  if (typeof scale !== "number" && scale.length !== batch) {
    throw new Error(`a batch of ${batch} images needs ${batch} guidance scales, got ${scale.length}`);
  }
}

/** A tensor's rows broadcast to `batch` (a batch of 1 repeated). */
function expandRows(t, batch) {
  const rows = t.dims[0];
  if (t.dims.length === 0 || (rows !== 1 && rows !== batch)) {
    throw new Error(`condition has shape (${t.dims}); need a batch of 1 or ${batch}`);
  }
  if (rows === batch) return t;
  const row = t.data.length;
  const data = new t.data.constructor(row * batch);
  for (let b = 0; b < batch; b++) data.set(t.data, b * row);
  return { ...t, data, dims: [batch, ...t.dims.slice(1)] };
}

/** Right-pad dim 1 of a (B, L, …) tensor with zeros to `length`. */
function padLength(t, length) {
  const [batch, len, ...rest] = t.dims;
  if (len === length) return t;
  const inner = rest.reduce((a, b) => a * b, 1);
  const data = new t.data.constructor(batch * length * inner);
  for (let b = 0; b < batch; b++) data.set(t.data.subarray(b * len * inner, (b + 1) * len * inner), b * length * inner);
  return { ...t, data, dims: [batch, length, ...rest] };
}

/** guidance._batch_one: cat([a, b]) along dim 0 after broadcasting and padding. */
function batchOne(a, b, batch, key) {
  a = expandRows(a, batch);
  b = expandRows(b, batch);
  if (a.dims.length !== b.dims.length || a.data.constructor !== b.data.constructor) {
    throw new Error(`cond and uncond ${key} differ: (${a.dims}) vs (${b.dims})`);
  }
  const isSequence = a.dims.length >= 3 || (a.dims.length === 2 && a.data instanceof Uint8Array);
  if (isSequence && a.dims.slice(2).join() === b.dims.slice(2).join() && a.dims[1] !== b.dims[1]) {
    const length = Math.max(a.dims[1], b.dims[1]);
    a = padLength(a, length);
    b = padLength(b, length);
  }
  if (a.dims.join() !== b.dims.join()) throw new Error(`cond and uncond ${key} shapes differ: (${a.dims}) vs (${b.dims})`);
  const data = new a.data.constructor(a.data.length * 2);
  data.set(a.data);
  data.set(b.data, a.data.length);
  return { ...a, data, dims: [2 * batch, ...a.dims.slice(1)] };
}

const isTensor = (c) => c !== null && typeof c === "object" && "data" in c && "dims" in c;

/** A condition (null, a tensor or an object of tensors) with its rows broadcast to `batch`. */
function expandCondition(cond, batch) {
  if (cond == null) return cond;
  if (isTensor(cond)) return expandRows(cond, batch);
  return Object.fromEntries(Object.entries(cond).map(([k, t]) => [k, expandRows(t, batch)]));
}

/** guidance.batch_conditions: one batch of 2·batch conditions, conditional first. */
export function batchConditions(cond, uncond, batch) {
  if (cond == null && uncond == null) return null;
  if (!isTensor(cond) && !isTensor(uncond) && cond && uncond) {
    const keys = Object.keys(cond).sort();
    if (keys.join() !== Object.keys(uncond).sort().join()) throw new Error(`cond and uncond keys differ: ${keys} vs ${Object.keys(uncond).sort()}`);
    return Object.fromEntries(Object.keys(cond).map((k) => [k, batchOne(cond[k], uncond[k], batch, JSON.stringify(k))]));
  }
  return batchOne(cond, uncond, batch, "");
}

function concat(a, b) {
  const out = new a.constructor(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** CFGDenoiser: both passes in one batch of 2B (two passes if exactly one condition is null). */
function cfg({ denoiser, cond, uncond, scale, rescale, rescaleSpace, imageSize }) {
  return async (x, sigma) => {
    const size = imageSize ?? x.length;
    const batch = x.length / size;
    // one pass: w = 1 is the conditional prediction, w = 0 the unconditional one (a batch of 1 broadcast to B)
    if (scale === 1.0) return denoiser(x, sigma, expandCondition(cond, batch));
    if (scale === 0.0 && rescale === 0.0) return denoiser(x, sigma, expandCondition(uncond, batch));
    checkPerImage(scale, batch);
    const sig = sigmaPerImage(sigma, batch);
    let condX0;
    let uncondX0;
    if ((cond == null) !== (uncond == null)) {
      condX0 = await denoiser(x, sig, cond);
      uncondX0 = await denoiser(x, sig, uncond);
    } else {
      const both = await denoiser(concat(x, x), concat(sig, sig), batchConditions(cond, uncond, batch)); // (2B, …)
      condX0 = both.subarray(0, x.length);
      uncondX0 = both.subarray(x.length);
    }
    let out = new x.constructor(x.length);
    for (let i = 0; i < x.length; i++) out[i] = uncondX0[i] + scaleOf(scale, Math.floor(i / size)) * (condX0[i] - uncondX0[i]);
    if (rescale > 0.0) out = rescaled(x, sig, condX0, out, { rescale, rescaleSpace, size });
    return out;
  };
}

/** Population standard deviation of values[from, to). */
function std(values, from, to) {
  let mean = 0;
  for (let i = from; i < to; i++) mean += values[i];
  mean /= to - from;
  let sq = 0;
  for (let i = from; i < to; i++) sq += (values[i] - mean) ** 2;
  return Math.sqrt(sq / (to - from));
}

/** CFGDenoiser._rescaled: scale x̂0's deviation from the space's centre to the conditional one's spread. */
function rescaled(x, sig, condX0, guidedX0, { rescale, rescaleSpace, size }) {
  const out = new x.constructor(x.length);
  const condDev = new Float64Array(x.length);
  const guidedDev = new Float64Array(x.length);
  const center = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const s = Math.fround(sig[Math.floor(i / size)]);
    center[i] = rescaleSpace === "x0" ? 0 : rescaleSpace === "eps" ? x[i] : x[i] / (1.0 + s * s);
    condDev[i] = condX0[i] - center[i];
    guidedDev[i] = guidedX0[i] - center[i];
  }
  for (let b = 0; b * size < x.length; b++) {
    const stdCond = std(condDev, b * size, (b + 1) * size);
    const stdGuided = std(guidedDev, b * size, (b + 1) * size);
    const ratio = stdGuided > 0 ? stdCond / stdGuided : 1.0;
    for (let i = b * size; i < (b + 1) * size; i++) {
      out[i] = center[i] + (rescale * (guidedDev[i] * ratio) + (1.0 - rescale) * guidedDev[i]);
    }
  }
  return out;
}

/** GuidanceInput: w as the network input cond.guidance, one pass of B rows. */
function guidanceInput({ denoiser, cond, scale, imageSize }) {
  return async (x, sigma) => {
    const batch = x.length / (imageSize ?? x.length);
    checkPerImage(scale, batch);
    const w = Float32Array.from({ length: batch }, (_, b) => scaleOf(scale, b));
    return denoiser(x, sigma, { ...expandCondition(cond ?? {}, batch), guidance: { data: w, dims: [batch] } });
  };
}

/**
 * The guided denoiser (x, σ) → x̂0: w as an input where the model takes one, classifier-free guidance otherwise.
 * @param {{denoiser: Function, cond: any, uncond?: any, scale: number|ArrayLike<number>, takesGuidance: boolean,
 *   rescale?: number, rescaleSpace?: string, imageSize?: number, clip?: number|null}} o
 */
export function guided({ denoiser, cond, uncond = null, scale, takesGuidance, rescale = 0.0, rescaleSpace = "x0", imageSize, clip = null }) {
  if (clip != null) checkNumber("clip", clip, 0.0, Infinity);
  if (clip === 0) throw new Error("clip must be positive (null: no clipping), got 0");
  return clip == null ? unclipped() : clipped(unclipped(), clip);

  function unclipped() {
    if (typeof denoiser !== "function") throw new Error("denoiser must be a function (x, sigma, cond)");
    const w = scales(scale);
    if (takesGuidance) {
      if (rescale) throw new Error("guidance rescale needs classifier-free guidance; this model takes w as an input");
      return guidanceInput({ denoiser, cond, scale: w, imageSize });
    }
    checkNumber("guidance rescale", rescale, 0.0, 1.0);
    if (!RESCALE_SPACES.includes(rescaleSpace)) throw new Error(`guidance rescale space must be one of ${RESCALE_SPACES.join(", ")}, got ${rescaleSpace}`);
    return cfg({ denoiser, cond, uncond, scale: w, rescale, rescaleSpace, imageSize });
  }
}
