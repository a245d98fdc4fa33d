// unnoise lab, static mode: the pictures the page works on, decoded and checked in the page itself.
//
// The same rules as the server's lab/uploads.py: an upload is untrusted bytes, so it must be small (5 MB),
// one of the formats a browser shows (PNG, JPEG, GIF, WebP, BMP, told by its first bytes, not its name),
// and modest in pixels *before* it is decoded (a few kilobytes of PNG can declare 20 000 × 20 000 pixels).
// What survives is flattened onto white, shrunk so its longer side is at most the lab's working size, and
// kept in memory under a content hash, as the server's PictureStore keeps it.

import { toRGBA } from "./engine/images.js";
import { roundHalfEven } from "./engine/schedules.js";
import { lanczosResize } from "./resample.js";

export const ALLOWED = "PNG, JPEG, GIF, WebP or BMP";

/** A refused upload: its message is the server's for the same bytes. */
export class UploadRefused extends Error {}

/** @typedef {{id: string, width: number, height: number, pixels: Uint8Array}} Picture  pixels: (H, W, 3) RGB */

// --- what the first bytes say: the format and the size it declares ------------------------------------------
const be16 = (b, i) => (b[i] << 8) | b[i + 1];
const le16 = (b, i) => b[i] | (b[i + 1] << 8);
const be32 = (b, i) => ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];
const le32 = (b, i) => b[i] + (b[i + 1] << 8) + (b[i + 2] << 16) + ((b[i + 3] << 24) >>> 0);
const text = (b, i, n) => String.fromCharCode(...b.subarray(i, i + n));

function jpegSize(b) {
  for (let i = 2; i + 9 < b.length;) {
    if (b[i] !== 0xff) { i++; continue; }
    const marker = b[i + 1];
    if (marker === 0xff) { i++; continue; }
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) return [be16(b, i + 7), be16(b, i + 5)];
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) { i += 2; continue; }
    i += 2 + be16(b, i + 2);
  }
  return null;
}

function webpSize(b) {
  const chunk = text(b, 12, 4);
  if (chunk === "VP8 ") return [le16(b, 26) & 0x3fff, le16(b, 28) & 0x3fff];
  if (chunk === "VP8L") return [1 + (b[21] | ((b[22] & 0x3f) << 8)), 1 + ((b[22] >> 6) | (b[23] << 2) | ((b[24] & 0xf) << 10))];
  if (chunk === "VP8X") return [1 + (b[24] | (b[25] << 8) | (b[26] << 16)), 1 + (b[27] | (b[28] << 8) | (b[29] << 16))];
  return null;
}

/** The format of a file's first bytes and the [width, height] it declares (null: unknown). */
export function sniff(b) {
  if (b.length >= 24 && be32(b, 0) === 0x89504e47 && be32(b, 4) === 0x0d0a1a0a) return { format: "PNG", size: [be32(b, 16), be32(b, 20)] };
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return { format: "JPEG", size: jpegSize(b) };
  if (b.length >= 10 && /^GIF8[79]a$/.test(text(b, 0, 6))) return { format: "GIF", size: [le16(b, 6), le16(b, 8)] };
  if (b.length >= 30 && text(b, 0, 4) === "RIFF" && text(b, 8, 4) === "WEBP") return { format: "WEBP", size: webpSize(b) };
  if (b.length >= 26 && text(b, 0, 2) === "BM") {
    const core = le32(b, 14) === 12; // OS/2 1.x headers carry 16-bit sizes
    return { format: "BMP", size: core ? [le16(b, 18), le16(b, 20)] : [le32(b, 18) | 0, Math.abs(le32(b, 22) | 0)] };
  }
  if (b.length >= 4 && (text(b, 0, 4) === "II*\0" || text(b, 0, 4) === "MM\0*")) return { format: "TIFF", size: null };
  if (b.length >= 4 && text(b, 0, 4) === "8BPS") return { format: "PSD", size: null };
  if (b.length >= 4 && be32(b, 0) === 0x00000100) return { format: "ICO", size: null };
  return null;
}

// --- an upload: checked, decoded, flattened, shrunk --------------------------------------------------------
/**
 * @param {Blob} file the untrusted bytes
 * @param {{maxBytes: number, maxPixels: number, maxSide: number}} limits the lab's (LabConfig's)
 * @returns {Promise<{width: number, height: number, pixels: Uint8Array}>}
 */
