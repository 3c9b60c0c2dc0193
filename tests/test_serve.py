"""`i2vgen serve`: the REST API in-process (every endpoint, the refusals), the queue bound under 40 concurrent
submissions, cancellation within one step, restarts (the store's rules, and `kill -9` of a real server), and the
page's handlers without a browser. Jobs run the embedded tiny-shapes model at 32x32 with a few frames and steps."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve tests need the ui extra: pip install -e '.[ui]'")
pytest.importorskip("uvicorn", reason="the serve tests need the ui extra: pip install -e '.[ui]'")
pytest.importorskip("multipart", reason="the serve tests need the ui extra: pip install -e '.[ui]'")
httpx = pytest.importorskip("httpx", reason="the serve tests need httpx")
from fastapi.testclient import TestClient
from PIL import Image

from i2vgen.serve.api import TOKEN_COOKIE, create_app
from i2vgen.serve.service import JobService, ServeConfig
from i2vgen.serve.store import MAX_ATTEMPTS, JobStore
from i2vgen.train.recipe import TINY_GUIDANCE, TINY_REFINE_STRENGTH

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "i2vgen" / "assets" / "samples" / "red-circle.png"
QUICK = {"prompt": "a red circle moves right", "frames": 4, "steps": 3, "sampler": "dpmpp-2m"}
TERMINAL = ("done", "failed", "cancelled")


def png_bytes(size: tuple[int, int] = (32, 32), color: str = "red") -> bytes:
    buf = BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_service(tmp_path: Path, **kw) -> JobService:
    kw.setdefault("max_upload_bytes", 256 * 1024)
    kw.setdefault("max_pixels", 1_000_000)
    kw.setdefault("preview_interval", 0.0)  # a preview every step: the tests look for them
    return JobService(ServeConfig(data_dir=tmp_path / "data", **kw))


def post_job(client, settings: dict | str | None = None, image: bytes | None = None):
    files = {} if image is None else {"image": ("in.png", image, "image/png")}
    data = {} if settings is None else {"settings": settings if isinstance(settings, str) else json.dumps(settings)}
    return client.post("/v1/jobs", files=files or None, data=data)


def wait_for(client, job_id: str, until=lambda j: j["state"] in TERMINAL, timeout: float = 60.0) -> dict:
    t_end = time.time() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        assert time.time() < t_end, f"timed out waiting on job {job_id}: {job}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A started service (one worker, the tiny model loaded) and an in-process client of its API."""
    service = make_service(tmp_path_factory.mktemp("serve"))
    service.start()
    with TestClient(create_app(service, ui=False)) as client:
        yield service, client
    service.stop()


# ---- the endpoints ------------------------------------------------------------------------------------------------
def test_every_endpoint_round_trip(served):
    from i2vgen.io import probe_video, read_metadata, read_video

    service, client = served
    r = post_job(client, {**QUICK, "seed": 7}, SAMPLE.read_bytes())
    assert r.status_code == 202, r.text
    body = r.json()
    job_id = body["id"]
    assert body["seed"] == 7 and r.headers["location"] == f"/v1/jobs/{job_id}"
    job = wait_for(client, job_id)
    assert job["state"] == "done", job
    assert (job["stage"], job["step"], job["total"], job["attempts"]) == ("base", 3, 3, 1)
    assert job["settings"]["frames"] == 4 and job["settings"]["width"] == 32 and job["settings"]["seed"] == 7
    assert {"generate_s", "write_s", "first_preview_s"} <= set(job["timings"])

    video = client.get(f"/v1/jobs/{job_id}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert f"i2vgen-{job_id}.mp4" in video.headers["content-disposition"]
    mp4 = service.video(job_id)
    info = probe_video(mp4)
    assert (info.num_frames, info.width, info.height) == (4, 32, 32)
    assert read_metadata(mp4)["seed"] == 7
    for fmt, mime in (("gif", "image/gif"), ("webp", "image/webp")):
        r = client.get(f"/v1/jobs/{job_id}/video", params={"format": fmt})
        assert r.status_code == 200 and r.headers["content-type"] == mime
        assert Image.open(BytesIO(r.content)).n_frames >= 2
    preview = client.get(f"/v1/jobs/{job_id}/preview")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert Image.open(BytesIO(preview.content)).size == (256, 256)  # 32x32 scaled up for the page

    listing = client.get("/v1/jobs", params={"limit": 1}).json()
    assert listing["jobs"][0]["id"] == job_id and listing["total"] >= 1
    assert client.get("/v1/jobs", params={"state": "done"}).json()["total"] >= 1
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["ok"] and health.json()["ready"]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/video", "/v1/jobs/{job_id}/preview",
            "/healthz"} <= set(paths)
    assert set(paths["/v1/jobs/{job_id}"]) == {"get", "delete"}

    # the same seed gives the same video, and it is what `i2vgen.app.run.generate` makes (no second code path). Until
    # the mp4 writer kept libx264 off its AVX-512 code, about half the runs failed here (benchmarks/x264_determinism.py)
    again = wait_for(client, post_job(client, {**QUICK, "seed": 7}, SAMPLE.read_bytes()).json()["id"])
    frames, _ = read_video(mp4)
    assert (read_video(service.video(again["id"]))[0] == frames).all()
    from i2vgen.app.run import generate, prepare
    from i2vgen.io import write_video

    s = prepare(service.job_settings(service.get(job_id)))
    direct = generate(service.workers[0].pipeline(s), s, str(service.input_path(service.get(job_id))))
    write_video(direct.frames, mp4.parent / "direct.mp4", fps=direct.fps)
    assert (read_video(mp4.parent / "direct.mp4")[0] == frames).all()


