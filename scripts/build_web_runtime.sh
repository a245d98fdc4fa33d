#!/usr/bin/env bash
# Rebuild the ONNX Runtime Web files the static lab needs (src/unnoise/lab/static/vendor/ort/).
#
#   bash scripts/build_web_runtime.sh
#
# `npm ci` installs exactly the onnxruntime-web pinned by scripts/web_runtime/package-lock.json into a
# throw-away folder; only the WebAssembly-only ES module bundle and its threaded SIMD runtime are copied
# (the WebGPU/JSEP bundle is left out: ~2x the weight for models this small), plus the licence.  The 14.8 MB
# .wasm ships gzipped (3.8 MB; `gzip -9 -n`: no name or time, the same bytes every build): runtime.js inflates it
# with the browser's DecompressionStream and hands it to ORT as env.wasm.wasmBinary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
dest="$root/src/unnoise/lab/static/vendor/ort"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/web_runtime/package.json" "$here/web_runtime/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
pkg="$work/node_modules/onnxruntime-web"
version="$(node -p "require('$pkg/package.json').version")"
files=(ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm.gz)
tmp="$dest.tmp.$$"
rm -rf "$tmp" && mkdir -p "$tmp"
cp "$pkg/dist/ort.wasm.min.mjs" "$pkg/dist/ort-wasm-simd-threaded.mjs" "$tmp/"
gzip -9 -n -c "$pkg/dist/ort-wasm-simd-threaded.wasm" > "$tmp/ort-wasm-simd-threaded.wasm.gz"
# The npm package declares "license": "MIT" but carries no LICENSE file: write the onnxruntime repository's.
test "$(node -p "require('$pkg/package.json').license")" = MIT
cat > "$tmp/LICENSE" <<'MIT'
MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
MIT
{
  echo "onnxruntime-web $version (npm), MIT licence (LICENSE, Copyright (c) Microsoft Corporation)."
  echo "Built by scripts/build_web_runtime.sh from scripts/web_runtime/package-lock.json."
  echo "Files (bytes, sha256):"
  for f in "${files[@]}"; do
    echo "  $f $(stat -c %s "$tmp/$f") $(sha256sum "$tmp/$f" | cut -d' ' -f1)"
  done
} > "$tmp/VERSIONS"
rm -rf "$dest" && mv "$tmp" "$dest"
cat "$dest/VERSIONS"
