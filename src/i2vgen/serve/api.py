"""The REST API (FastAPI; OpenAPI docs at /docs) over a `JobService`, with the web UI mounted at `/`.

    POST   /v1/jobs                 multipart: image (file) + settings (JSON, `i2vgen generate`'s fields) -> 202 {id}
    GET    /v1/jobs                 ?limit=20&offset=0&state=done: newest first, {jobs, total, limit, offset, next}
    GET    /v1/jobs/{id}            state (queued/running/done/failed/cancelled), stage, step/total, error, timings
    GET    /v1/jobs/{id}/video      ?format=mp4|gif|webp
    GET    /v1/jobs/{id}/preview    the latest per-step preview, PNG
    DELETE /v1/jobs/{id}            cancel: a queued job at once (200), a running one after its step (202)
    GET    /healthz                 200 while every worker is alive, else 503 (needs no token)

Every refusal is JSON, `{"error": "one line", "field": "steps"}` (field when one setting is to blame), with a 4xx
status: 400 unreadable JSON, 401 no or wrong token, 404 unknown job, 409 the job's state does not allow it, 413 upload
too large, 422 a setting or the picture refused, 429 queue full.
"""

import hmac
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from i2vgen.serve.service import VIDEO_FORMATS, JobService
from i2vgen.serve.store import ServeError

TOKEN_COOKIE = "i2vgen_token"
OPEN_PATHS = ("/healthz",)
JSON_PREFIXES = ("/v1/", "/docs", "/openapi.json", "/redoc", "/healthz")


def create_app(service: JobService, *, ui: bool = True) -> Any:
    """The FastAPI app: the API routes, the UI at `/` (unless `ui=False`), the token gate when the service has one.

    (No `from __future__ import annotations` in this module: FastAPI reads the routes' annotations at run time.)
    """
    from fastapi import FastAPI, File, Form, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    from i2vgen import __version__

    app = FastAPI(title="i2vgen serve", version=__version__,
                  description="Image-to-video jobs (I2VGen-XL): queue, progress, previews, results. "
                              "Send `Authorization: Bearer TOKEN` when the server was started with --token.")

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, e: ServeError) -> JSONResponse:
        return JSONResponse(e.to_json(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {}
        name = str(err.get("loc", ("", "request"))[-1])
        return JSONResponse({"error": f"{name}: {err.get('msg', 'invalid')}", "field": name}, status_code=422)

    @app.post("/v1/jobs", status_code=202, summary="Queue a video")
    def submit(image: Annotated[UploadFile | None, File(description="the picture (PNG, JPEG, WebP)")] = None,
               settings: Annotated[str | None, Form(description='JSON object, e.g. {"prompt": "a red circle moves '
                                                                'right", "steps": 10, "seed": 1}')] = None,
               ) -> JSONResponse:
        data = None if image is None else image.file.read(service.config.max_upload_bytes + 1)
        job = service.submit(data, settings)
        return JSONResponse({"id": job.id, "state": job.state, "seed": job.settings["seed"],
                             "links": job.to_json()["links"]}, status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs", summary="List jobs, newest first")
    def list_jobs(limit: int = Query(20), offset: int = Query(0), state: str | None = Query(None)) -> dict:
        jobs, total = service.list(limit=limit, offset=offset, state=state)
        nxt = offset + len(jobs)
        return {"jobs": [j.to_json() for j in jobs], "total": total, "limit": limit, "offset": offset,
                "next": f"/v1/jobs?limit={limit}&offset={nxt}" + (f"&state={state}" if state else "")
                if nxt < total else None}

    @app.get("/v1/jobs/{job_id}", summary="A job's state and progress")
    def get_job(job_id: str) -> dict:
        job = service.get(job_id)
        return job.to_json() | {"queue_position": service.store.queue_position(job)}

    @app.get("/v1/jobs/{job_id}/video", summary="The finished video", response_class=FileResponse)
    def get_video(job_id: str, format: str = Query("mp4")) -> FileResponse:
        path = service.video(job_id, format)
        return FileResponse(path, media_type=VIDEO_FORMATS[format], filename=f"i2vgen-{job_id}.{format}")

    @app.get("/v1/jobs/{job_id}/preview", summary="The latest preview frame (PNG)")
    def get_preview(job_id: str) -> Response:
        data = service.preview(job_id).read_bytes()  # read whole: the file is replaced while sampling
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.delete("/v1/jobs/{job_id}", summary="Cancel a queued or running job")
    def cancel(job_id: str) -> JSONResponse:
        job = service.cancel(job_id)
        return JSONResponse(job.to_json(), status_code=200 if job.state == "cancelled" else 202)

    @app.get("/healthz", summary="Liveness: workers alive, job counts")
    def healthz() -> JSONResponse:
        h = service.health()
        return JSONResponse(h, status_code=200 if h["ok"] else 503)

    if ui:
        from i2vgen.serve.ui import mount_ui

        mount_ui(app, service)
    app.add_middleware(BodyLimit, max_bytes=service.config.max_upload_bytes + 2**20)
    if service.config.token:
        app.add_middleware(TokenGate, token=service.config.token)
    return app


class TokenGate:
    """Every path but /healthz needs the token: `Authorization: Bearer TOKEN`, or the cookie a browser gets by
    opening any page once with `?token=TOKEN` (the UI's own requests then carry it)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token.encode()

    def _matches(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(), self.token)

    def _authorised(self, scope: dict) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and self._matches(auth[7:].strip()):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE and self._matches(value):
                return True
        return False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if self._matches(query.pop("token", [""])[0]):
            rest = urlencode(query, doseq=True)
            response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token.decode(), httponly=True, samesite="strict")
        elif scope["path"].startswith(JSON_PREFIXES):
            response = JSONResponse({"error": "this server needs a token: send 'Authorization: Bearer TOKEN'"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        else:
            response = HTMLResponse("<h1>i2vgen serve</h1><p>This server needs its token: open this page once as "
                                    "<code>/?token=TOKEN</code>.</p>", status_code=401)
        await response(scope, receive, send)


class BodyLimit:
    """Refuse a request whose declared body is larger than `max_bytes` (413) before reading any of it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers", [])).get(b"content-length", b"0")
            if length.isdigit() and int(length) > self.max_bytes:
                from starlette.responses import JSONResponse

                response = JSONResponse({"error": f"the request body has {int(length)} bytes; the limit is "
                                                  f"{self.max_bytes}", "field": "image"}, status_code=413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
