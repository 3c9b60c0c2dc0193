"""`i2vgen serve`: the web UI and the REST API over a persistent job queue (`i2vgen.serve`).

Needs the `ui` extra (`pip install -e '.[ui]'`: FastAPI, uvicorn, python-multipart, Gradio); `--no-ui` serves the API
without Gradio. Loads nothing heavy until it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "i2vgen" / "serve"


def add_serve(sub: argparse._SubParsersAction) -> None:
    from i2vgen.app.settings import DTYPES

    p = sub.add_parser("serve", help="web UI and REST API with a persistent job queue (pip install -e '.[ui]')",
                       description="Serve a web page (at /) and a REST API (/v1/jobs, docs at /docs) that queue "
                                   "image-to-video jobs, run them one at a time, and keep them (settings, state, "
                                   "inputs, videos) in --data-dir across restarts. Without --model it serves the "
                                   "embedded tiny-shapes cascade, offline.")
    p.add_argument("--model", action="append", default=None, metavar="M",
                   help="a model jobs may use: folder, built-in name or Hub id (repeatable; the first is the "
                        "default; default: tiny-shapes)")
    p.add_argument("--refiner-model", default=None, metavar="R",
                   help="the refiner of refine jobs (default: the one the first model's folder names)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--data-dir", type=Path, default=default_data_dir(),
                   help="where jobs, inputs and videos are kept (default: %(default)s)")
    p.add_argument("--token", default=os.environ.get("I2VGEN_SERVE_TOKEN"),
                   help="require this bearer token for the API and the UI (default: $I2VGEN_SERVE_TOKEN; the UI "
                        "is opened once as /?token=TOKEN)")
    p.add_argument("--max-queue", type=int, default=64, help="jobs that may wait; more are refused with 429")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest picture file accepted (MB)")
    p.add_argument("--max-pixels", type=int, default=16_000_000, help="largest picture accepted (pixels)")
    p.add_argument("--workers", type=int, default=1,
                   help="jobs run at once; each worker holds its own models (default 1: jobs never compete for "
                        "memory)")
    p.add_argument("--keep-loaded", type=int, default=2, help="pipelines a worker keeps loaded (base, cascade)")
    p.add_argument("--preview-interval", type=float, default=0.5,
                   help="seconds between preview decodes at least (the first and last step always get one)")
    p.add_argument("--no-ui", action="store_true", help="the REST API only (no Gradio needed)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bf16 on CPUs with native bf16 for wide "
                                                                     "UNets, else fp32 (as `generate`)")
    p.add_argument("--offload", action="store_true", help="model CPU offload: one component on the device at a time")
    p.add_argument("--sequential-cfg", action="store_true", help="guidance as two forwards (less memory)")
    p.add_argument("--max-memory", default=None, metavar="AMOUNT", help="memory a job may use, e.g. 20GB")
    p.set_defaults(func=run_serve)


def check_args(args: argparse.Namespace) -> None:
    from i2vgen.errors import InputError

    for name, low, high in (("port", 0, 65535), ("max_queue", 1, 10**6), ("workers", 1, 64),
                            ("max_pixels", 1, 10**10), ("keep_loaded", 1, 64)):
        v = getattr(args, name)
        if not low <= v <= high:
            raise InputError(f"--{name.replace('_', '-')} must be in [{low}, {high}], got {v}")
    if not 0 < args.max_upload_mb <= 10**4:
        raise InputError(f"--max-upload-mb must be in (0, 10000], got {args.max_upload_mb:g}")
    if not 0 <= args.preview_interval <= 3600:
        raise InputError(f"--preview-interval must be in [0, 3600] seconds, got {args.preview_interval:g}")
    if args.token is not None and (len(args.token) < 8 or not args.token.isascii() or " " in args.token):
        raise InputError("--token must be at least 8 printable ASCII characters without spaces")


def run_serve(args: argparse.Namespace) -> int:
    from i2vgen.app.settings import DeviceSettings, parse_memory
    from i2vgen.serve.service import DEFAULT_MODEL, JobService, ServeConfig

    check_args(args)
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401 - python-multipart, for the uploads
        import uvicorn
    except ImportError as e:
        from i2vgen.errors import I2VGenError

        raise I2VGenError(f"i2vgen serve needs the ui extra ({e.name} is missing): pip install -e '.[ui]'") from None
    _check_port(args.host, args.port)
    if args.host not in LOOPBACK:
        print(f"i2vgen: warning: listening on {args.host}: anyone who can reach port {args.port} can "
              + ("use it with the token (sent unencrypted: put a TLS proxy in front)" if args.token
                 else "submit jobs and read every result; pass --token"), file=sys.stderr)
    runtime = DeviceSettings(device=args.device, dtype=args.dtype, offload=args.offload,
                             sequential_cfg=args.sequential_cfg,
                             max_memory=None if args.max_memory is None else parse_memory(args.max_memory))
    config = ServeConfig(data_dir=args.data_dir, models=tuple(args.model or (DEFAULT_MODEL,)),
                         refiner_model=args.refiner_model, runtime=runtime, workers=args.workers,
                         max_queue=args.max_queue, max_upload_bytes=int(args.max_upload_mb * 2**20),
                         max_pixels=args.max_pixels, keep_loaded=args.keep_loaded,
                         preview_interval=args.preview_interval, token=args.token)
    service = JobService(config)
    try:
        from i2vgen.serve.api import create_app

        app = create_app(service, ui=not args.no_ui)
        for note in service.recovered:
            print(f"i2vgen serve: {note}", file=sys.stderr)
        service.start()
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"i2vgen serve: http://{shown}:{args.port}/ (API docs: /docs), {len(service.models)} model(s), "
              f"data in {service.store.root}", file=sys.stderr, flush=True)
        _serve_until_stopped(uvicorn, app, args.host, args.port)
    finally:
        service.stop()
    print("i2vgen serve: stopped", file=sys.stderr)
    return 0


class _Stop(Exception):
    """SIGTERM, raised where uvicorn re-raises it after its own graceful shutdown."""


def _serve_until_stopped(uvicorn: Any, app: Any, host: str, port: int) -> None:
    """Run uvicorn until Ctrl-C or SIGTERM. uvicorn shuts down gracefully and then re-raises the signal; turning it
    into an exception lets the caller stop the workers (a running job goes back to the queue) and exit with 0."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_port(host: str, port: int) -> None:
    """A one-line error for a port in use, before anything loads."""
    import socket

    from i2vgen.errors import I2VGenError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise I2VGenError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or "
                              f"--host") from None
