// Node harness for tests/test_js_engine.py: images.js conversions and generation.js image-to-image; JSON on stdout.
import { readFileSync } from "node:fs";
import { toRGBA, fromRGBA } from "../../src/unnoise/lab/static/engine/images.js";
import { alphasCumprod } from "../../src/unnoise/lab/static/engine/schedules.js";
import { generate, img2imgStart } from "../../src/unnoise/lab/static/engine/generation.js";
import { fakeNetwork } from "./fake.mjs";

const f = JSON.parse(readFileSync(process.argv[2], "utf8"));
const rgba = f.toRGBA.map(({ x, c, h, w }) => Array.from(toRGBA(x, c, h, w)));
const tensors = f.fromRGBA.map(({ bytes, c, h, w }) => Array.from(fromRGBA(Uint8ClampedArray.from(bytes), w, h, c)));
const img2img = [];
for (const c of f.img2img) {
  const ab = alphasCumprod("linear");
  const x0 = fromRGBA(Uint8ClampedArray.from(c.bytes), c.size, c.size, c.channels);
  const { xInit, sigmas } = img2imgStart({ alphasCumprod: ab, steps: c.steps, spacing: c.spacing, strength: c.strength, x0, seeds: c.seeds });
  const x = await generate({ network: fakeNetwork(x0.length), alphasCumprod: ab, predictionType: "v_prediction",
    imageShape: [c.channels, c.size, c.size], seeds: c.seeds, sampler: c.sampler, guidance: 1.0, xInit, sigmas });
  img2img.push({ xInit: Array.from(xInit), sigmas: Array.from(sigmas), x: Array.from(x) });
}
process.stdout.write(JSON.stringify({ rgba, tensors, img2img }));
