// Pillow's Image.resize(size, Image.Resampling.LANCZOS) on 8-bit pictures, as libImaging/Resample.c does it:
// a separable pass per axis (horizontal, then vertical), Lanczos-3 weights stretched by the scale when shrinking,
// normalised, held in 22-bit fixed point and rounded back to bytes after each pass.  The page shrinks uploads
// and shows "the picture as the model sees it" with it, so both are the server's bytes (a canvas's own
// smoothing is 3–4 grey levels away from them).

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

function sinc(x) {
  if (x === 0) return 1;
  const y = x * Math.PI;
  return Math.sin(y) / y;
}

const lanczos = (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0);

// precompute_coeffs + normalize_coeffs_8bpc: per output pixel, its first input pixel, how many, and the weights.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize, filterscale = Math.max(scale, 1), support = 3 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1, bounds = new Int32Array(outSize * 2), kk = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale, ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = lanczos((x + xmin - center + 0.5) * ss);
      kk[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? kk[xx * ksize + x] / ww : kk[xx * ksize + x];
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * ONE : 0.5 + k * ONE); // (int) in C: toward zero
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

const clip8 = (ss) => (ss >= ONE * 256 ? 255 : ss <= 0 ? 0 : Math.floor(ss / ONE));

// One pass along an axis: `along` pixels per line, `lines` lines; stride between neighbours along / across.
function pass(src, dst, { inSize, outSize, lines, channels, inStep, inLine, outStep, outLine }) {
  const { ksize, bounds, kk } = coefficients(inSize, outSize);
  for (let line = 0; line < lines; line++) {
    for (let xx = 0; xx < outSize; xx++) {
      const xmin = bounds[2 * xx], xmax = bounds[2 * xx + 1], k0 = xx * ksize;
      for (let c = 0; c < channels; c++) {
        let ss = ONE / 2;
        for (let x = 0; x < xmax; x++) ss += src[line * inLine + (x + xmin) * inStep + c] * kk[k0 + x];
        dst[line * outLine + xx * outStep + c] = clip8(ss);
      }
    }
  }
}

/**
 * @param {Uint8Array} src (H, W, channels) bytes
 * @returns {Uint8Array} (outH, outW, channels) bytes, as Image.resize((outW, outH), LANCZOS)
 */
export function lanczosResize(src, width, height, channels, outW, outH) {
  const horizontal = (data, h) => {
    const out = new Uint8Array(h * outW * channels);
    pass(data, out, { inSize: width, outSize: outW, lines: h, channels, inStep: channels, inLine: width * channels,
      outStep: channels, outLine: outW * channels });
    return out;
  };
  const vertical = (data, w) => {
    const out = new Uint8Array(outH * w * channels);
    pass(data, out, { inSize: height, outSize: outH, lines: w, channels, inStep: w * channels, inLine: channels,
      outStep: w * channels, outLine: channels });
    return out;
  };
  // Pillow (≥ 10.4, ImagingResampleInner): the vertical pass goes first when the height shrinks by more than
  // twice as many pixels as the width does; the order changes the bytes (each pass rounds)
  const verticalFirst = height - outH > 0 && height - outH > (width - outW) * 2;
  let data = src;
  if (verticalFirst) {
    if (outH !== height) data = vertical(data, width);
    if (outW !== width) data = horizontal(data, outH);
  } else {
    if (outW !== width) data = horizontal(data, height);
    if (outH !== height) data = vertical(data, outW);
  }
  return data === src ? Uint8Array.from(src) : data;
}
