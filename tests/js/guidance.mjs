// Node harness for tests/test_js_engine.py: denoiser.js + guidance.js around the fake network below (the same
// closed form as the Python test's), on every case of the fixture; JSON on stdout.
import { readFileSync } from "node:fs";
import { alphasCumprod } from "../../src/unnoise/lab/static/engine/schedules.js";
import { makeDenoiser, clipped } from "../../src/unnoise/lab/static/engine/denoiser.js";
import { guided } from "../../src/unnoise/lab/static/engine/guidance.js";

const fixture = JSON.parse(readFileSync(process.argv[2], "utf8"));
const size = fixture.imageSize;

function mean(t, n) {
  const row = t.data.length / t.dims[0];
  let s = 0;
  for (let k = n * row; k < (n + 1) * row; k++) s += t.data[k];
  return [s / row, s];
}

/** out = 0.6·tanh(x_t) + 0.001·t·cos(i) + c_n, c_n from the condition rows (0 without one); float32 out. */
async function network(xt, t, cond) {
  const out = new Float32Array(xt.length);
  for (let n = 0; n < t.length; n++) {
    let c = 0;
    if (cond) {
      c = mean(cond.tokens, n)[0] + 0.1 * mean(cond.mask, n)[1] + 0.3 * cond.pooled.data[n * cond.pooled.dims[1]];
      if (cond.guidance) c += 0.05 * cond.guidance.data[n];
    }
    for (let i = 0; i < size; i++) out[n * size + i] = 0.6 * Math.tanh(xt[n * size + i]) + 0.001 * t[n] * Math.cos(i) + c;
  }
  return out;
}

function tensors(cond) {
  if (cond === null) return null;
  return Object.fromEntries(Object.entries(cond).map(([k, { data, dims, bool }]) =>
    [k, { data: bool ? Uint8Array.from(data) : Float32Array.from(data), dims }]));
}

const out = [];
for (const c of fixture.cases) {
  const denoiser = makeDenoiser({ alphasCumprod: alphasCumprod(c.schedule), predictionType: c.predictionType, network, imageSize: size });
  let d = guided({ denoiser, cond: tensors(c.cond), uncond: tensors(c.uncond), scale: c.scale, takesGuidance: c.takesGuidance,
    rescale: c.rescale, rescaleSpace: c.rescaleSpace, imageSize: size });
  if (c.clip !== null) d = clipped(d, c.clip);
  const sigma = typeof c.sigma === "number" ? Math.fround(c.sigma) : Float64Array.from(c.sigma, Math.fround);
  out.push(Array.from(await d(Float32Array.from(fixture.x), sigma)));
}
process.stdout.write(JSON.stringify(out));