export async function decodeUpload(file, { maxBytes, maxPixels, maxSide }) {
  if (!file || file.size === 0) throw new UploadRefused(`the upload is empty: send the bytes of a ${ALLOWED} image`);
  if (file.size > maxBytes) throw new UploadRefused(`upload too large: the limit is ${maxBytes / 2 ** 20} MB`);
  const head = new Uint8Array(await file.slice(0, 65536).arrayBuffer());
  const found = sniff(head);
  if (!found) throw new UploadRefused("not an image: cannot identify the uploaded bytes as any image format");
  if (!["PNG", "JPEG", "GIF", "WEBP", "BMP"].includes(found.format)) {
    throw new UploadRefused(`${found.format} images are not accepted; use ${ALLOWED}`);
  }
  if (found.size) {
    const [w, h] = found.size;
    if (w * h > maxPixels) {
      throw new UploadRefused(`image too large: ${w}×${h} pixels (the limit is ${maxPixels.toLocaleString("en-US")} pixels)`);
    }
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (e) {
    throw new UploadRefused(`broken image: ${e.name}: ${e.message}`);
  }
  try {
    if (bitmap.width * bitmap.height > maxPixels) { // a header the sniffer could not read, or one that lied
      throw new UploadRefused(`image too large: ${bitmap.width}×${bitmap.height} pixels (the limit is ${maxPixels.toLocaleString("en-US")} pixels)`);
    }
    // images.limit_size: shrink (never enlarge) so the longer side is at most maxSide, with Pillow's LANCZOS
    const { width: w, height: h } = bitmap, pixels = rgbOf(bitmap, w, h), scale = maxSide / Math.max(w, h);
    if (scale >= 1) return { width: w, height: h, pixels };
    const width = Math.max(1, roundHalfEven(w * scale)), height = Math.max(1, roundHalfEven(h * scale));
    return { width, height, pixels: lanczosResize(pixels, w, h, 3, width, height) };
  } finally {
    bitmap.close();
  }
}

/** A PNG from the site (the cat), exact pixels. */
export async function fetchPicture(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`the site has no ${url}: ${r.status} ${r.statusText}`);
  const bitmap = await createImageBitmap(await r.blob(), { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  try { return { width: bitmap.width, height: bitmap.height, pixels: rgbOf(bitmap, bitmap.width, bitmap.height) }; }
  finally { bitmap.close(); }
}

function canvas2d(width, height) {
  const c = document.createElement("canvas");
  c.width = width; c.height = height;
  return [c, c.getContext("2d", { willReadFrequently: true })];
}

// A decoded image's pixels drawn onto white at its own size (transparency composited as a page shows it, as
// images.flatten does): (H, W, 3) RGB.
function rgbOf(source, width, height) {
  const [, g] = canvas2d(width, height);
  g.fillStyle = "#fff"; g.fillRect(0, 0, width, height);
  g.drawImage(source, 0, 0);
  const rgba = g.getImageData(0, 0, width, height).data, out = new Uint8Array(width * height * 3);
  for (let p = 0, q = 0; q < rgba.length; q += 4) { out[p++] = rgba[q]; out[p++] = rgba[q + 1]; out[p++] = rgba[q + 2]; }
  return out;
}

/**
 * The picture as a model sees it (images.fit: the centre square, grey as PIL's "L" first, resized with Pillow's
 * LANCZOS), as the Painter's image to image starts from it.
 * @returns {Float32Array} (C, size, size) in [−1, 1]
 */
export function seenBy(picture, size, channels) {
  const { width, height, pixels } = picture, side = Math.min(width, height);
  const left = Math.floor((width - side) / 2), top = Math.floor((height - side) / 2);
  const square = new Uint8Array(side * side * channels);
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const p = 3 * ((top + y) * width + left + x), q = channels * (y * side + x);
      if (channels === 1) square[q] = (pixels[p] * 19595 + pixels[p + 1] * 38470 + pixels[p + 2] * 7471 + 0x8000) >> 16;
      else { square[q] = pixels[p]; square[q + 1] = pixels[p + 1]; square[q + 2] = pixels[p + 2]; }
    }
  }
  const seen = lanczosResize(square, side, side, channels, size, size), n = size * size, out = new Float32Array(channels * n);
  for (let i = 0; i < n; i++) for (let c = 0; c < channels; c++) out[c * n + i] = seen[channels * i + c] / 127.5 - 1;
  return out;
}

