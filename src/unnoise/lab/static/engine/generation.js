// Mirrors src/unnoise/generation.py generate(): (network, schedule, text condition) → images, exactly as the
// Painter, the lab and training's grids sample — DiscreteDenoiser, guidance (CFG or the students' w input),
// x̂0 clipped to [−clip, clip], seed k's start noise from its own torch-compatible generator, then the sampler.
//
//   generate({network, alphasCumprod, predictionType, imageShape: [C, H, W], seeds, cond, uncond, steps, guidance,
//             guidanceRescale, sampler, spacing, takesGuidance, clip, noise, xInit, sigmas, onStep, signal,
//             samplerOptions}) → Promise of x0, a Float32Array (B·C·H·W, B = seeds.length) in about [−1, 1]
//   network(xt Float32Array, t Float32Array(rows), cond) → Promise of the ε̂ / v̂ / x̂0 output (denoiser.js);
//   cond / uncond: guidance.js conditions (a batch of 1 or B rows); guidance: one w or one per image;
//   noise: B·C·H·W unit-variance start noise instead of the seeds' draw (the draw is still made, so ancestral
//     samplers' fresh noise is unchanged); xInit + sigmas: start there (image to image); sigmas alone: that grid.
// Pure ES module (no DOM); tested against generation.generate by tests/test_js_engine.py.

import { makeDenoiser } from "./denoiser.js";
import { guided } from "./guidance.js";
import { randnLike, seededGenerators } from "./random.js";
import { SAMPLERS, checkSigmas } from "./samplers.js";
import { roundHalfEven, sigmas as sigmasOf } from "./schedules.js";

export const DEFAULT_STRENGTH = 0.6; // limits.DEFAULT_STRENGTH: how far up the noise an init picture goes


/**
 * Painter._img2img_start (SDEdit, Meng et al. 2022): the last round(steps·strength) (at least 1) noise levels of
 * the grid, and x = x0 + σ_start·noise with image k's noise from a fresh generator seeded seeds[k] (or `noise`).
 * Pass both to generate({xInit, sigmas, ...}); its sampler then draws from fresh seeded generators, as Python's.
 * @param {{alphasCumprod: Float64Array, steps: number, spacing?: string, strength?: number,
 *   x0: Float32Array, seeds: number[], noise?: Float32Array|null}} o x0: the picture, (C, H, W) in [−1, 1]
 * @returns {{xInit: Float32Array, sigmas: Float64Array}}
 */
export function img2imgStart({ alphasCumprod, steps, spacing = undefined, strength = DEFAULT_STRENGTH, x0, seeds, noise = null }) {
  if (!(strength > 0 && strength <= 1)) throw new Error(`strength must lie in (0, 1], got ${strength}`);
  const grid = sigmasOf(alphasCumprod, steps, spacing);
  const run = Math.max(1, Math.min(steps, roundHalfEven(steps * strength)));
  const sigmas = grid.slice(steps - run);
  const size = x0.length;
  noise = noise ?? randnLike(seeds.length * size, seededGenerators(seeds));
  if (noise.length !== seeds.length * size) throw new Error(`noise must hold ${seeds.length * size} values, got ${noise.length}`);
  const s = Math.fround(sigmas[0]);
  const xInit = Float32Array.from(noise, (z, i) => x0[i % size] + Math.fround(s * z));
  return { xInit, sigmas };
}

/** noise·σ_0 in float32 (torch multiplies a float32 tensor by the scalar rounded to float32). */
function scaled(noise, sigma0) {
  const s = Math.fround(sigma0);
  return Float32Array.from(noise, (v) => v * s);
}

/** generation.generate in the page; see the file header for the arguments. */
export async function generate({
  network, alphasCumprod, predictionType = "epsilon", imageShape, seeds, cond = null, uncond = null, steps = 20,
  guidance = 3.0, guidanceRescale = 0.0, sampler = "dpmpp_2m", spacing = undefined, takesGuidance = false, clip = 1.0,
  noise = null, xInit = null, sigmas = null, onStep = null, signal = null, samplerOptions = {},
}) {
  const entry = SAMPLERS[sampler];
  if (!entry) throw new Error(`unknown sampler ${JSON.stringify(sampler)}; choose from ${Object.keys(SAMPLERS).join(", ")}`);
  const imageSize = imageShape.reduce((a, b) => a * b, 1);
  const total = seeds.length * imageSize;
  const denoiser = makeDenoiser({ alphasCumprod, predictionType, network, imageSize });
  const run = guided({ denoiser, cond, uncond, scale: guidance, takesGuidance, rescale: takesGuidance ? 0.0 : guidanceRescale, imageSize, clip });
  const generators = seededGenerators(seeds); // seed k paints the same image whatever the batch (EDM)
  if (xInit !== null && sigmas === null) throw new Error("xInit needs the sigmas it starts from");
  if (noise !== null) {
    if (xInit !== null) throw new Error("noise replaces the seeds' start draw; give it or xInit, not both");
    if (noise.length !== total) throw new Error(`noise must hold ${total} values (B·C·H·W), got ${noise.length}`);
    randnLike(total, generators); // skip the seeds' draw, as Python does
    sigmas = sigmas ?? sigmasOf(alphasCumprod, steps, spacing);
    xInit = scaled(noise, checkSigmas(sigmas)[0]);
  }
  if (xInit === null) {
    sigmas = sigmas ?? sigmasOf(alphasCumprod, steps, spacing);
    xInit = scaled(randnLike(total, generators), checkSigmas(sigmas)[0]);
  }
  const randn = (n) => randnLike(n, generators);
  return entry.run(run, Float32Array.from(xInit), sigmas, { ...samplerOptions, randn, onStep, signal });
}
