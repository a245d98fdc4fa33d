"""The lab: a FastAPI app serving one page that shows diffusion at work.

The page does the cheap, exact things itself (the forward process is one multiply-add per pixel,
from the server's x0, one noise draw ε and the schedule's ᾱ list); the server does what needs
Python: checking uploads, drawing the noise, and streaming reverse processes step by step.

Every error the API gives is JSON, {"error": "<one line>"}, with a 4xx status for bad input.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, TypeAlias

import anyio
import numpy as np
import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import Field, create_model
from starlette.exceptions import HTTPException

from .. import __version__, schedules
from ..errors import UnnoiseError
from ..limits import DEFAULT_STRENGTH, LAB_MAX_GUIDANCE, MAX_STEPS
from ..sampling import SAMPLERS
from ..schedules import Schedule
from .messages import (
    DIAL_SCALES,
    LADDER_STRENGTHS,
    LEARNED_PARTS,
    DialRequest,
    ErrorBody,
    ForwardData,
    GenerateFactory,
    GenerateRequest,
    Img2ImgRequest,
    LadderRequest,
    PaintBody,
    PaintResult,
    PictureInfo,
    ReplayRequest,
    SamplerList,
    ScheduleCurves,
    ScheduleList,
    SpacingChart,
    SpacingsRequest,
    Status,
)
from .site import IMAGE_ID, MAX_SEED, sampler_list
from .site import curves as schedule_curves
from .streams import Busy, Job, JobGate, JobResponse, Source, replay_source, replay_timesteps
from .sweeps import spacing_chart
from .uploads import CAT_ID, Picture, PictureStore, UploadError, b64, decode_upload, the_cat

log = logging.getLogger("unnoise.lab")
STATIC = Path(__file__).parent / "static"
# FastAPI validates these query types (and lists their values in the schema); they are made at run time, so the
# type checker reads them as str
if TYPE_CHECKING:
    SpacingName: TypeAlias = str
    SamplerName: TypeAlias = str
else:
    SpacingName = Literal[schedules.SPACINGS]
    SamplerName = Literal[tuple(SAMPLERS)]
GuidanceScale = Annotated[float, Field(ge=0, le=LAB_MAX_GUIDANCE)]  # one of a list's values
Strength = Annotated[float, Field(gt=0, le=1)]


@dataclass(frozen=True)
class LabConfig:
    """The lab's limits and sizes."""

    image_size: int = 256  # longer side of the pictures the lab works on (the cat, uploads)
    num_train_steps: int = 1000  # T of the schedules shown
    max_upload_bytes: int = 5 * 1024 * 1024  # uploads beyond this are refused unread (413)
    max_upload_pixels: int = 4096 * 4096  # declared pixels beyond this are refused undecoded (bombs, 413)
    max_steps: int = MAX_STEPS  # steps of any streamed run
    max_prompt_chars: int = 300
    max_images: int = 4  # images per generation request
    max_tiles: int = 6  # pictures side by side in one request (guidance scales, spacings)
    max_sweep_steps: int = 100  # steps of each run where a request makes several runs one after another
    max_jobs: int = 2  # streamed runs at once (the machine has few cores)
    max_waiting: int = 4  # runs that may queue for a slot; beyond that, 429
    wait_timeout: float = 10.0  # seconds a queued run waits before 429
    stall_timeout: float = 20.0  # seconds a stream may wait for its client to take the next event; then it ends,
    # freeing its slot
    retry_after: int = 5  # the Retry-After a 429 carries, seconds
    store_capacity: int = 32  # uploads kept (small copies, least recently used dropped)
    decode_concurrency: int = 2  # uploads decoded at once


def _noise(picture: Picture, seed: int) -> torch.Tensor:
    """ε for a picture: (3, H, W) float32, standard normal, from its own generator (the same seed, the same static)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((3, picture.height, picture.width), generator=g, dtype=torch.float32)


def _errors(status: int, *extra: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses: JSON {"error": …}, also on routes whose success is a stream."""
    body = {"content": {"application/json": {"schema": ErrorBody.model_json_schema()}}, "description": "error"}
    return {code: body for code in (status, *extra)}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


MODEL_DEFAULT = "Left out: the model's own default (its unnoise.json), e.g. ddim, 4 steps and w = 3 for emoji-fast."


