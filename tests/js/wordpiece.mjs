// Node harness for tests/test_js_engine.py: wordpiece.js on the fixture's prompts, and (with "table": true) the
// category class and normalize() of every code point; JSON on stdout.
import { readFileSync } from "node:fs";
import { WordPiece, category, normalize } from "../../src/unnoise/lab/static/engine/wordpiece.js";

const fixture = JSON.parse(readFileSync(process.argv[2], "utf8"));
const wp = new WordPiece(readFileSync(fixture.vocab, "utf8"));
const one = fixture.prompts.map((p) => wp.encodeOne(p));
const { ids, mask, length } = wp.encode(fixture.batch);
const out = { one, batch: { ids: Array.from(ids, Number), mask: Array.from(mask), length } };
if (fixture.table) {
  const classes = [];
  const normalized = [];
  for (let cp = 0; cp <= 0x10ffff; cp++) {
    const c = category(cp);
    classes.push(c.startsWith("C") ? c[1] : c[0]);
    normalized.push(cp >= 0xd800 && cp <= 0xdfff ? "" : normalize(String.fromCodePoint(cp)));
  }
  out.classes = classes.join("");
  out.normalized = normalized;
}
process.stdout.write(JSON.stringify(out));
