// Node harness for tests/test_js_engine.py: the engine's names and registry metadata, JSON on stdout.
import { SAMPLERS } from "../../src/unnoise/lab/static/engine/samplers.js";
import { NAMES, SPACINGS, DEFAULT_SPACING } from "../../src/unnoise/lab/static/engine/schedules.js";
import { PREDICTION_TYPES } from "../../src/unnoise/lab/static/engine/denoiser.js";
import { RESCALE_SPACES } from "../../src/unnoise/lab/static/engine/guidance.js";

const samplers = Object.values(SAMPLERS).map(({ name, order, stochastic, callsPerStep, paper, odeOptions, model, nfe }) =>
  ({ name, order, stochastic, callsPerStep, paper, odeOptions, model, nfe20: nfe(20) }));
process.stdout.write(JSON.stringify({ samplers, NAMES, SPACINGS, DEFAULT_SPACING, PREDICTION_TYPES, RESCALE_SPACES }));
