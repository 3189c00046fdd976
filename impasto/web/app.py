"""The web app: a page, and an HTTP API over impasto.api.Stylizer with a job queue.

Every route under /api is described by the OpenAPI schema at /openapi.json (and the
interactive page /docs). create_app() builds the app from a WebConfig, so tests
and `impasto serve` assemble it the same way.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import re
import secrets
import time
import unicodedata
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Literal, Optional, Union
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends, FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ImpastoError
from ..images import resize_long_side, save_image
from .. import __version__
from ..presets import PRESETS
from ..settings import COLOR_MODES
from .jobs import (ACTIVE, CONTENT_FILE, FRAMES_DIR, GIF_FILE, RESULT_FILE, JobConflict, JobManager, JobStore,
                   new_job_id, public_settings, style_file)  # fmt: skip
from .options import (LAYER_SETS, Limits, SettingsResolver, check_proportions, parse_settings_json, parse_style_weights,
                      server_device)  # fmt: skip
from .uploads import UploadError, decode_upload, display_name, format_bytes

if TYPE_CHECKING:  # for the type checker only: the API, and torch with it, is loaded when a run needs it
    from ..api import Stylizer

STATIC = Path(__file__).with_name("static")
# Pixels the uploads being read at once may hold (about 2.4 GB as RGBA). Each upload keeps all
# its pictures until they are saved, so this, not the request count, is what bounds memory.
UPLOAD_PIXEL_BUDGET = 600_000_000
UPLOAD_WAIT = 60.0  # seconds an upload waits for its turn before a 503 asks to try again
# Form fields the create-job route declares; any other field must be a Settings name.
DECLARED_FIELDS = ("content", "style", "settings", "preset", "style_weights")


@dataclass
class WebConfig:
    """Everything `impasto serve` decides; tests build one directly."""

    data_dir: Path
    token: Optional[str] = None
    workers: int = 1
    base_settings: dict[str, Any] = field(default_factory=dict)  # the server's explicit --options
    base_preset: Optional[str] = None
    limits: Limits = field(default_factory=Limits)
    max_upload_bytes: int = 25_000_000
    max_pixels: int = 50_000_000
    keep_days: Optional[float] = 7.0
    keep_jobs: Optional[int] = 200
    gif_frames: int = 30
    allowed_hosts: Optional[list[str]] = None  # Host headers accepted; None = any
    stylizer: Optional[Stylizer] = None  # made on demand when None
    upload_slots: Optional[int] = None  # uploads read at once; None = as many as UPLOAD_PIXEL_BUDGET allows
    upload_wait: float = UPLOAD_WAIT


def upload_slots(max_pixels: int, max_styles: int) -> int:
    """How many uploads of (max_styles + 1) pictures of max_pixels fit the budget: 1 to 4."""
    return max(1, min(4, UPLOAD_PIXEL_BUDGET // ((max_styles + 1) * max_pixels)))


# -- response models (they are the OpenAPI schema's documentation of the API)


class ProgressView(BaseModel):
    done: int
    total: int
    scale: int
    scales: int
    size: list[int]
    step: Optional[int] = None  # within this scale, of `steps`
    steps: Optional[int] = None
    losses: dict[str, float]
    elapsed: float


class InputView(BaseModel):
    file: str
    name: str
    size: list[int]
    weight: Optional[float] = None


class JobView(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "cancelled", "failed", "interrupted"]
    created: float
    started: Optional[float] = None
    finished: Optional[float] = None
    request: dict[str, Any]
    settings: dict[str, Any]
    content: InputView
    styles: list[InputView]
    progress: Optional[ProgressView] = None
    error: Optional[str] = None
    result: bool = False
    gif: bool = False
    frames: int = 0
    partial: bool = False
    seconds: Optional[float] = None
    losses: Optional[dict[str, float]] = None
    stopped_reason: Optional[str] = None
    notes: list[str] = []  # what the run decided for itself that changes the look (api.Result.notes)
    preview: Optional[int] = None
    ahead: Optional[int] = None  # for a queued job: the jobs running or waiting before it
    rerun_of: Optional[str] = None  # the job whose inputs this one was made from
    links: dict[str, str]


class RerunRequest(BaseModel):
    """What to change for the new job; anything left out is as the old job asked."""

    preset: Optional[str] = None  # given (even as null): replaces the old job's preset
    settings: Optional[dict[str, Any]] = None  # merged over the old job's settings
    style_weights: Optional[Union[list[float], str]] = None


class OptionsView(BaseModel):
    defaults: dict[str, Any]
    presets: dict[str, str]
    preset_settings: dict[str, dict[str, Any]]
    layer_sets: dict[str, list[str]]
    preserve_color: list[str]
    limits: dict[str, Any]
    device: str  # cpu, cuda or mps: where jobs run (the page warns of large sizes on a CPU)


def download_name(job: dict[str, Any], extension: str) -> str:
    """impasto-PHOTO-STYLE-ID.png: which picture it is, once it sits among others in Downloads.
    ASCII only, so every browser and file system keeps it as it is."""
    names = [job["content"]["name"]] + [s["name"] for s in job["styles"][:2]]
    parts = [slug(name) for name in names]
    if len(job["styles"]) > 2:
        parts.append(f"and-{len(job['styles']) - 2}-more")
    return "-".join(["impasto", *parts, job["id"][:8]]) + "." + extension


def slug(name: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    ascii_only = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9]+", "-", ascii_only).strip("-")[:24].strip("-") or "picture"


def with_links(job: dict[str, Any]) -> dict[str, Any]:
    base = f"/api/jobs/{job['id']}"
    links = {"self": base, "events": f"{base}/events", "content": f"{base}/inputs/content"}
    if job.get("preview"):
        links["preview"] = f"{base}/preview?n={job['preview']}"
    if job.get("result"):
        links["result"] = f"{base}/result"
    if job.get("gif"):
        links["gif"] = f"{base}/progress.gif"
    return dict(job, links=links)


# -- safety middleware


class SecurityHeaders:
    """Headers that keep the page from being framed, sniffed or fed outside scripts.

    Plain ASGI rather than @app.middleware("http"), which wraps streaming responses
    (the event streams) in a way that fails noisily when a connection is cut.
    """

    PAGE_POLICY = (b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
                   b"frame-ancestors 'none'")  # fmt: skip

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Swagger UI (/docs) and ReDoc (/redoc) run inline scripts of their own: no policy there.
        policy = not scope["path"].startswith(("/docs", "/redoc"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if policy:
                    headers.append((b"content-security-policy", self.PAGE_POLICY))
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(StarletteHTTPException):
    pass


class BodyLimit:
    """Refuse a request body over `limit` bytes, declared or streamed, before it is all stored.

    Raised from inside receive(), the error reaches FastAPI while it parses the form,
    which passes HTTP exceptions on unchanged: the client gets a 413.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request is larger than the limit of {format_bytes(self.limit)}"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(413, message)
            return msg

        await self.app(scope, limited, send)