// --- pictures for the page: (C, H, W) numbers in [−1, 1] → PNG data URLs, as the server's png_data_url ------
let shared = null;
/**
 * @param {ArrayLike<number>} x (C, H, W), C = 1 (grey) or 3; values outside [−1, 1] clipped, as a display must
 * @returns {string} "data:image/png;base64,…" of images.to_pil's bytes (engine/images.js toRGBA)
 */
export function pngDataUrl(x, width, height) {
  if (!shared || shared[0].width !== width || shared[0].height !== height) shared = canvas2d(width, height);
  const [c, g] = shared;
  g.putImageData(new ImageData(toRGBA(x, x.length / (width * height), height, width), width, height), 0, 0);
  return c.toDataURL("image/png");
}

// --- the store: the last uploads by content hash (least recently used dropped) ---------------------------
function contentId(width, height, pixels) {
  // two 32-bit FNV-1a-style lanes with different seeds → 20 hex digits (the server's id pattern)
  let a = 0x811c9dc5 ^ width, b = 0x01000193 ^ height;
  for (let i = 0; i < pixels.length; i++) {
    a = Math.imul(a ^ pixels[i], 0x01000193);
    b = Math.imul(b ^ pixels[i], 0x5bd1e995) ^ (b >>> 15);
  }
  const hex = (v) => (v >>> 0).toString(16).padStart(8, "0");
  return (hex(a) + hex(b) + hex(Math.imul(a ^ b, 0x9e3779b1))).slice(0, 20);
}

export class PictureStore {
  constructor(capacity, cat) { Object.assign(this, { capacity, cat, items: new Map() }); }

  /** @returns {Picture} */
  add({ width, height, pixels }) {
    const id = contentId(width, height, pixels), picture = { id, width, height, pixels };
    this.items.delete(id);
    this.items.set(id, picture);
    while (this.items.size > this.capacity) this.items.delete(this.items.keys().next().value);
    return picture;
  }

  /** @returns {Picture | null} */
  get(id) {
    if (id === "cat") return this.cat;
    const picture = this.items.get(id);
    if (picture) { this.items.delete(id); this.items.set(id, picture); }
    return picture || null;
  }
}

// --- part 7's measures, as lab/sweeps.py compare_to_reference -------------------------------------------
// Each pixel replaced by the mean of its block of an about 8 × 8 grid (edge blocks: their pixels only).
function coarse(x, width, height, cells = 8) {
  const k = Math.max(1, Math.floor(Math.min(width, height) / cells)), n = width * height, out = new Float64Array(x.length);
  for (let c = 0; c < x.length / n; c++) {
    for (let by = 0; by < height; by += k) {
      for (let bx = 0; bx < width; bx += k) {
        let sum = 0, count = 0;
        for (let y = by; y < Math.min(by + k, height); y++) for (let xx = bx; xx < Math.min(bx + k, width); xx++) { sum += x[c * n + y * width + xx]; count++; }
        for (let y = by; y < Math.min(by + k, height); y++) for (let xx = bx; xx < Math.min(bx + k, width); xx++) out[c * n + y * width + xx] = sum / count;
      }
    }
  }
  return out;
}

const rmsOf = (f, length) => { let s = 0; for (let i = 0; i < length; i++) { const v = f(i); s += v * v; } return Math.sqrt(s / length); };
const clip = (x) => Float64Array.from(x, (v) => Math.max(-1, Math.min(1, v)));

/** {shape_error, detail_ratio, error} of a few-step picture against the many-step one, (C, H, W) each. */
export function compareToReference(picture, reference, width, height) {
  const x = clip(picture), r = clip(reference), cx = coarse(x, width, height), cr = coarse(r, width, height), n = x.length;
  const refDetail = rmsOf((i) => r[i] - cr[i], n);
  const out = {
    shape_error: rmsOf((i) => cx[i] - cr[i], n),
    detail_ratio: refDetail > 1e-9 ? rmsOf((i) => x[i] - cx[i], n) / refDetail : 1,
    error: rmsOf((i) => x[i] - r[i], n),
  };
  for (const k of Object.keys(out)) if (!Number.isFinite(out[k])) out[k] = 0;
  return out;
}
