// node --test tests/js/contract.test.mjs (run by tests/test_js_engine.py): what the engine promises the page
// beyond matching Python's numbers — stopping (onStep → false, AbortSignal), and one clear error per bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SAMPLERS, SamplingCancelled } from "../../src/unnoise/lab/static/engine/samplers.js";
import { alphasCumprod, sigmas } from "../../src/unnoise/lab/static/engine/schedules.js";
import { makeDenoiser } from "../../src/unnoise/lab/static/engine/denoiser.js";
import { guided } from "../../src/unnoise/lab/static/engine/guidance.js";
import { WordPiece } from "../../src/unnoise/lab/static/engine/wordpiece.js";
import { painterNoise } from "../../src/unnoise/lab/static/engine/random.js";

const ab = alphasCumprod("linear", 1000);
const grid = sigmas(ab, 6, "log_snr");

function counting() {
  const d = async (x) => {
    d.calls += 1;
    return Float32Array.from(x, (v) => v * 0.5);
  };
  d.calls = 0;
  return d;
}

for (const [name, sampler] of Object.entries(SAMPLERS)) {
  test(`${name}: onStep returning false stops with SamplingCancelled at that step`, async () => {
    const d = counting();
    const { noise, randn } = painterNoise(1, 2, 1, 4, 4);
    const seen = [];
    await assert.rejects(sampler.run(d, noise, grid, { randn, onStep: ({ index }) => (seen.push(index), index < 2) }),
      (e) => e instanceof SamplingCancelled && e.step === 2 && e.denoised.length === noise.length);
    assert.deepEqual(seen, [0, 1, 2]);
  });

  test(`${name}: an AbortSignal stops it before the next network call, with the signal's reason`, async () => {
    const d = counting();
    const { noise, randn } = painterNoise(1, 1, 1, 4, 4);
    const ctl = new AbortController();
    const reason = new Error("cancelled by the user");
    const onStep = ({ index }) => {
      if (index === 1) ctl.abort(reason);
    };
    await assert.rejects(sampler.run(d, noise, grid, { randn, onStep, signal: ctl.signal }), (e) => e === reason);
    assert.equal(d.calls, sampler.callsPerStep * 2 - (name === "heun" ? 1 : 0));
    const before = new AbortController();
    before.abort(reason);
    await assert.rejects(sampler.run(counting(), noise, grid, { randn, signal: before.signal }), (e) => e === reason);
  });
}

test("stochastic samplers without randn say so", async () => {
  const x = new Float32Array(4);
  for (const s of Object.values(SAMPLERS).filter((s) => s.stochastic)) {
    await assert.rejects(s.run(counting(), x, grid), /randn/);
  }
});

test("bad sigmas, spacings and steps are one clear error each", async () => {
  const x = new Float32Array(4);
  await assert.rejects(SAMPLERS.ddim.run(counting(), x, [3, 1]), /end in exactly 0/);
  await assert.rejects(SAMPLERS.ddim.run(counting(), x, [1, 3, 0]), /strictly descending/);
  await assert.rejects(SAMPLERS.ddim.run(counting(), x, [NaN, 0]), /finite/);
  assert.throws(() => sigmas(ab, 20, "karas"), /unknown spacing "karas"/);
  assert.deepEqual(sigmas(ab, 20, null), sigmas(ab, 20, "log_snr")); // None in Python: the default spacing
  assert.throws(() => sigmas(ab, 0, "log_snr"), /between 1 and/);
  assert.throws(() => sigmas(ab, 1e9, "karras"), /between 1 and/);
  assert.throws(() => sigmas(ab, 2.5, "karras"), /integer/);
  assert.throws(() => sigmas(ab, 4, "log_snr@-1"), /positive number/);
  assert.throws(() => sigmas(ab, 4, "log_snr@1e6"), /must lie in/);
  assert.throws(() => sigmas(ab, 1001, "trailing"), /between 1 and 1000/);
  assert.throws(() => alphasCumprod("cosin", 1000), /unknown schedule/);
});

test("bad guidance and denoiser arguments are one clear error each", async () => {
  const network = async (xt) => new Float32Array(xt.length);
  assert.throws(() => makeDenoiser({ alphasCumprod: ab, predictionType: "eps", network }), /unknown prediction type/);
  assert.throws(() => makeDenoiser({ alphasCumprod: alphasCumprod("linear+ztsnr"), predictionType: "epsilon", network }),
    /zero terminal SNR/);
  const denoiser = makeDenoiser({ alphasCumprod: ab, predictionType: "epsilon", network, imageSize: 4 });
  assert.throws(() => guided({ denoiser, cond: null, scale: NaN, takesGuidance: false }), /finite/);
  assert.throws(() => guided({ denoiser, cond: null, scale: 3, takesGuidance: true, rescale: 0.5 }), /rescale/);
  const g = guided({ denoiser, cond: null, uncond: null, scale: [1, 2, 3], takesGuidance: false, imageSize: 4 });
  await assert.rejects(g(new Float32Array(8), 1.0), /needs 2 guidance scales/);
  await assert.rejects(denoiser(new Float32Array(4), -1), /non-negative/);
});

test("a vocabulary without the special tokens, and an empty batch, are refused", () => {
  assert.throws(() => new WordPiece("[PAD]\nhello\n"), /no \[UNK\]/);
  const wp = new WordPiece("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n");
  assert.throws(() => wp.encode([]), /non-empty/);
  assert.deepEqual(Array.from(wp.encode(["hello", "Hello world"]).ids, Number), [2, 5, 3, 0, 2, 5, 1, 3]);
});

test("guided owns the x̂0 clip, as Python's guided(clip=): projected onto [−clip, clip], bad clips refused", async () => {
  const denoiser = async (x) => Float32Array.from(x, (v) => 4 * v);
  const x = Float32Array.from([-1, -0.25, 0.1, 0.9]);
  const free = await guided({ denoiser, cond: null, uncond: null, scale: 1, takesGuidance: false, imageSize: 4 })(x, 1);
  assert.ok(Math.max(...free.map(Math.abs)) > 2);
  const clippedOut = await guided({ denoiser, cond: null, uncond: null, scale: 1, takesGuidance: false, imageSize: 4, clip: 0.5 })(x, 1);
  assert.deepEqual(Array.from(clippedOut), Array.from(free, (v) => Math.min(0.5, Math.max(-0.5, v))));
  for (const bad of [0, -1, NaN, Infinity]) {
    assert.throws(() => guided({ denoiser, cond: null, scale: 1, takesGuidance: false, imageSize: 4, clip: bad }), /clip/);
  }
});