def create_app(config: LabConfig = LabConfig(), *, generate: GenerateFactory | None = None) -> FastAPI:
    """The lab app.  `generate` plugs the learned reverse into /api/generate (404 until it does)."""
    # no /docs or /redoc: their pages load scripts from a CDN, and the lab uses no network; /openapi.json stays
    app = FastAPI(title="unnoise lab", version=__version__, description=__doc__, docs_url=None, redoc_url=None)
    gate = JobGate(config.max_jobs, config.max_waiting, config.wait_timeout, config.retry_after)
    store = PictureStore(config.store_capacity, the_cat(config.image_size))
    decode_limiter = anyio.CapacityLimiter(config.decode_concurrency)
    scheds = {name: schedules.get(name, config.num_train_steps) for name in schedules.available()}
    scheds.update(getattr(generate, "model_schedules", dict)())  # a diffusers folder's own β schedule, by its model
    schedule_name = Literal[tuple(scheds)]  # type: ignore[valid-type]  # made at run time: a FastAPI path type
    curves = ScheduleList(default="linear", schedules=[schedule_curves(s) for s in scheds.values()])
    app.state.gate, app.state.store, app.state.config, app.state.generate = gate, store, config, generate
    known = sorted(getattr(generate, "models", None) or [])  # a PainterFactory says; a bare callable may not
    default_model = "emoji" if not known or "emoji" in known else known[0]
    # the schema names the models when the factory says which (the fuzzer then paints for real); else any name
    model_name = Literal[tuple(known)] if known else str

    def model_query() -> Any:
        return Query() if known else Query(max_length=64)

    lab = _Lab(config=config, gate=gate, store=store, decode_limiter=decode_limiter, scheds=scheds, curves=curves,
               known=known, default_model=default_model, generate=generate, model_query=model_query,
               schedule_name=schedule_name, model_name=model_name)
    _error_handlers(app)
    _page_routes(app, lab)
    _picture_routes(app, lab)
    _stream_routes(app, lab)
    _learned_part_routes(app, lab)
    _sweep_routes(app, lab)
    return app


@dataclass
class _Lab:
    """What the lab's routes share: its limits, run slots, picture store, schedules and model source."""

    config: LabConfig
    gate: JobGate
    store: PictureStore
    decode_limiter: Any
    scheds: dict[str, Schedule]
    curves: ScheduleList
    known: list[str]
    default_model: str
    generate: GenerateFactory | None
    model_query: Callable[[], Any]
    schedule_name: Any  # the Literal of known schedule names (a FastAPI path type)
    model_name: Any  # the Literal of known model names, or str

    def learned_part(self, name: str, what: str) -> Callable[[Any], tuple[Source, dict[str, Any]]]:
        if self.generate is None:
            raise HTTPException(404, f"no trained model is loaded in this lab yet, so there is nothing to {what} with")
        method = getattr(self.generate, name, None)
        if not callable(method):
            raise HTTPException(404, f"this lab's model source cannot {what}")
        return method

    async def start(self, kind: str, source: Source, request: Any, start: dict[str, Any]) -> JobResponse:
        """Wait for a run slot, then stream `source`; the start event names the request's fields (not the
        picture itself) and what the source added."""
        info = {k: v for k, v in asdict(request).items() if k != "picture"}
        slot = await self.gate.acquire()
        return JobResponse(Job(slot, source, {"kind": kind, **info, **start}), self.config.stall_timeout)

    def tiles_query(self) -> Any:
        """A list query parameter of one to max_tiles values (guidance scales, spacings, strengths)."""
        return Query(min_length=1, max_length=self.config.max_tiles)

    def picture_or_404(self, image: str) -> Picture:
        picture = self.store.get(image)
        if picture is None:
            raise HTTPException(404, f"no image {image!r}: uploads are kept for a while only; upload it again")
        return picture


