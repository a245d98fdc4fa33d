// Node harness for tests/test_js_engine.py: generation.js paints each fixture case with the fake network of
// fake.mjs; the images and the number of network rows per step as JSON on stdout.
import { readFileSync } from "node:fs";
import { alphasCumprod } from "../../src/unnoise/lab/static/engine/schedules.js";
import { generate } from "../../src/unnoise/lab/static/engine/generation.js";
import { fakeNetwork, tensors } from "./fake.mjs";

const fixture = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = [];
for (const c of fixture.cases) {
  const size = c.imageShape.reduce((a, b) => a * b, 1);
  const inner = fakeNetwork(size);
  let calls = 0;
  const network = (xt, t, cond) => {
    calls += 1;
    return inner(xt, t, cond);
  };
  const steps = [];
  const x = await generate({
    ...c, network, alphasCumprod: alphasCumprod(c.schedule), cond: tensors(c.cond), uncond: tensors(c.uncond),
    noise: c.noise && Float32Array.from(c.noise), onStep: ({ index }) => { steps.push(index); },
  });
  out.push({ x: Array.from(x), calls, steps });
}
process.stdout.write(JSON.stringify(out));
