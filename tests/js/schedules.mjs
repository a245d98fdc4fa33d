// Node harness for tests/test_js_engine.py: schedules.js on the fixture's cases, results as JSON on stdout.
import { readFileSync } from "node:fs";
import { alphasCumprod, sigmaToT, sigmas } from "../../src/unnoise/lab/static/engine/schedules.js";

const fixture = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = fixture.cases.map(({ name, numSteps, steps, spacing, probe }) => {
  const ab = alphasCumprod(name, numSteps);
  const result = { alphasCumprod: Array.from(ab), sigmas: {}, t: probe.map((s) => sigmaToT(s, ab)) };
  for (const n of steps) {
    result.sigmas[n] = {};
    for (const sp of spacing) {
      try {
        result.sigmas[n][sp] = Array.from(sigmas(ab, n, sp));
      } catch (e) {
        result.sigmas[n][sp] = { error: String(e.message) };
      }
    }
  }
  return result;
});
process.stdout.write(JSON.stringify(out));
