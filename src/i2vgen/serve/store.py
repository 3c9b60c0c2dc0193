"""Jobs in SQLite, their files in the data folder, and what a restart does to them. Torch-free.

    DATA/jobs.sqlite3           one row per job: settings (resolved, with the seed), state, progress, timings
    DATA/jobs/<id>/input.png    the uploaded picture, decoded and re-encoded (written before the row exists)
    DATA/jobs/<id>/video.mp4    the result (+ video.mp4.json, the sidecar), written atomically
    DATA/jobs/<id>/preview.png  the latest per-step preview; poster.png: a frame of the result for the gallery
    DATA/serve.lock             held by the one server that owns the folder

States: queued -> running -> done | failed | cancelled (queued -> cancelled directly). A job found `running` at start
was interrupted by a crash: it is queued again once (it keeps its place: jobs run oldest first), and fails with a
reason the second time. The database runs in WAL mode with `synchronous=NORMAL`: a killed process loses nothing that
was committed (a power cut may lose the last commits).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2vgen.errors import I2VGenError
from i2vgen.io.atomic import atomic_write_bytes

STATES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 2  # a job interrupted by a crash runs once more, then fails
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    settings TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    stage TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    timings TEXT NOT NULL DEFAULT '{}',
    preview_step INTEGER,
    output TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""
INPUT, VIDEO, PREVIEW, POSTER = "input.png", "video.mp4", "preview.png", "poster.png"


class ServeError(I2VGenError):
    """A request the service refuses: an HTTP status, a one-line message and, for a bad setting, the field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


@dataclass
class Job:
    id: str
    seq: int
    state: str
    settings: dict[str, Any]  # resolved GenerationSettings fields (no runtime), seed included
    created: float
    started: float | None = None
    finished: float | None = None
    stage: str | None = None
    step: int = 0
    total: int = 0
    attempts: int = 0
    cancel_requested: bool = False
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    preview_step: int | None = None
    output: str | None = None  # the video's file name inside the job's folder, once done

    def to_json(self) -> dict[str, Any]:
        """What GET /v1/jobs/{id} returns."""
        links = {"self": f"/v1/jobs/{self.id}"}
        if self.preview_step is not None:
            links["preview"] = f"/v1/jobs/{self.id}/preview"
        if self.state == "done":
            links["video"] = f"/v1/jobs/{self.id}/video"
        return {"id": self.id, "state": self.state, "stage": self.stage, "step": self.step, "total": self.total,
                "error": self.error, "cancel_requested": self.cancel_requested, "attempts": self.attempts,
                "created": self.created, "started": self.started, "finished": self.finished,
                "timings": self.timings, "preview_step": self.preview_step, "seed": self.settings.get("seed"),
                "settings": self.settings, "links": links}


def _job(row: sqlite3.Row) -> Job:
    d = dict(row)
    d["settings"] = json.loads(d["settings"])
    d["timings"] = json.loads(d["timings"])
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Job(**d)