# -- the app


def create_app(config: WebConfig) -> FastAPI:
    if not (STATIC / "index.html").is_file():
        raise ImpastoError(f"the page's files are missing from this installation ({STATIC}); reinstall impasto[web]")
    resolver = SettingsResolver(config.base_settings, config.base_preset, config.limits)
    device = server_device(resolver.defaults())  # the server's own options are checked at start, not at the first job
    if config.stylizer is None:
        from ..api import Stylizer

        config.stylizer = Stylizer()
    manager = JobManager(
        JobStore(config.data_dir),
        resolver,
        config.stylizer,
        workers=config.workers,
        gif_frames=config.gif_frames,
        keep_days=config.keep_days,
        keep_jobs=config.keep_jobs,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.start()
        yield
        await run_in_threadpool(manager.stop)

    app = FastAPI(
        title="impasto",
        summary="Paint a photo in the style of an artwork (neural style transfer).",
        description="Create a job with a photo and one or more style images, follow it with server-sent events, "
        "then fetch the result and the progress GIF. With a token set, send it as `Authorization: Bearer TOKEN` "
        "or `?token=TOKEN`.",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.config = config
    upload_limit = config.max_upload_bytes * (config.limits.max_styles + 1) + 100_000  # + the form fields
    app.add_middleware(BodyLimit, limit=upload_limit)
    if config.allowed_hosts is not None:
        # A page on another site cannot reach a loopback server through DNS rebinding.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=config.allowed_hosts)

    app.add_middleware(SecurityHeaders)
    add_error_handlers(app)
    app.include_router(api_router(config, manager, resolver, device), prefix="/api")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImpastoError)
    async def bad_input(request: Request, exc: ImpastoError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(UploadError)
    async def bad_upload(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(JobConflict)
    async def conflict(request: Request, exc: JobConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(OSError)
    async def storage(request: Request, exc: OSError) -> JSONResponse:
        # The data folder could not be written (a full disk): one line for the page, the trace in the log.
        logging.getLogger("impasto.web").error("storing a job failed", exc_info=exc)
        full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        reason = exc.strerror or exc.__class__.__name__
        return JSONResponse({"detail": f"the server could not store the job's files ({reason}); see the server log"},
                            status_code=507 if full else 500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line first (the page shows it), FastAPI's list after it for programs.
        errors = exc.errors()
        lines = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors]
        return JSONResponse({"detail": "; ".join(lines), "errors": json.loads(json.dumps(errors, default=str))}, status_code=422)


def api_router(config: WebConfig, manager: JobManager, resolver: SettingsResolver, device: str = "cpu") -> APIRouter:
    bearer = HTTPBearer(auto_error=False, description="the server's token, when it has one")
    query_token = APIKeyQuery(name="token", auto_error=False, description="the token as a query parameter (for <img> and EventSource)")

    def check_access(
        request: Request,
        credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer),
        token: Optional[str] = Depends(query_token),
    ) -> None:
        if request.method not in ("GET", "HEAD"):
            # A page on another site may post a form here (no preflight for multipart): refuse it.
            origin = request.headers.get("origin")
            if origin and urlsplit(origin).netloc != request.headers.get("host"):
                raise HTTPException(403, "cross-site request refused")
        if config.token is None:
            return
        given = credentials.credentials if credentials is not None else token
        if given is None or not secrets.compare_digest(given.encode(), config.token.encode()):
            raise HTTPException(401, "this server needs its token: open the address `impasto serve` printed, or send "
                                "Authorization: Bearer TOKEN", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    router = APIRouter(dependencies=[Depends(check_access)])
    JobId = PathParam(description="the job's id (a uuid)")
    reading = asyncio.Semaphore(config.upload_slots or upload_slots(config.max_pixels, config.limits.max_styles))

    def find(job_id: uuid.UUID) -> dict[str, Any]:
        try:
            return with_links(manager.view(str(job_id)))
        except KeyError:
            raise HTTPException(404, f"no job {job_id}") from None

    def job_file(job_id: uuid.UUID, name: str, what: str) -> Path:
        find(job_id)
        path = manager.store.folder(str(job_id)) / name
        if not path.is_file():
            raise HTTPException(404, f"job {job_id} has no {what} (yet)")
        return path

    @router.get("/options", response_model=OptionsView, summary="Default settings, presets and limits")
    def options() -> dict[str, Any]:
        limits = config.limits
        return {
            "defaults": public_settings(resolver.defaults()),
            "presets": {name: p.description for name, p in PRESETS.items()},
            "preset_settings": {name: public_settings(resolver.preset(name)) for name in PRESETS},
            "layer_sets": {name: list(layers) for name, layers in LAYER_SETS.items()},
            "preserve_color": list(COLOR_MODES),
            "limits": {
                "max_size": limits.max_size,
                "max_iterations": limits.max_iterations,
                "max_styles": limits.max_styles,
                "max_upload_bytes": config.max_upload_bytes,
                "max_pixels": config.max_pixels,
            },
            "device": device,
        }

    @router.post("/jobs", response_model=JobView, status_code=201, summary="Create a job")
    async def create_job(
        request: Request,
        content: UploadFile = File(description="the photo to paint"),
        style: list[UploadFile] = File(description="one or more style images (repeat the field)"),
        settings: Optional[str] = Form(None, description='Settings fields as a JSON object, e.g. {"size": 256, "style_weight": 50}'),
        preset: Optional[str] = Form(None, description="a named preset (gatys2015, novak2016, fast, hq); settings override it"),
        style_weights: Optional[str] = Form(None, description="blend weights, one per style image: 0.7,0.3 or [0.7, 0.3]"),
    ) -> dict[str, Any]:
        """Upload a photo and style images; any Settings field may also be sent as its own form field
        (`size=256`). The job is queued at once; follow it at /api/jobs/{id}/events."""
        fields = dict(parse_settings_json(settings))
        form = await request.form()
        for key in form.keys():
            if key not in DECLARED_FIELDS:
                value = form.get(key)
                if not isinstance(value, str):
                    raise ImpastoError(f"{key}: expected a value, got a file")
                fields[key] = value
        job_request = {"preset": preset or None, "settings": fields}
        resolved = resolver(job_request)
        if len(style) > config.limits.max_styles:
            raise ImpastoError(f"at most {config.limits.max_styles} style images, not {len(style)}")
        weights = parse_style_weights(style_weights, len(style))
        # Messages name each picture as the page does, with its file name: an artist with three
        # paintings should not have to count which one "style 2" is.
        labelled = [(f"Photo ({display_name(content.filename)})", content)]
        labelled += [(f"Style picture {i + 1} ({display_name(s.filename)})", s) for i, s in enumerate(style)]
        # Inputs are kept no larger than any job could use them: the photo at the largest
        # output size, the styles at that times the largest style scale.
        limits = config.limits
        longest = [limits.max_size] + [round(limits.max_size * limits.max_style_scale)] * len(style)
        try:
            await asyncio.wait_for(reading.acquire(), config.upload_wait)
        except asyncio.TimeoutError:
            raise HTTPException(503, "the server is busy reading other uploads; try again in a minute",
                                headers={"Retry-After": "30"}) from None  # fmt: skip
        try:
            images = []
            for (label, upload), long_side in zip(labelled, longest):
                data = await upload.read(config.max_upload_bytes + 1)
                image = await run_in_threadpool(decode_upload, data, label, config.max_upload_bytes, config.max_pixels)
                if max(image.size) > long_side:
                    image = await run_in_threadpool(resize_long_side, image, long_side)
                images.append(image)
            # Checked here, not minutes later in the queue (and in the page's words, not the CLI's).
            check_proportions(images[0].size, resolved, labelled[0][0])
            job_id = new_job_id()
            folder = manager.store.create_folder(job_id)
            names = [CONTENT_FILE] + [style_file(i) for i in range(len(style))]
            try:
                for image, name in zip(images, names):
                    await run_in_threadpool(save_image, image, folder / name)
            except BaseException:
                manager.store.delete(job_id)  # no folder without a job.json is left behind
                raise
        finally:
            reading.release()
        described = [{"file": name, "name": display_name(upload.filename), "size": list(image.size)}
                     for name, (_, upload), image in zip(names, labelled, images)]  # fmt: skip
        job = {
            "id": job_id,
            "created": time.time(),
            "request": job_request,
            "settings": public_settings(resolved),
            "content": described[0],
            "styles": [dict(d, weight=w) for d, w in zip(described[1:], weights)],
        }
        try:
            return with_links(manager.submit(job))
        except BaseException:  # its record was never written: a folder no start-up or clean-up would find
            manager.store.delete(job_id)
            raise

    @router.get("/jobs", response_model=list[JobView], summary="List jobs, newest first")
    def list_jobs() -> list[dict[str, Any]]:
        return [with_links(job) for job in manager.list()]

    @router.get("/jobs/{job_id}", response_model=JobView, summary="A job's status and progress")
    def get_job(job_id: uuid.UUID = JobId) -> dict[str, Any]:
        return find(job_id)

    @router.get(
        "/jobs/{job_id}/events",
        summary="Server-sent events: the job, each time it changes, until it finishes",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "`event: job` messages whose data is the JobView"}},
    )
    async def events(request: Request, job_id: uuid.UUID = JobId) -> StreamingResponse:
        find(job_id)
        return StreamingResponse(
            job_events(request, manager, str(job_id)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/jobs/{job_id}/preview", summary="The latest preview (JPEG, small)", response_class=Response,
                responses={200: {"content": {"image/jpeg": {}}}})  # fmt: skip
    def preview(job_id: uuid.UUID = JobId, n: Optional[int] = Query(None, description="ignored; makes each preview's URL unique")) -> Response:
        find(job_id)
        data = manager.preview(str(job_id))
        if data is None:
            raise HTTPException(404, f"job {job_id} has no preview (yet)")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @router.get("/jobs/{job_id}/result", summary="The result (PNG)", response_class=FileResponse,
                responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    def result(job_id: uuid.UUID = JobId, download: bool = Query(False, description="as an attachment")) -> FileResponse:
        path = job_file(job_id, RESULT_FILE, "result")
        name = download_name(find(job_id), "png") if download else None
        return FileResponse(path, media_type="image/png", filename=name, headers={"Cache-Control": "no-cache"})

    @router.get("/jobs/{job_id}/progress.gif", summary="The picture forming (animated GIF)", response_class=FileResponse,
                responses={200: {"content": {"image/gif": {}}}})  # fmt: skip
    def gif(job_id: uuid.UUID = JobId, download: bool = Query(False, description="as an attachment")) -> FileResponse:
        path = job_file(job_id, GIF_FILE, "progress GIF")
        name = download_name(find(job_id), "gif") if download else None
        return FileResponse(path, media_type="image/gif", filename=name, headers={"Cache-Control": "no-cache"})

    @router.get("/jobs/{job_id}/frames/{index}", summary="One frame of the progress GIF (JPEG, output size)",
                response_class=FileResponse, responses={200: {"content": {"image/jpeg": {}}}})  # fmt: skip
    def frame(job_id: uuid.UUID = JobId, index: int = PathParam(ge=0, le=9999)) -> FileResponse:
        path = job_file(job_id, f"{FRAMES_DIR}/{index:03d}.jpg", f"frame {index}")
        return FileResponse(path, media_type="image/jpeg")

    @router.get("/jobs/{job_id}/inputs/{name}", summary="An input as the server stored it (PNG)",
                response_class=FileResponse, responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    def inputs(job_id: uuid.UUID = JobId, name: str = PathParam(pattern=r"^(content|style-[0-9]{1,3})$")) -> FileResponse:
        return FileResponse(job_file(job_id, f"{name}.png", name), media_type="image/png")

    @router.post("/jobs/{job_id}/cancel", response_model=JobView, summary="Cancel a job (a running one keeps its best image so far)")
    def cancel(job_id: uuid.UUID = JobId) -> dict[str, Any]:
        find(job_id)
        return with_links(manager.cancel(str(job_id)))

    @router.post("/jobs/{job_id}/rerun", response_model=JobView, status_code=202,
                 summary="A new job from this job's inputs, with its settings or changed ones")  # fmt: skip
    def rerun(job_id: uuid.UUID = JobId, changes: Optional[RerunRequest] = Body(None, description=(
        'optional: {"settings": {"seed": 7}} changes those settings (merged over the old ones), "preset" '
        'replaces the preset, "style_weights" the blend weights'))) -> dict[str, Any]:  # fmt: skip
        """The old job, its result included, is left as it was; the new job is returned."""
        old = find(job_id)
        request = {"preset": old["request"].get("preset"), "settings": dict(old["request"].get("settings") or {})}
        if changes is not None:
            if "preset" in changes.model_fields_set:
                request["preset"] = changes.preset or None
            request["settings"].update(changes.settings or {})
        # Resolved again (the server may have restarted with other options or limits) before
        # anything is made, so a refused re-run leaves nothing behind.
        resolved = resolver(request)
        check_proportions(tuple(old["content"]["size"]), resolved, f"Photo ({old['content']['name']})")
        weights = [s["weight"] for s in old["styles"]]
        if changes is not None and changes.style_weights is not None:
            given = changes.style_weights
            weights = parse_style_weights(given if isinstance(given, str) else json.dumps(given), len(old["styles"]))
        try:
            return with_links(manager.rerun(str(job_id), request, public_settings(resolved), weights))
        except KeyError:
            raise HTTPException(404, f"no job {job_id}") from None

    @router.delete("/jobs/{job_id}", status_code=204, summary="Delete a job that is not queued or running")
    def delete(job_id: uuid.UUID = JobId) -> Response:
        find(job_id)
        manager.delete(str(job_id))
        return Response(status_code=204)

    return router


async def job_events(request: Request, manager: JobManager, job_id: str) -> AsyncIterator[str]:
    """`event: job` with the job each time it changes; the stream ends when the job does.

    It ends too when the server is stopping, so an open page does not hold up a restart.
    """
    sent, last_write = -1, time.monotonic()
    while not (manager.stopping.is_set() or await request.is_disconnected()):
        try:
            version = manager.version(job_id)
            view = with_links(manager.view(job_id))
        except KeyError:  # deleted meanwhile
            yield "event: deleted\ndata: {}\n\n"
            return
        if version != sent:
            sent, last_write = version, time.monotonic()
            yield f"event: job\ndata: {json.dumps(view)}\n\n"
            if view["status"] not in ACTIVE:
                return
        elif time.monotonic() - last_write > 15:
            last_write = time.monotonic()
            yield ": keep-alive\n\n"  # proxies close silent connections
        await asyncio.sleep(0.2)