def _error_handlers(app: FastAPI) -> None:
    """Errors as JSON, one line: 4xx for anything the request got wrong, a logged 500 for a bug."""
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        body = {"error": f"{where}: {first['msg']}" if where else first["msg"]}
        body["detail"] = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in errors]
        return JSONResponse(body, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(UploadError)
    async def _upload(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return _error(429, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(UnnoiseError)
    async def _refused(request: Request, exc: UnnoiseError) -> JSONResponse:
        # unnoise's own checks (PaintError, ScheduleError, a factory's unknown model, …): the request's values
        # are at fault; an error that knows its HTTP status (UploadError: 413, 415) keeps it
        return _error(getattr(exc, "status", 422), str(exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # Not the request's fault: a bug.  Logged with its traceback; the answer is JSON naming only the
        # exception's type (no message, no traceback), and the server lives on.  The fuzz test hunts these.
        log.error("lab: unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}")



def _page_routes(app: FastAPI, lab: _Lab) -> None:
    """The page, its static files and the quick JSON routes (status, samplers, spacings, schedules)."""
    if TYPE_CHECKING:
        ScheduleName: TypeAlias = str
    else:
        ScheduleName = lab.schedule_name

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # --- the API -----------------------------------------------------------------------------------
    @app.get("/api/status")
    async def status() -> Status:
        """What the lab can do now and how busy it is."""
        limits = {k: float(v) for k, v in asdict(lab.config).items()}
        parts = [name for name in LEARNED_PARTS if callable(getattr(lab.generate, name, None))]
        defaults = getattr(lab.generate, "model_defaults", None)
        return Status(version=__version__, learned=lab.generate is not None, models=lab.known, parts=parts,
                      default_model=lab.default_model if lab.known else "",
                      model_defaults=defaults() if callable(defaults) else {},
                      running=lab.gate.running, waiting=lab.gate.waiting, limits=limits)

    @app.get("/api/samplers")
    async def samplers() -> SamplerList:
        """The registered samplers (unnoise.sampling.SAMPLERS) and inference spacings: the page's lists."""
        return sampler_list()

    @app.get("/api/spacings", responses=_errors(422))
    async def spacings_chart(
        schedule: ScheduleName = "linear",
        steps: Annotated[int, Query(ge=1, le=lab.config.max_steps)] = 8,
        spacing: Annotated[list[SpacingName], lab.tiles_query()] = list(schedules.SPACINGS),
    ) -> SpacingChart:
        """Where each spacing puts its steps on a schedule: σ and t per step (part 7's chart)."""
        return SpacingChart(**spacing_chart(lab.scheds[schedule], steps, _unique(spacing)))

    @app.get("/api/schedules")
    async def all_schedules() -> ScheduleList:
        """Every schedule's ᾱ list (the page draws the signal, noise and log-SNR curves from it)."""
        return lab.curves

    @app.get("/api/schedules/{name}", responses=_errors(422))
    async def one_schedule(name: Annotated[ScheduleName, PathParam()]) -> ScheduleCurves:
        """One schedule's ᾱ list and crossing step."""
        return schedule_curves(lab.scheds[name])


def _picture_routes(app: FastAPI, lab: _Lab) -> None:
    """Uploads and the forward process on a picture."""

    @app.post(
        "/api/images",
        status_code=201,
        responses=_errors(413, 415, 422),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                "description": "the bytes of a PNG, JPEG, GIF, WebP or BMP file, at most 5 MB",
            }
        },
    )
    async def upload(request: Request) -> PictureInfo:
        """Upload an image (raw bytes as the body); it is checked, shrunk and kept under its id."""
        cap = lab.config.max_upload_bytes
        too_big = f"upload too large: the limit is {cap / 2**20:g} MB"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise HTTPException(413, too_big)  # refused before a byte of the body is read
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                raise HTTPException(413, too_big)
        pixels = await anyio.to_thread.run_sync(
            lambda: decode_upload(bytes(body), max_side=lab.config.image_size, max_pixels=lab.config.max_upload_pixels),
            limiter=lab.decode_limiter,
        )
        picture = lab.store.add(pixels)
        return PictureInfo(id=picture.id, width=picture.width, height=picture.height)

    @app.get("/api/forward", responses=_errors(404, 422))
    async def forward(
        image: Annotated[str, Query(pattern=IMAGE_ID)] = CAT_ID,
        seed: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
    ) -> ForwardData:
        """x0 and one noise draw ε, exactly: the page composes x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε itself."""
        picture = lab.picture_or_404(image)
        eps = _noise(picture, seed).permute(1, 2, 0).numpy()  # (H, W, 3), the page's pixel order
        return ForwardData(
            image=picture.id, width=picture.width, height=picture.height, seed=seed,
            x0=b64(picture.pixels), noise=b64(eps.astype(np.float32)),
        )


# OpenAPI 3.1 reading of an event stream: the schema describes each event
_EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {"event": {"enum": ["start", "step", "done", "error"]},
                   "data": {"type": "string", "contentMediaType": "application/json"}},
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": _EVENT_SCHEMA}},
          "description": "`start`, one `step` per step, then `done` or `error`"},
}
# what every streamed route declares: a server-sent event stream, or a JSON error
_STREAMED: dict[str, Any] = {"response_class": JobResponse, "status_code": 200,
                             "responses": {**_STREAM_DOC, **_errors(404, 422, 429)}}


class _Prompted(NamedTuple):
    """The prompt and model of a learned run."""

    prompt: str
    model: str


def _prompted_query(lab: _Lab) -> Callable[..., _Prompted]:
    """The dependency that reads a _Prompted from the query."""
    if TYPE_CHECKING:
        ModelName: TypeAlias = str
    else:
        ModelName = lab.model_name

    def prompted(
        prompt: Annotated[str, Query(max_length=lab.config.max_prompt_chars)] = "",
        model: Annotated[ModelName, lab.model_query()] = lab.default_model,
    ) -> _Prompted:
        return _Prompted(prompt, model)

    return prompted


class _Painting(NamedTuple):
    """The query parameters a learned run shares (generate, img2img, ladder); sampler, steps and guidance left
    out are the model's own."""

    prompt: str
    model: str
    sampler: str | None
    steps: int | None
    guidance: float | None
    seed: int


def _painting_query(lab: _Lab, max_steps: int) -> Callable[..., _Painting]:
    """The dependency that reads a _Painting from the query, steps up to `max_steps`."""

    def painting(
        prompted: Annotated[_Prompted, Depends(_prompted_query(lab))],
        sampler: Annotated[SamplerName | None, Query(description=MODEL_DEFAULT)] = None,
        steps: Annotated[int | None, Query(ge=1, le=max_steps, description=MODEL_DEFAULT)] = None,
        guidance: Annotated[float | None, Query(ge=0, le=LAB_MAX_GUIDANCE, description=MODEL_DEFAULT)] = None,
        seed: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
    ) -> _Painting:
        return _Painting(*prompted, sampler, steps, guidance, seed)

    return painting


class _Sweep(NamedTuple):
    """The query parameters the sweeps share (the guidance dial, the spacings): a sampler and steps of their own."""

    prompt: str
    model: str
    sampler: str
    steps: int
    seed: int


def _sweep_query(lab: _Lab, max_steps: int, default_steps: int) -> Callable[..., _Sweep]:
    """The dependency that reads a _Sweep from the query, steps up to `max_steps`."""

    def sweep(
        prompted: Annotated[_Prompted, Depends(_prompted_query(lab))],
        sampler: SamplerName = "dpmpp_2m",
        steps: Annotated[int, Query(ge=1, le=max_steps)] = default_steps,
        seed: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
    ) -> _Sweep:
        return _Sweep(*prompted, sampler, steps, seed)

    return sweep


def _stream_routes(app: FastAPI, lab: _Lab) -> None:
    """The streamed runs of parts 3 and 4: the replay and the learned reverse."""

    if TYPE_CHECKING:
        ScheduleName: TypeAlias = str
        ModelName: TypeAlias = str
    else:
        ScheduleName, ModelName = lab.schedule_name, lab.model_name

    @app.get("/api/replay", **_STREAMED)
    async def replay(
        image: Annotated[str, Query(pattern=IMAGE_ID)] = CAT_ID,
        schedule: ScheduleName = "linear",
        steps: Annotated[int, Query(ge=1, le=lab.config.max_steps)] = 50,
        seed: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
        model: Annotated[ModelName | None, lab.model_query()] = None,
    ) -> JobResponse:
        """The fake reverse, streamed: from the static at t = T−1, subtract the known noise, step by step.

        With `model`, it runs on the picture as that model sees it (its size), on the model's own schedule
        and σ grid, from the very noisy picture /api/img2img starts from at strength 1 with the same seed
        and steps (`schedule` is then the model's): part 4's two sides start from the same static.
        Events: `start` (the run), `step` ×K ({index, total, t, signal, noise, x_t, eps, x0} with
        PNG data URLs), then `done` ({image}) or `error` ({error})."""
        picture = lab.picture_or_404(image)
        if model is not None:
            request = ReplayRequest(model, seed, steps, picture.id, picture)
            source, info = lab.learned_part("replay", "replay at a model's size")(request)
            slot = await lab.gate.acquire()
            start = {"kind": "replay", "image": picture.id, "seed": seed, "model": model, **info}
            return JobResponse(Job(slot, source, start), lab.config.stall_timeout)
        s = lab.scheds[schedule]
        ts = replay_timesteps(s, steps)
        source = replay_source(s, picture.tensor(), _noise(picture, seed), ts)
        start = {"kind": "replay", "image": picture.id, "schedule": s.name, "seed": seed, "steps": len(ts),
                 "ts": ts.tolist(), "width": picture.width, "height": picture.height}
        slot = await lab.gate.acquire()
        return JobResponse(Job(slot, source, start), lab.config.stall_timeout)

    @app.get("/api/generate", **_STREAMED)
    async def generate_stream(
        painting: Annotated[_Painting, Depends(_painting_query(lab, lab.config.max_steps))],
        num_images: Annotated[int, Query(ge=1, le=lab.config.max_images)] = 1,
    ) -> JobResponse:
        """The learned reverse, streamed like /api/replay (x_t, predicted ε̂ and x̂0 per step).  Sampler, steps
        and guidance left out are the model's own (a distilled student's ddim, 4 steps, its w); the start event
        says which were used."""
        if lab.generate is None:
            raise HTTPException(404, "no trained model is loaded in this lab yet, so there is nothing to generate "
                                "with")
        request = GenerateRequest(*painting, num_images)
        source, start = lab.generate(request)  # an UnnoiseError (unknown model, sampler) → 422
        return await lab.start("generate", source, request, start)


def _learned_part_routes(app: FastAPI, lab: _Lab) -> None:
    """Part 5, offered by the model source when it can: image to image and the strength ladder; and the page
    contract's paint."""

    # the schema names this lab's models, samplers and limits (the checks below word the refusals)
    if TYPE_CHECKING:
        Body: TypeAlias = PaintBody
    else:
        Body = create_model(
            "PaintBody", __base__=PaintBody,
            prompt=(str, Field(json_schema_extra={"pattern": r"\S", "maxLength": lab.config.max_prompt_chars})),
            model=(lab.model_name | None, None),
            sampler=(SamplerName | None, None),
            steps=(int | None, Field(None, ge=1, json_schema_extra={"maximum": lab.config.max_steps})),
        )

    @app.post("/api/paint", responses=_errors(400, 404, 422, 429))  # 400: a body that is not JSON
    async def paint(body: Body) -> PaintResult:
        """One picture, not streamed: what window.unnoise.paint({prompt, model, sampler, steps, guidance, seed,
        snap, noise}) asks of the served lab (the exported page answers it in the browser).  Left out: the
        model's own defaults, a random seed."""
        paint_rgba = getattr(lab.generate, "paint_rgba", None)
        if paint_rgba is None:
            raise HTTPException(404, "no trained model is loaded in this lab yet, so there is nothing to paint with")
        if not body.prompt.strip():
            raise HTTPException(422, 'prompt is empty: type what to paint, e.g. "cat face"')
        if len(body.prompt) > lab.config.max_prompt_chars:
            raise HTTPException(422, f"prompt is too long: {len(body.prompt)} characters, at most "
                                f"{lab.config.max_prompt_chars}")
        if body.steps is not None and body.steps > lab.config.max_steps:
            raise HTTPException(422, f"steps must be an integer from 1 to {lab.config.max_steps}, got {body.steps}")
        request = body.model_copy(update={"model": body.model or lab.default_model})
        slot = await lab.gate.acquire()
        try:
            return await anyio.to_thread.run_sync(lambda: paint_rgba(request))
        finally:
            slot.release()

    @app.get("/api/img2img", **_STREAMED)
    async def img2img_stream(
        painting: Annotated[_Painting, Depends(_painting_query(lab, lab.config.max_steps))],
        image: Annotated[str, Query(pattern=IMAGE_ID)] = CAT_ID,
        strength: Annotated[float, Query(gt=0, le=1)] = DEFAULT_STRENGTH,
    ) -> JobResponse:
        """Image to image (SDEdit, the Painter's own path): noise the picture `strength` of the way up the
        schedule, then denoise the remaining steps under the prompt, streamed like /api/generate (sampler, steps
        and guidance default to the model's own).  The start event adds `init`, the picture as the model sees it
        (centre square at its size)."""
        method = lab.learned_part("img2img", "re-paint a picture")
        picture = lab.picture_or_404(image)
        request = Img2ImgRequest(*painting, strength, picture.id, picture)
        source, start = method(request)
        return await lab.start("img2img", source, request, start)

    @app.get("/api/img2img/ladder", **_STREAMED)
    async def ladder_stream(
        painting: Annotated[_Painting, Depends(_painting_query(lab, lab.config.max_sweep_steps))],
        image: Annotated[str, Query(pattern=IMAGE_ID)] = CAT_ID,
        strength: Annotated[list[Strength], lab.tiles_query()] = list(LADDER_STRENGTHS),
    ) -> JobResponse:
        """The strength ladder (part 5): the picture re-painted at each strength (default 0.2 … 1), one run
        after another from the same seed, streamed like /api/spacings/run (each run's x̂0 per step as its
        tile); `done` has {images, strengths}, the start event the picture as the model sees it (`init`)."""
        method = lab.learned_part("ladder", "re-paint a picture")
        picture = lab.picture_or_404(image)
        request = LadderRequest(*painting, tuple(strength), picture.id, picture)
        source, start = method(request)
        return await lab.start("ladder", source, request, start)


def _sweep_routes(app: FastAPI, lab: _Lab) -> None:
    """Parts 6 and 7, offered by the model source when it can: the guidance dial and where the steps go."""

    @app.get("/api/guidance", **_STREAMED)
    async def dial_stream(
        sweep: Annotated[_Sweep, Depends(_sweep_query(lab, lab.config.max_steps, 20))],
        scale: Annotated[list[GuidanceScale], lab.tiles_query()] = list(DIAL_SCALES),
    ) -> JobResponse:
        """The guidance dial: one prompt and seed at several scales (default 0, 1, 3, 7, 12) in one batch.

        Events: `start`, `step` ×steps ({index, total, tiles: [{tile, step, steps, t, sigma, x0}]}: every
        scale's x̂0), then `done` ({images, scales}) or `error`."""
        method = lab.learned_part("dial", "turn the guidance dial")
        request = DialRequest(*sweep, tuple(scale))
        source, start = method(request)
        return await lab.start("dial", source, request, start)

    @app.get("/api/spacings/run", **_STREAMED)
    async def spacings_stream(
        sweep: Annotated[_Sweep, Depends(_sweep_query(lab, lab.config.max_sweep_steps, 8))],
        guidance: Annotated[float, Query(ge=0, le=LAB_MAX_GUIDANCE)] = 5.0,
        spacing: Annotated[list[SpacingName], lab.tiles_query()] = list(schedules.SPACINGS),
    ) -> JobResponse:
        """Where the steps go: one prompt and seed under each spacing, one run after another, then a
        many-step reference run; `done` has {images, reference, metrics} (shape error and detail ratio of
        each picture against the reference).  The start event has the model schedule's `chart`."""
        method = lab.learned_part("spacings", "compare spacings")
        prompt, model, sampler, steps, seed = sweep
        request = SpacingsRequest(prompt, model, sampler, steps, guidance, seed, _unique(spacing))
        source, start = method(request)  # a spacing that cannot place the steps → 422
        return await lab.start("spacings", source, request, start)


def _unique(names) -> tuple[str, ...]:
    """The names once each, in their first order."""
    return tuple(dict.fromkeys(names))


def run(host: str = "127.0.0.1", port: int = 7860, *, config: LabConfig = LabConfig(),
        generate: GenerateFactory | None = None) -> None:
    """Serve the lab with uvicorn until interrupted (`unnoise lab`)."""
    import uvicorn

    app = create_app(config, generate=generate)
    shown = f"[{host}]" if ":" in host else host
    print(f"unnoise lab: open http://{shown}:{port}/  (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextmanager
def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve app with uvicorn on a background thread for the length of a with-block; yields its base URL
    (port 0: a free one).  For tests and benchmarks that need a real socket."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="unnoise-lab-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the lab server did not start on {host}:{port}")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
