// Mirrors src/unnoise/images.py's pixel conversions for the page: to_pil (x̂ in [−1, 1] → 8-bit pixels, here
// as the RGBA bytes a canvas takes) and flatten + to_tensor (RGBA bytes of an image already at the model's size →
// (C, H, W) in [−1, 1]).  Decoding, cropping and resizing an upload is the page's job (canvas), not this module's.
// Pure ES module (no DOM); tested against images.py by tests/test_js_engine.py.

import { roundHalfEven } from "./schedules.js";

/**
 * images.to_pil for one image, as RGBA bytes: ((clamp(x, −1, 1) + 1)·127.5).round() in float32; one channel is
 * grey (R = G = B), alpha is 255.
 * @param {ArrayLike<number>} x (C, H, W) row-major, C = 1 or 3
 * @returns {Uint8ClampedArray} (H, W, 4)
 */
export function toRGBA(x, channels, height, width) {
  const plane = height * width;
  if (x.length !== channels * plane || (channels !== 1 && channels !== 3)) {
    throw new Error(`x holds ${x.length} values, not an image of ${channels}×${height}×${width} (1 or 3 channels)`);
  }
  const out = new Uint8ClampedArray(plane * 4);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.fround(Math.min(Math.max(x[(channels === 1 ? 0 : c) * plane + p], -1), 1));
      out[p * 4 + c] = roundHalfEven(Math.fround(Math.fround(v + 1) * 127.5));
    }
    out[p * 4 + 3] = 255;
  }
  return out;
}

/** One channel over opaque white: Pillow's alpha_composite onto (255, 255, 255, 255), to the nearest level. */
function overWhite(value, alpha) {
  return Math.round((value * alpha + 255 * (255 - alpha)) / 255);
}

/**
 * images.flatten (transparency onto white) + convert(mode) + to_tensor for RGBA bytes already at the model's size.
 * One channel is Pillow's "L": (R·19595 + G·38470 + B·7471 + 0x8000) >> 16 (ITU-R 601-2 luma).
 * @param {ArrayLike<number>} rgba (H, W, 4) bytes, e.g. ImageData.data
 * @returns {Float32Array} (C, H, W) in [−1, 1]
 */
export function fromRGBA(rgba, width, height, channels) {
  const plane = width * height;
  if (rgba.length !== plane * 4) throw new Error(`${rgba.length} bytes are not a ${width}×${height} RGBA image`);
  const out = new Float32Array(channels * plane);
  for (let p = 0; p < plane; p++) {
    const a = rgba[p * 4 + 3];
    const [r, g, b] = [0, 1, 2].map((c) => overWhite(rgba[p * 4 + c], a));
    const values = channels === 1 ? [(r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16] : [r, g, b];
    values.forEach((v, c) => {
      out[c * plane + p] = Math.fround(v / 127.5) - 1.0;
    });
  }
  return out;
}
