// unnoise lab, static mode: a request's query checked as the server checks it (FastAPI + pydantic), in the
// server's very wording, so that common.js friendly() says a bad value on the static page exactly as it
// does on the served one ("Steps must be at least 1.").
import { friendly } from "./common.js";

/** A request the page refuses, in the page's words (what a served lab's 4xx becomes). */
export class Refused extends Error {}

const refuse = (loc, msg) => { throw new Refused(friendly({ loc: ["query", ...loc], msg })); };

// pydantic's wording of a Literal: 'a', 'b' or 'c'
export function literal(values) {
  const q = values.map((v) => `'${v}'`);
  return q.length > 1 ? `${q.slice(0, -1).join(", ")} or ${q[q.length - 1]}` : q[0];
}

function number(raw, loc, whole) {
  const s = raw.trim();
  if (whole) {
    const m = s.match(/^([+-]?\d+)(\.0*)?$/);
    if (!m) refuse(loc, "Input should be a valid integer, unable to parse string as an integer");
    return Number(m[1]);
  }
  if (/^[+-]?(inf|infinity)$/i.test(s)) return s.startsWith("-") ? -Infinity : Infinity;
  if (/^[+-]?nan$/i.test(s)) return NaN;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) refuse(loc, "Input should be a valid number, unable to parse string as a number");
  return Number(s);
}

// One value against its spec: {type: "int"|"float"|"str"|"enum", ge, gt, le, maxLength, pattern, values}
function one(spec, raw, loc) {
  if (spec.type === "str") {
    if (spec.maxLength !== undefined && [...raw].length > spec.maxLength) refuse(loc, `String should have at most ${spec.maxLength} characters`);
    if (spec.pattern && !new RegExp(spec.pattern).test(raw)) refuse(loc, `String should match pattern '${spec.pattern}'`);
    return raw;
  }
  if (spec.type === "enum") {
    if (!spec.values.includes(raw)) refuse(loc, `Input should be ${literal(spec.values)}`);
    return raw;
  }
  const v = number(raw, loc, spec.type === "int");
  // NaN fails every bound; pydantic names the upper one first
  if (spec.le !== undefined && !(v <= spec.le)) refuse(loc, `Input should be less than or equal to ${spec.le}`);
  if (spec.ge !== undefined && !(v >= spec.ge)) refuse(loc, `Input should be greater than or equal to ${spec.ge}`);
  if (spec.gt !== undefined && !(v > spec.gt)) refuse(loc, `Input should be greater than ${spec.gt}`);
  return v;
}

/**
 * The query's values, checked: `specs` maps each name to its spec plus `def` (left out: the default; a spec
 * without `def` may be left out and is then null) and, for repeated values, `list: [min, max]`.
 * @param {URLSearchParams} query @param {Record<string, object>} specs @returns {Record<string, any>}
 */
export function checked(query, specs) {
  const out = {};
  for (const [name, spec] of Object.entries(specs)) {
    const given = query.getAll(name);
    if (spec.list) {
      if (!given.length) { out[name] = spec.def; continue; }
      const [min, max] = spec.list;
      if (given.length > max) refuse([name], `List should have at most ${max} item${max === 1 ? "" : "s"} after validation, not ${given.length}`);
      if (given.length < min) refuse([name], `List should have at least ${min} item${min === 1 ? "" : "s"} after validation, not ${given.length}`);
      out[name] = given.map((raw, k) => one(spec, raw, [name, String(k)]));
    } else {
      out[name] = given.length ? one(spec, given[given.length - 1], [name]) : (spec.def ?? null);
    }
  }
  return out;
}
