// unnoise lab, static mode: the server's /api answered in the page, for an exported site with no server.
//
// The same paths and queries, the same checks and wording (checks.js), the same JSON and the same stream
// events ([name, data]: start, step…, done or error, with PNG data-URL pictures) as lab/app.py, so lab.js and
// parts.js run unchanged.  The quick answers come from site.json (written by unnoise.lab.site from the very
// objects the server serves) and jscore's engine; the runs paint with webexport's runtime (runtime.js).
import { Refused, checked } from "./checks.js";
import { PictureStore, UploadRefused, decodeUpload, fetchPicture } from "./pictures.js";
import { spacingChart, streams } from "./localruns.js";

const b64 = (u8) => {
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
};

export class LocalLab {
  /** Reads site.json and what the page needs before its first answer (the cat, the engine). */
  static async open(siteUrl) {
    const r = await fetch(siteUrl);
    if (!r.ok) throw new Error(`this static lab has no ${siteUrl.pathname}: ${r.status} ${r.statusText}`);
    const site = await r.json(), base = new URL("./", siteUrl);
    const [schedules, random, samplers, cat] = await Promise.all([
      import("./engine/schedules.js"), import("./engine/random.js"), import("./engine/samplers.js"),
      fetchPicture(new URL(site.lab.pictures.cat, base)),
    ]);
    return new LocalLab(site, base, { schedules, random, samplers }, { id: "cat", ...cat });
  }

  constructor(site, base, engine, cat) {
    const lab = site.lab;
    Object.assign(this, { site, base, engine, lab, limits: lab.status.limits, runtime: null });
    this.pictures = new PictureStore(this.limits.store_capacity, cat);
    this.curves = new Map(lab.schedules.schedules.map((s) => [s.name, s]));
    this.abs = new Map();
    const runnable = new Set(Object.keys(engine.samplers.SAMPLERS));
    const listed = lab.samplers.samplers.filter((s) => runnable.has(s.name));
    this.samplerList = { ...lab.samplers, samplers: listed, default: runnable.has(lab.samplers.default) ? lab.samplers.default : listed[0]?.name };
    this.status = { ...lab.status, running: 0, waiting: 0 };
  }

  /** webexport's runtime, loaded on the first run that needs a network (its ORT files are the heavy part). */
  async paintRuntime() {
    if (!this.runtime) {
      const runtime = await import("./runtime.js");
      await runtime.loadSite(this.base.href);
      this.runtime = runtime;
    }
    return this.runtime;
  }

  // --- what the checks know: the names and limits of this site -------------------------------------
  get specs() {
    const L = this.limits, c = this.lab.constants, models = this.status.models;
    const seed = { type: "int", ge: 0, le: c.max_seed, def: 0 };
    const model = { type: "enum", values: models, def: this.status.default_model };
    const optional = {
      sampler: { type: "enum", values: this.samplerList.samplers.map((s) => s.name) },
      steps: { type: "int", ge: 1, le: L.max_steps },
      guidance: { type: "float", ge: 0, le: c.max_guidance },
    };
    return {
      seed, model, optional, image: { type: "str", pattern: c.image_pattern, def: "cat" },
      prompt: { type: "str", maxLength: L.max_prompt_chars, def: "" },
      schedule: { type: "enum", values: [...this.curves.keys()], def: "linear" },
      spacing: { type: "enum", values: this.samplerList.spacings, list: [1, L.max_tiles], def: this.samplerList.spacings },
    };
  }

  // --- JSON answers ------------------------------------------------------------------------------
  async json(path, options = {}) {
    const url = new URL(path, "http://lab.invalid"), q = url.searchParams, S = this.specs;
    const name = url.pathname.match(/^\/api\/schedules\/(.+)$/);
    switch (name ? "/api/schedules/*" : url.pathname) {
      case "/api/status": return this.status;
      case "/api/samplers": return this.samplerList;
      case "/api/schedules": return this.lab.schedules;
      case "/api/schedules/*": {
        const { name: which } = checked(new URLSearchParams({ name: decodeURIComponent(name[1]) }), { name: S.schedule });
        return this.curves.get(which);
      }
      case "/api/spacings": {
        const v = checked(q, { schedule: S.schedule, steps: { type: "int", ge: 1, le: this.limits.max_steps, def: 8 }, spacing: S.spacing });
        return spacingChart(this.engine.schedules, this.curves.get(v.schedule), this.alphas(v.schedule), v.steps, [...new Set(v.spacing)]);
      }
      case "/api/forward": return this.forward(checked(q, { image: S.image, seed: S.seed }));
      case "/api/images":
        if ((options.method || "GET").toUpperCase() !== "POST") break;
        return this.upload(options.body);
      default:
    }
    throw new Error(`this static lab has no ${url.pathname}`);
  }

  model(name) { return this.lab.models[name]; }

  /** A schedule's ᾱ list as one Float64Array per schedule (the engine caches its log σ per array). */
  alphas(name) {
    if (!this.abs.has(name)) this.abs.set(name, Float64Array.from(this.curves.get(name).alphas_cumprod));
    return this.abs.get(name);
  }

  picture(id) {
    const picture = this.pictures.get(id);
    if (!picture) throw new Refused(`no image '${id}': uploads are kept for a while only; upload it again`);
    return picture;
  }

  /** x0 and one noise draw ε, as /api/forward: ε = torch.randn((3, H, W), generator=manual_seed(seed)), sent (H, W, 3). */
  forward({ image, seed }) {
    const picture = this.picture(image), { width, height } = picture, n = width * height;
    const chw = new this.engine.random.TorchGenerator(seed).randn(3 * n), hwc = new Float32Array(3 * n);
    for (let i = 0; i < n; i++) { hwc[3 * i] = chw[i]; hwc[3 * i + 1] = chw[n + i]; hwc[3 * i + 2] = chw[2 * n + i]; }
    return { image: picture.id, width, height, seed, x0: b64(picture.pixels), noise: b64(new Uint8Array(hwc.buffer)) };
  }

  async upload(body) {
    try {
      const decoded = await decodeUpload(body instanceof Blob ? body : new Blob([body]), {
        maxBytes: this.limits.max_upload_bytes, maxPixels: this.limits.max_upload_pixels, maxSide: this.limits.image_size,
      });
      const picture = this.pictures.add(decoded);
      return { id: picture.id, width: picture.width, height: picture.height };
    } catch (e) {
      if (e instanceof UploadRefused) throw new Error(e.message);
      throw e;
    }
  }

  // --- streamed runs ------------------------------------------------------------------------------
  /** The events of a run, as the server streams them; a refusal before the start throws, as a 4xx does. */
  async* stream(path, { signal } = {}) {
    const url = new URL(path, "http://lab.invalid"), make = streams[url.pathname];
    if (!make) throw new Error(`this static lab has no ${url.pathname}`);
    const run = make(this, url.searchParams, signal); // checks the query before anything runs
    let started = false;
    try {
      for await (const event of run) { started = true; yield event; }
    } catch (e) {
      if (e?.name === "AbortError" || signal?.aborted) throw signal?.reason ?? e;
      if (!started || e instanceof Refused || e?.name === "PaintError") throw new Error(e.message); // the request's fault
      console.warn("unnoise lab: a run failed", e); // a bug, not the request's fault: the page says so in one line
      yield ["error", { error: `the run failed: ${e.message}` }];
    }
  }
}
