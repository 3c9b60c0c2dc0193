"""What `i2vgen serve` adds to a job: API overhead per job and time to the first preview, CPU, tiny-shapes model.

Run: `.venv/bin/python benchmarks/bench_serve.py [--runs 10] [--steps 10] [--frames 16] [--threads 1] [--poll-ms 20]`

A real `i2vgen serve --no-ui` runs in a subprocess (loopback, its own data folder); this process is its HTTP client
and also holds the same model, to time `i2vgen.app.run.generate` called directly with the same settings. The two are
run alternately, one at a time, so they never share the cores. Per run:

- direct: `generate()` alone (sampling, decoding), and the time to its first step callback (the earliest moment any
  preview could exist);
- served: POST (multipart upload, checks, input written, row inserted) -> the preview endpoint first answers 200 ->
  the job reads `done` (the client polls both every `--poll-ms`), plus the job's own timings (queue pickup, generate, writing the MP4
  and poster).

API overhead per job = the POST's round trip + the job's created -> finished time outside the worker's own
`generate()` + the time the service's step callback took inside `generate()` (progress rows, previews): what the
service adds, measured on the same job, so the machine's noise in sampling time cancels. As a polling client sees it,
it also holds up to one polling interval. The served - direct difference is printed too; on a shared machine it
is dominated by that noise. Medians are printed, with the per-run rows as JSON (`--json FILE`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from i2vgen.app.run import generate, load_generation_pipeline, prepare
from i2vgen.app.settings import GenerationSettings

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "i2vgen" / "assets" / "samples" / "red-circle.png"
PROMPT = "a red circle moves right"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "i2vgen", "serve", "--no-ui", "--data-dir", str(data),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{url}/healthz", timeout=2).json().get("ready"):
                return proc
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not come up")


def direct_run(pipe: object, s: GenerationSettings) -> dict:
    first = []
    t0 = time.perf_counter()
    generate(pipe, s, str(SAMPLE), on_step=lambda *a: first.append(time.perf_counter()) if not first else None)
    return {"direct_s": time.perf_counter() - t0, "direct_first_step_s": first[0] - t0}


def served_run(client: httpx.Client, settings: dict, poll_s: float) -> dict:
    image = SAMPLE.read_bytes()
    t0 = time.perf_counter()
    r = client.post("/v1/jobs", files={"image": ("in.png", image)}, data={"settings": json.dumps(settings)})
    t_post = time.perf_counter()
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    t_preview = None
    while True:
        if t_preview is None and client.get(f"/v1/jobs/{job_id}/preview").status_code == 200:
            t_preview = time.perf_counter()
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            t_done = time.perf_counter()
            break
        time.sleep(poll_s)
    assert job["state"] == "done", job
    t = job["timings"]
    return {"post_ms": 1000 * (t_post - t0), "first_preview_s": (t_preview or t_done) - t0, "served_s": t_done - t0,
            "queued_s": t["queued_s"], "generate_s": t["generate_s"], "write_s": t["write_s"],
            "previews": t["previews"], "preview_decode_ms": 1000 * t.get("preview_decode_s", 0.0),
            "callback_ms": 1000 * t["callback_s"],
            # what the service adds: the POST, created -> finished outside generate() (pickup, checks, writing the
            # files and rows), and its step callback inside generate()
            "overhead_ms": 1000 * (t_post - t0 + job["finished"] - job["created"] - t["generate_s"] + t["callback_s"]),
            # the same as a polling client sees it (adds up to one polling interval)
            "client_overhead_ms": 1000 * (t_done - t0 - t["generate_s"] + t["callback_s"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--poll-ms", type=float, default=20.0, help="the client's polling interval")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = {"prompt": PROMPT, "frames": args.frames, "steps": args.steps, "sampler": "dpmpp-2m", "seed": 0}
    s = prepare(GenerationSettings(prompt=PROMPT, model="tiny-shapes", num_frames=args.frames, steps=args.steps,
                                   sampler="dpmpp-2m", seed=0), image=str(SAMPLE))
    pipe = load_generation_pipeline(s)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(Path(tmp) / "data", port, args.threads)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                poll_s = args.poll_ms / 1000
                direct_run(pipe, s), served_run(client, settings, poll_s)  # warm-up
                rows = []
                for _ in range(args.runs):
                    rows.append(direct_run(pipe, s) | served_run(client, settings, poll_s))
        finally:
            proc.terminate()
            proc.wait(30)
    for r in rows:
        r["served_minus_direct_ms"] = 1000 * (r["served_s"] - r["direct_s"])
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"tiny-shapes {s.width}x{s.height}, {args.frames} frames, DPM-Solver++ {args.steps} steps, "
          f"{args.threads} threads, polling every {args.poll_ms:g} ms, {args.runs} runs (medians)")
    print(f"  direct generate():             {med['direct_s']:.3f} s (first step {med['direct_first_step_s']:.3f} s)")
    print(f"  served, POST -> done:          {med['served_s']:.3f} s")
    print(f"  API overhead per job:          {med['overhead_ms']:.0f} ms; as the polling client sees it "
          f"{med['client_overhead_ms']:.0f} ms (served - direct, noisy: {med['served_minus_direct_ms']:.0f} ms)")
    print(f"    POST round trip:             {med['post_ms']:.1f} ms")
    print(f"    queue pickup (created->run): {1000 * med['queued_s']:.1f} ms")
    print(f"    generate() in the worker:    {med['generate_s']:.3f} s, of which the service's step callback "
          f"{med['callback_ms']:.1f} ms ({med['previews']:.0f} previews, {med['preview_decode_ms']:.1f} ms each)")
    print(f"    MP4 + poster written:        {1000 * med['write_s']:.1f} ms")
    print(f"  time to first preview:         {med['first_preview_s']:.3f} s (POST sent -> preview served)")
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "threads": args.threads, "poll_ms": args.poll_ms,
                                         "medians": med,
                                         "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
