// Node harness for tests/test_js_engine.py: every run of the fixture through samplers.js with the analytic
// denoiser below (the same closed form as the Python test's), every step recorded, JSON on stdout.
import { readFileSync } from "node:fs";
import { SAMPLERS } from "../../src/unnoise/lab/static/engine/samplers.js";

const fixture = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { mu, s2 } = fixture;

/** x̂0 = (s²·x + σ²·μ)/(s² + σ²) + 0.05·tanh(x)·σ/(1 + σ²): Gaussian data's exact denoiser, bent a little. */
function analytic(counter) {
  return async (x, sigma) => {
    counter.calls += 1;
    const out = new x.constructor(x.length);
    const v = sigma * sigma;
    for (let i = 0; i < x.length; i++) {
      const j = i % mu.length;
      out[i] = (s2[j] * x[i] + v * mu[j]) / (s2[j] + v) + 0.05 * Math.tanh(x[i]) * sigma / (1 + v);
    }
    return out;
  };
}

const results = [];
for (const r of fixture.runs) {
  const Kind = r.dtype === "float32" ? Float32Array : Float64Array;
  const counter = { calls: 0 };
  const steps = [];
  let drawn = 0;
  const randn = (n) => {
    const z = r.noises[drawn++];
    if (!z || z.length !== n) throw new Error(`randn(${n}): the fixture has no draw ${drawn - 1} of that size`);
    return Kind.from(z);
  };
  const onStep = ({ index, total, sigma, sigmaNext, x, denoised }) => {
    steps.push({ index, total, sigma, sigmaNext, x: Array.from(x), denoised: Array.from(denoised) });
  };
  const x = await SAMPLERS[r.sampler].run(analytic(counter), Kind.from(r.x), r.sigmas, { randn, onStep, ...r.options });
  results.push({ final: Array.from(x), steps, calls: counter.calls, drawn, kind: x.constructor.name });
}
process.stdout.write(JSON.stringify(results));
