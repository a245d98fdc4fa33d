// node harness: static/resample.js on the pictures of a fixture; answers each resized picture as base64.
import { readFileSync } from "node:fs";
import { lanczosResize } from "../../src/unnoise/lab/static/resample.js";

const { cases } = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = cases.map(({ pixels, width, height, channels, out_width: ow, out_height: oh }) =>
  Buffer.from(lanczosResize(new Uint8Array(Buffer.from(pixels, "base64")), width, height, channels, ow, oh)).toString("base64"));
console.log(JSON.stringify(out));
