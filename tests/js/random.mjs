// Node harness for tests/test_js_engine.py: random.js draws for the fixture's seeds and sizes, JSON on stdout.
import { readFileSync } from "node:fs";
import { TorchGenerator, painterNoise } from "../../src/unnoise/lab/static/engine/random.js";

const fixture = JSON.parse(readFileSync(process.argv[2], "utf8"));
const single = fixture.single.map(([seed, n]) => Array.from(new TorchGenerator(BigInt(seed)).randn(n)));
const sequences = fixture.sequences.map(([seed, sizes]) => {
  const g = new TorchGenerator(seed);
  return sizes.map((n) => Array.from(g.randn(n)));
});
const painter = fixture.painter.map(([seed, k, c, h, w, draws]) => {
  const { noise, randn } = painterNoise(seed, k, c, h, w);
  return [Array.from(noise), ...Array.from({ length: draws }, () => Array.from(randn(k * c * h * w)))];
});
process.stdout.write(JSON.stringify({ single, sequences, painter }));