class JobStore:
    """The jobs of one data folder. Thread-safe (one connection behind a lock); one process per folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_folder(self.root / "serve.lock")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._lock_file.close()  # releases the folder lock

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    # ---- reads ---------------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise ServeError(404, f"no job {job_id!r}", "id")
        return _job(row)

    def list(self, *, limit: int = 20, offset: int = 0, state: str | None = None) -> tuple[list[Job], int]:
        """Newest first -> (a page of jobs, how many there are in all)."""
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
        return [_job(r) for r in rows], total

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | {r[0]: r[1] for r in rows}

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to run; None unless queued."""
        if job.state != "queued":
            return None
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq <= ?",
                                    (job.seq,)).fetchone()[0]

    # ---- submission ----------------------------------------------------------------------------------------------
    def add(self, settings: dict[str, Any], input_png: bytes, *, max_queue: int) -> Job:
        """Write the input, then the row, unless `max_queue` jobs are already waiting (429). A crash between the two
        leaves a folder without a row, which `recover` removes."""
        if self.counts()["queued"] >= max_queue:
            raise _queue_full(max_queue)
        job_id = uuid.uuid4().hex
        atomic_write_bytes(self.job_dir(job_id) / INPUT, input_png)
        try:
            with self._lock, self._db:
                queued = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]
                if queued >= max_queue:
                    raise _queue_full(max_queue)
                self._db.execute("INSERT INTO jobs (id, state, settings, created) VALUES (?, 'queued', ?, ?)",
                                 (job_id, json.dumps(settings), time.time()))
        except BaseException:
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
            raise
        return self.get(job_id)

    # ---- the worker's side ---------------------------------------------------------------------------------------
    def claim(self) -> Job | None:
        """The oldest queued job, now running (its attempt counted), or None."""
        with self._lock, self._db:
            row = self._db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1, stage = NULL, "
                             "step = 0, total = 0 WHERE id = ?", (time.time(), row[0]))
        return self.get(row[0])

    def progress(self, job_id: str, stage: str, step: int, total: int) -> None:
        self._update(job_id, stage=stage, step=step, total=total)

    def set_preview(self, job_id: str, step: int) -> None:
        self._update(job_id, preview_step=step)

    def finish(self, job_id: str, output: str, timings: dict[str, float]) -> None:
        self._update(job_id, state="done", output=output, finished=time.time(), timings=json.dumps(timings))

    def fail(self, job_id: str, reason: str, timings: dict[str, float] | None = None) -> None:
        self._update(job_id, state="failed", error=reason, finished=time.time(), timings=json.dumps(timings or {}))

    def mark_cancelled(self, job_id: str, reason: str) -> None:
        self._update(job_id, state="cancelled", error=reason, finished=time.time())

    def requeue(self, job_id: str) -> None:
        """A running job stopped by a clean shutdown goes back to the queue; that attempt does not count."""
        with self._lock, self._db:
            self._db.execute("UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), started = NULL, "
                             "stage = NULL, step = 0, total = 0 WHERE id = ? AND state = 'running'", (job_id,))

    def request_cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is marked (the worker stops it after its current step).
        Refused (409) for a job that has ended or is already being cancelled."""
        with self._lock, self._db:
            row = self._db.execute("SELECT state, cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise ServeError(404, f"no job {job_id!r}", "id")
            state, requested = row
            if state in TERMINAL:
                raise ServeError(409, f"job {job_id} has already ended ({state}); nothing to cancel")
            if requested:
                raise ServeError(409, f"job {job_id} is already being cancelled")
            if state == "queued":
                self._db.execute("UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished = ?, "
                                 "error = 'cancelled while queued' WHERE id = ?", (time.time(), job_id))
            else:
                self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return self.get(job_id)

    def _update(self, job_id: str, **values: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._lock, self._db:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))

    # ---- start-up ------------------------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Put the folder right after a crash -> one line per change: running jobs queued again (or failed after
        `MAX_ATTEMPTS`, or cancelled when that was asked), queued jobs whose input is gone failed, folders of jobs
        that were never recorded removed."""
        notes = []
        with self._lock, self._db:
            rows = self._db.execute("SELECT id, attempts, cancel_requested FROM jobs WHERE state = 'running'")
            for job_id, attempts, cancel in rows.fetchall():
                if cancel:
                    self._db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, error = ? WHERE id = ?",
                                     (time.time(), "cancelled (the server stopped while cancelling)", job_id))
                    notes.append(f"job {job_id}: was being cancelled when the server stopped; cancelled")
                elif attempts >= MAX_ATTEMPTS:
                    reason = (f"the server stopped while this job ran, {attempts} times; not retried again "
                              f"(the job may need more memory or time than the server has)")
                    self._db.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ? WHERE id = ?",
                                     (time.time(), reason, job_id))
                    notes.append(f"job {job_id}: interrupted {attempts} times; failed")
                else:
                    self._db.execute("UPDATE jobs SET state = 'queued', started = NULL, stage = NULL, step = 0, "
                                     "total = 0 WHERE id = ?", (job_id,))
                    notes.append(f"job {job_id}: interrupted by a restart; queued again")
            known = {r[0] for r in self._db.execute("SELECT id FROM jobs")}
            for job_id, in self._db.execute("SELECT id FROM jobs WHERE state = 'queued'").fetchall():
                if not (self.job_dir(job_id) / INPUT).is_file():
                    self._db.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ? WHERE id = ?",
                                     (time.time(), "the input picture is missing from the data folder", job_id))
                    notes.append(f"job {job_id}: input missing; failed")
        for d in (self.root / "jobs").iterdir():
            if d.is_dir() and d.name not in known:
                shutil.rmtree(d, ignore_errors=True)
                notes.append(f"removed {d.name}: a submission that was never recorded")
        return notes


def _queue_full(max_queue: int) -> ServeError:
    return ServeError(429, f"the queue is full ({max_queue} jobs waiting); try again later")


def _lock_folder(path: Path) -> Any:
    """Hold an exclusive lock on `path` for the life of the returned file (released by the OS if we are killed)."""
    f = open(path, "a+")  # noqa: SIM115 - held open on purpose
    try:
        import fcntl
    except ImportError:  # Windows: no lock, one server per folder is up to the user
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise I2VGenError(f"{path.parent} is in use by another `i2vgen serve`; stop it or use another --data-dir") \
            from None
    return f
