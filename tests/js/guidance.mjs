// Node harness for tests/test_js_engine.py: denoiser.js + guidance.js around the fake network of fake.mjs (the
// same closed form as the Python test's), on every case of the fixture; JSON on stdout.
import { readFileSync } from "node:fs";
import { alphasCumprod } from "../../src/unnoise/lab/static/engine/schedules.js";
import { makeDenoiser, clipped } from "../../src/unnoise/lab/static/engine/denoiser.js";
import { guided } from "../../src/unnoise/lab/static/engine/guidance.js";
import { fakeNetwork, tensors } from "./fake.mjs";

const fixture = JSON.parse(readFileSync(process.argv[2], "utf8"));
const size = fixture.imageSize;

const network = fakeNetwork(size);

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
