// The fake network of tests/test_js_engine.py (_fake_network), written the same way in both languages.

function rowSum(t, n) {
  const row = t.data.length / t.dims[0];
  let s = 0;
  for (let k = n * row; k < (n + 1) * row; k++) s += t.data[k];
  return [s / row, s];
}

/** out = 0.6·tanh(x_t) + 0.001·t·cos(i) + c_n with c_n = mean(tokens_n) + 0.1·Σ mask_n + 0.3·pooled_n[0]
 * (+ 0.05·guidance_n), 0 without a condition; float32 out. */
export function fakeNetwork(size) {
  return async (xt, t, cond) => {
    const out = new Float32Array(xt.length);
    for (let n = 0; n < t.length; n++) {
      let c = 0;
      if (cond) {
        c = rowSum(cond.tokens, n)[0] + 0.1 * rowSum(cond.mask, n)[1] + 0.3 * cond.pooled.data[n * cond.pooled.dims[1]];
        if (cond.guidance) c += 0.05 * cond.guidance.data[n];
      }
      for (let i = 0; i < size; i++) out[n * size + i] = 0.6 * Math.tanh(xt[n * size + i]) + 0.001 * t[n] * Math.cos(i) + c;
    }
    return out;
  };
}

/** A fixture's condition ({key: {data, dims, bool}}) as guidance.js tensors. */
export function tensors(cond) {
  if (cond === null) return null;
  return Object.fromEntries(Object.entries(cond).map(([k, { data, dims, bool }]) =>
    [k, { data: bool ? Uint8Array.from(data) : Float32Array.from(data), dims }]));
}