def test_a_refine_job_runs_the_cascade(served):
    service, client = served
    settings = {**QUICK, "frames": 4, "steps": 2, "refine": True, "refine_steps": 2}
    job_id = post_job(client, settings, SAMPLE.read_bytes()).json()["id"]
    stages = set()
    job = wait_for(client, job_id, until=lambda j: stages.add(j["stage"]) or j["state"] in TERMINAL)
    assert job["state"] == "done" and job["stage"] == "refine" and job["settings"]["refiner_model"] == \
        "tiny-shapes-refiner", job
    from i2vgen.io import probe_video

    info = probe_video(service.video(job_id))
    assert (info.num_frames, info.width, info.height) == (4, 64, 64)  # the refiner's size
    assert client.get(f"/v1/jobs/{job_id}/preview").status_code == 200


def bad_requests(client, service) -> list[tuple[str, object, int, str | None]]:
    """(what, response, expected status, expected field) for every kind of refusal."""
    ok = SAMPLE.read_bytes()
    big = BytesIO()
    Image.new("RGB", (1200, 1000), "white").save(big, format="PNG")  # 1.2 MP > max_pixels, a small file
    busy = post_job(client, {**QUICK, "steps": 400}, ok).json()["id"]
    wait_for(client, busy, until=lambda j: j["state"] == "running")
    cancelled = post_job(client, QUICK, ok).json()["id"]
    assert service.cancel(cancelled).state == "cancelled"  # while queued behind `busy`: it never ran, no preview
    service.cancel(busy)
    assert wait_for(client, busy)["state"] == "cancelled"
    missing = "0" * 32
    cases = [
        ("no image", post_job(client, QUICK), 422, "image"),
        ("empty image", post_job(client, QUICK, b""), 422, "image"),
        ("corrupt image", post_job(client, QUICK, b"this is not a picture"), 422, "image"),
        ("truncated PNG", post_job(client, QUICK, ok[: len(ok) // 2]), 422, "image"),
        ("too many pixels", post_job(client, QUICK, big.getvalue()), 413, "image"),
        ("file too large", post_job(client, QUICK, os.urandom(300 * 1024)), 413, "image"),
        ("no settings", post_job(client, None, ok), 422, "settings"),
        ("bad JSON", post_job(client, '{"prompt": "x",', ok), 400, "settings"),
        ("settings not an object", post_job(client, "[1, 2]", ok), 422, "settings"),
        ("JSON body instead of multipart", client.post("/v1/jobs", json=QUICK), 422, None),
        ("unknown field", post_job(client, {**QUICK, "colour": "red"}, ok), 422, "colour"),
        ("no prompt", post_job(client, {"steps": 3}, ok), 422, "prompt"),
        ("steps 0", post_job(client, {**QUICK, "steps": 0}, ok), 422, "steps"),
        ("frames as text", post_job(client, {**QUICK, "frames": "4"}, ok), 422, "frames"),
        ("negative guidance", post_job(client, {**QUICK, "guidance": -1}, ok), 422, "guidance"),
        ("unknown sampler", post_job(client, {**QUICK, "sampler": "magic"}, ok), 422, "sampler"),
        ("odd width", post_job(client, {**QUICK, "width": 33}, ok), 422, "width"),
        ("negative seed", post_job(client, {**QUICK, "seed": -1}, ok), 422, "seed"),
        ("model not served", post_job(client, {**QUICK, "model": "/etc"}, ok), 422, "model"),
        ("refine not a bool", post_job(client, {**QUICK, "refine": "yes"}, ok), 422, "refine"),
        ("strength 0", post_job(client, {**QUICK, "refine": True, "strength": 0}, ok), 422, "strength"),
        ("negative refine guidance", post_job(client, {**QUICK, "refine": True, "refine_guidance": -1}, ok), 422,
         "refine_guidance"),
        ("unknown refine sampler", post_job(client, {**QUICK, "refine": True, "refine_sampler": "ddim"}, ok), 422,
         "refine_sampler"),
        ("unknown job", client.get(f"/v1/jobs/{missing}"), 404, "id"),
        ("malformed job id", client.get("/v1/jobs/../../etc/passwd"), 404, None),
        ("video of an unknown job", client.get(f"/v1/jobs/{missing}/video"), 404, "id"),
        ("video of a cancelled job", client.get(f"/v1/jobs/{cancelled}/video"), 409, None),
        ("unknown video format", client.get(f"/v1/jobs/{cancelled}/video?format=avi"), 422, "format"),
        ("preview of a job that has none", client.get(f"/v1/jobs/{cancelled}/preview"), 404, None),
        ("cancel an ended job", client.delete(f"/v1/jobs/{cancelled}"), 409, None),
        ("cancel an unknown job", client.delete(f"/v1/jobs/{missing}"), 404, "id"),
        ("page size 0", client.get("/v1/jobs?limit=0"), 422, "limit"),
        ("page size not a number", client.get("/v1/jobs?limit=many"), 422, "limit"),
        ("unknown state filter", client.get("/v1/jobs?state=lost"), 422, "state"),
    ]
    return cases


def test_bad_requests_are_4xx_json_and_the_server_stays_healthy(served):
    service, client = served
    before = client.get("/v1/jobs").json()["total"]
    cases = bad_requests(client, service)
    assert len(cases) >= 15
    for what, r, status, field in cases:
        assert r.status_code == status, (what, r.status_code, r.text)
        body = r.json()
        assert isinstance(body.get("error"), str) and "\n" not in body["error"], (what, body)
        if field is not None:
            assert body.get("field") == field, (what, body)
    assert client.get("/v1/jobs").json()["total"] == before + 2  # only the two cancelled ones were queued
    assert client.get("/healthz").json()["ok"]
    r = post_job(client, QUICK, SAMPLE.read_bytes())  # and it still takes work
    assert wait_for(client, r.json()["id"])["state"] == "done"


def test_the_api_fields_are_the_generate_flags():
    """The job JSON takes `i2vgen generate`'s flags with '_' for '-' (README)."""
    import argparse

    from i2vgen.cli import build_parser
    from i2vgen.serve.service import FIELDS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["generate"]
    flags = {o for a in sub._actions for o in a.option_strings}
    assert {"--" + k.replace("_", "-") for k in FIELDS} <= flags, sorted(
        {"--" + k.replace("_", "-") for k in FIELDS} - flags)


def test_token_gate_for_api_and_ui(tmp_path):
    service = make_service(tmp_path, token="s3cret-token", preload=False)
    with TestClient(create_app(service, ui=False), follow_redirects=False) as client:
        assert client.get("/healthz").status_code == 200  # liveness needs no token
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "s3cret-token"}):
            r = client.get("/v1/jobs", headers=headers)
            assert r.status_code == 401 and "token" in r.json()["error"], headers
            assert post_job(client, QUICK, SAMPLE.read_bytes()).status_code == 401
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert client.get("/docs").status_code == 401
        page = client.get("/")
        assert page.status_code == 401 and "token" in page.text
        # a browser opens /?token=... once and gets a cookie; the UI's own requests carry it
        r = client.get("/docs?token=s3cret-token")
        assert r.status_code == 303 and r.headers["location"] == "/docs" and TOKEN_COOKIE in r.headers["set-cookie"]
        assert client.get("/docs").status_code == 200
        client.cookies.clear()
        client.cookies.set(TOKEN_COOKIE, "nope")
        assert client.get("/docs").status_code == 401
    service.stop()


# ---- the queue, cancellation, restarts ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_thread(app):
    """The app on a free loopback port, served by uvicorn in a thread (real HTTP, real concurrency)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_forty_concurrent_submissions_against_a_queue_of_16(tmp_path):
    service = make_service(tmp_path, max_queue=16, preview_interval=10.0)
    service.start()
    image = SAMPLE.read_bytes()
    settings = json.dumps({**QUICK, "steps": 2})
    with uvicorn_thread(create_app(service, ui=False)) as url, httpx.Client(base_url=url, timeout=60) as client:
        # a long job keeps the worker busy during the burst, so exactly max_queue submissions fit in the queue
        blocker = client.post("/v1/jobs", files={"image": ("in.png", image)},
                              data={"settings": json.dumps({**QUICK, "steps": 1000})}).json()["id"]
        wait_for(client, blocker, until=lambda j: j["state"] == "running")
        barrier = threading.Barrier(40)

        def submit(i: int) -> httpx.Response:
            barrier.wait()
            return client.post("/v1/jobs", files={"image": ("in.png", image)}, data={"settings": settings})

        with ThreadPoolExecutor(40) as pool:
            responses = list(pool.map(submit, range(40)))
        accepted = [r.json()["id"] for r in responses if r.status_code == 202]
        refused = [r for r in responses if r.status_code == 429]
        assert (len(accepted), len(refused)) == (16, 24), [r.status_code for r in responses]
        assert all("queue is full" in r.json()["error"] for r in refused)
        assert len(set(accepted)) == len(accepted)
        assert client.delete(f"/v1/jobs/{blocker}").status_code == 202
        for job_id in accepted:
            assert wait_for(client, job_id, timeout=120)["state"] == "done"
        listing = client.get("/v1/jobs", params={"limit": 100}).json()
        assert listing["total"] == 17 and {j["id"] for j in listing["jobs"]} == {blocker, *accepted}
        assert all(j["attempts"] == 1 for j in listing["jobs"])  # each ran once
    assert sorted(p.name for p in (service.store.root / "jobs").iterdir()) == sorted([blocker, *accepted])
    service.stop()


def test_cancel_during_sampling_frees_the_worker_within_one_step(served):
    service, client = served
    long = post_job(client, {**QUICK, "steps": 400}, SAMPLE.read_bytes()).json()["id"]
    after = post_job(client, QUICK, SAMPLE.read_bytes()).json()["id"]
    queued = post_job(client, QUICK, SAMPLE.read_bytes()).json()["id"]
    r = client.delete(f"/v1/jobs/{queued}")  # a queued job is cancelled at once
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    wait_for(client, long, until=lambda j: j["step"] >= 3)
    t0 = time.time()
    r = client.delete(f"/v1/jobs/{long}")
    assert r.status_code == 202 and r.json()["cancel_requested"], r.text
    step_at_cancel = r.json()["step"]
    job = wait_for(client, long)
    latency = time.time() - t0
    assert job["state"] == "cancelled" and "step" in job["error"]
    assert job["step"] <= step_at_cancel + 1, (step_at_cancel, job["step"])  # stopped after the step it was in
    assert latency < 5.0, latency
    assert client.delete(f"/v1/jobs/{long}").status_code == 409  # cancel twice
    assert wait_for(client, after)["state"] == "done"  # the worker went on to the next job
    assert not (service.store.job_dir(long) / "video.mp4").exists()


def test_restart_rules_of_the_store(tmp_path):
    store = JobStore(tmp_path)
    job = store.add({"prompt": "x"}, png_bytes(), max_queue=4)
    waiting = store.add({"prompt": "y"}, png_bytes(), max_queue=4)
    with pytest.raises(Exception, match="in use by another"):
        JobStore(tmp_path)  # one server per folder
    (tmp_path / "jobs" / ("f" * 32)).mkdir()  # a submission whose row was never written
    assert store.claim().id == job.id
    store.close()
    for attempt in range(1, MAX_ATTEMPTS + 1):  # killed while running, MAX_ATTEMPTS times
        store = JobStore(tmp_path)
        notes = store.recover()
        if attempt < MAX_ATTEMPTS:
            assert store.get(job.id).state == "queued" and any("queued again" in n for n in notes)
            assert store.claim().id == job.id  # it keeps its place: oldest first
        store.close()
    store = JobStore(tmp_path)
    store.recover()
    failed = store.get(job.id)
    assert failed.state == "failed" and f"{MAX_ATTEMPTS} times" in failed.error and failed.attempts == MAX_ATTEMPTS
    assert store.get(waiting.id).state == "queued"  # the other job waits on, untouched
    assert not (tmp_path / "jobs" / ("f" * 32)).exists()
    store.close()


def start_server(data_dir: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = open(data_dir.parent / f"serve-{port}-{time.time():.0f}.log", "wb")  # noqa: SIM115 - the child's
    return subprocess.Popen([sys.executable, "-m", "i2vgen", "serve", "--data-dir", str(data_dir), "--port",
                             str(port), *extra], stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t_end = time.time() + timeout
    while time.time() < t_end:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not come up")


def test_kill_9_while_a_job_runs_then_restart_finishes_it(tmp_path):
    data, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(data, port, "--no-ui")
    try:
        wait_healthy(url, proc)
        with httpx.Client(base_url=url, timeout=30) as client:
            job_id = post_job(client, {**QUICK, "steps": 16, "seed": 3}, SAMPLE.read_bytes()).json()["id"]
            wait_for(client, job_id, until=lambda j: j["step"] >= 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc = start_server(data, port, "--no-ui")
        wait_healthy(url, proc)
        with httpx.Client(base_url=url, timeout=30) as client:
            job = wait_for(client, job_id, timeout=90)
            assert job["state"] == "done" and job["attempts"] == 2, job
            assert job["step"] == job["total"] == 16
            listing = client.get("/v1/jobs").json()
            assert listing["total"] == 1  # nothing lost, nothing duplicated
            assert client.get(f"/v1/jobs/{job_id}/video").status_code == 200
            # a clean stop (SIGTERM) while a job runs puts it back in the queue without counting the attempt
            second = post_job(client, {**QUICK, "steps": 400}, SAMPLE.read_bytes()).json()["id"]
            wait_for(client, second, until=lambda j: j["step"] >= 1)
        leftovers = [p.name for p in (data / "jobs" / job_id).iterdir() if ".tmp-" in p.name]
        assert not leftovers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        restarted = JobService(ServeConfig(data_dir=data, preload=False))  # as the next start sees it
        assert (restarted.get(second).state, restarted.get(second).attempts) == ("queued", 0)
        from i2vgen.serve.ui import UiHandlers

        assert UiHandlers(restarted).gallery()[1] == [job_id]  # the page's gallery after a restart
        restarted.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---- the page's handlers (no browser) and the command line --------------------------------------------------------
def test_ui_handlers_without_a_browser(served, tmp_path):
    from i2vgen.serve.store import ServeError
    from i2vgen.serve.ui import UiHandlers

    service, _ = served
    h = UiHandlers(service)
    assert h.defaults("tiny-shapes") == {"frames": 8, "width": 32, "height": 32, "guidance": TINY_GUIDANCE,
                                         "strength": TINY_REFINE_STRENGTH}
    picture = tmp_path / "in.png"
    picture.write_bytes(SAMPLE.read_bytes())
    job = h.submit(str(picture), "a red circle moves up", "", "tiny-shapes", "dpmpp-2m", 3.0, 2.0, "", 4.0, 32.0,
                   32.0, False, 0.3)
    assert isinstance(job.settings["seed"], int)  # a blank seed is drawn, and shown
    seen = list(h.watch(job.id, poll_s=0.01))
    assert seen[-1].state == "done" and seen[-1].step == 3
    assert f"seed **{job.settings['seed']}**" in h.info(seen[-1])
    assert 'value="1" max="1"' in h.progress_html(seen[-1])
    preview, video = h.files(seen[-1])
    assert preview.endswith("preview.png") and video.endswith("video.mp4")
    items, ids = h.gallery()
    assert ids[0] == job.id and "seed" in items[0][1]
    with pytest.raises(ServeError, match="steps must be"):
        h.submit(str(picture), "x", "", "tiny-shapes", "ddim", 0, 2.0, "", 4, 32, 32, False, 0.3)
    with pytest.raises(ServeError, match="image file is required"):
        h.submit(None, "x", "", "tiny-shapes", "ddim", 3, 2.0, "12", 4, 32, 32, False, 0.3)


def test_serve_command_refuses_bad_flags_in_one_line(tmp_path, capsys):
    from i2vgen.cli import main

    for argv, message in ((["--port", "70000"], "--port must be in"), (["--max-queue", "0"], "--max-queue"),
                          (["--token", "short"], "--token must be")):
        assert main(["serve", "--data-dir", str(tmp_path), *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("i2vgen: error:") and message in err and "\n" not in err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", "--data-dir", str(tmp_path), "--port", str(s.getsockname()[1])]) == 1
        assert "cannot listen" in capsys.readouterr().err


def test_serve_help_loads_no_web_or_torch_module():
    code = ("import sys\nfrom i2vgen.cli import build_parser\nbuild_parser().parse_args(['serve'])\n"
            "print(sorted(m for m in ('torch', 'fastapi', 'gradio', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout.strip() == "[]", out.stderr
