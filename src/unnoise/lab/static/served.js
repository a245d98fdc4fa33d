// window.unnoise on the served page (`unnoise lab`): the page contract (README, "The lab without a server"),
// answered by the server's POST /api/paint; on an exported page runtime.js answers it in the browser instead.
import { errorText } from "./common.js";

/** A clear, one-line error for a refused request (the server's words). */
class PaintError extends Error {
  constructor(message) { super(message); this.name = "PaintError"; }
}

const FIELDS = ["prompt", "model", "sampler", "steps", "guidance", "seed", "snap"];

/** paint({prompt, model, sampler, steps, guidance, seed, snap, noise}) → {width, height, data (RGBA bytes), ms,
 *  calls, conditionedOn, seed}; every field but prompt defaults to the model's card, as on the exported page. */
export async function paint(request) {
  const started = performance.now();
  if (request === null || typeof request !== "object") throw new PaintError("paint needs an object such as {prompt: \"cat face\"}");
  const body = Object.fromEntries(FIELDS.filter((k) => request[k] != null).map((k) => [k, request[k]]));
  if (request.noise != null) body.noise = Array.from(request.noise);
  const response = await fetch("/api/paint", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!response.ok) throw new PaintError(await errorText(response));
  const d = await response.json();
  const raw = atob(d.data), data = new Uint8ClampedArray(raw.length);
  for (let i = 0; i < raw.length; i++) data[i] = raw.charCodeAt(i);
  return { width: d.width, height: d.height, data, ms: performance.now() - started, calls: d.calls,
    conditionedOn: d.conditioned_on, seed: d.seed };
}

/** Defines window.unnoise; `ready` resolves once the server answers with a trained model behind it. */
export function install() {
  const ready = fetch("/api/status").then(async (r) => {
    if (!r.ok) throw new PaintError(await errorText(r));
    const status = await r.json();
    if (!status.learned) throw new PaintError("no trained model is loaded in this lab, so there is nothing to paint with");
    return true;
  });
  ready.catch(() => {}); // a page that never awaits it must not log an unhandled rejection
  window.unnoise = { ready, paint };
}
