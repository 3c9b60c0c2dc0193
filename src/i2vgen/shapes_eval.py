"""`i2vgen eval-shapes`: the tiny-shapes results table (issue 6, item 5) from held-out prompts and images.

Every row animates the first frames of held-out clips (`shapes.split_seeds("heldout", n)`, unseen in training) with
their captions and measures, with `i2vgen.eval`:

- direction accuracy: the tracked centroid of every colour the prompt names moves in the prompted direction;
- first-frame fidelity: PSNR / SSIM of the base stage's frame 0 against the input image (32x32);
- refinement gain: the refiner's 64x64 output and the bicubic up-scaling of the base output, both against the
  ground-truth 64x64 clip (rows that run the refiner);
- temporal flicker (VBench) and colour drift of the base output.

Variants: `full` (DDIM 50 + refiner), `dpmpp-25` (DPM-Solver++ 2M, 25 steps), and with
that sampler `no-detail` (first-frame latent zeroed: no latent context tokens, no concat branch) and `no-clip`
(global CLIP image embedding zeroed); and two references that need no sampling of the base stage: `ground-truth`
(the metrics of the true clips: the tracker's ceiling; its first-frame fidelity is the VAE round trip of the input,
the ceiling of every sampled row, and its refined column the refiner VAE's round trip of the true high-resolution
clip, the ceiling of every refined row) and `refine-gt` (the refiner on the true 32x32 clips degraded the way the
base stage's output is, by the base VAE's round trip, against bicubic up-scaling of the same frames). The
ablations zero a condition at inference in a model trained with it (see docs/tiny-shapes.md). `text-use` samples
nothing: it asks whether the base UNet reads the direction word at all (`text_use`).

Guidance, refiner strength, guidance and sampler default to the model folder's suggestions (`_i2vgen_defaults`),
else the reference's 9.0, 0.6, 7.5 and DPM-Solver++ 2M SDE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from i2vgen.errors import InputError

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"sampler": "ddim", "steps": 50, "ablate": (), "refine": True},
    "dpmpp-25": {"sampler": "dpmpp-2m", "steps": 25, "ablate": (), "refine": False},
    # the ablations use the 25-step sampler (half the time); compare them with the dpmpp-25 row
    "no-detail": {"sampler": "dpmpp-2m", "steps": 25, "ablate": ("first_frame",), "refine": False},
    "no-clip": {"sampler": "dpmpp-2m", "steps": 25, "ablate": ("image",), "refine": False},
    "ground-truth": {},
    "refine-gt": {},
    # no sampling: does the denoiser read the direction word? (`text_use`)
    "text-use": {},
}
DEFAULT_VARIANTS = ("ground-truth", "full", "dpmpp-25", "no-detail", "no-clip", "refine-gt", "text-use")


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


TEXT_USE_TIMESTEPS = (999, 800, 600)
_DIRECTIONS = ("left", "right", "up", "down")


def text_use(base: Any, clip: Any, *, seed: int, timesteps: tuple[int, ...] = TEXT_USE_TIMESTEPS,
             repeats: int = 2, max_shapes: int = 1) -> dict[str, Any] | None:
    """Whether the base UNet reads the direction words, without sampling: its v-prediction loss on the true clip
    with the caption as written and with every other combination of direction words (4 captions for one shape, 16
    for two), at `timesteps` with the same noise (`repeats` draws from `seed`). -> {"text_use_ok_<t>": the true
    caption has the lowest loss, "text_gap_<t>": mean loss of the wrong captions minus the true one's,
    "text_use_ok_per_shape_<t>": for each shape, whether its true word beats its other three with the other
    shapes' words kept true (binding: does the word after a colour move that shape?), and "x0_err_<ref>": the mean
    squared distance (latents, second half of the frames) of the x0 prediction at the highest `timesteps`
    (averaged over the noise draws) to the true clip ("true"), to frame 0 held still ("static") and to the mean of
    the clips that differ only in the directions ("mean", the best a denoiser can do without reading the words)};
    None for clips with more than `max_shapes` shapes.

    A denoiser that ignores the text has a gap of 0 and picks the true caption 1 time in 4 (16) by chance."""
    import itertools

    import torch

    from i2vgen.shapes import with_directions

    if len(clip.shapes) > max_shapes:
        return None
    truth = tuple(sh.direction for sh in clip.shapes)
    combos = list(itertools.product(_DIRECTIONS, repeat=len(truth)))
    j = combos.index(truth)
    others = [[k for k, c in enumerate(combos) if all(c[m] == truth[m] for m in range(len(truth)) if m != i)]
              for i in range(len(truth))]  # per shape: the 4 combos that change only its word
    renders = [with_directions(clip, c) for c in combos]  # renders[j] is the clip
    captions = [r.caption for r in renders]
    unet = base.unet
    dev = next(unet.parameters()).device
    num_frames = clip.frames.shape[0]
    frames = torch.from_numpy(np.stack([r.frames for r in renders])).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1)
    n = len(captions)  # frames: (n, 3, F, H, W)
    with torch.no_grad():
        text = base.text_encoder.encode(captions).to(dev, unet.dtype)  # (n, 77, D)
        image, _ = base.encode_image(clip.first_frame, clip.frames.shape[2], clip.frames.shape[1], generator=None,
                                     sample_posterior=False)  # (1, D)
        z_all = base.vae.encode(frames.to(base.vae.device), sample=False).to(dev, unet.dtype)  # (n, 4, F, h, w)
        z0 = z_all[j:j + 1]  # (1, 4, F, h, w)
        row: dict[str, Any] = {}
        x0_true_caption = torch.zeros_like(z0)
        for t in timesteps:
            a = float(base.alphas_cumprod[t])
            losses = torch.zeros(n, dtype=torch.float64)
            for r in range(repeats):
                eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed * 1000 + r)).to(z0)
                x_t = a ** 0.5 * z0 + (1 - a) ** 0.5 * eps
                v = a ** 0.5 * eps - (1 - a) ** 0.5 * z0  # (1, 4, F, h, w)
                pred = unet(x_t.expand(n, *z0.shape[1:]), torch.full((n,), float(t), device=dev),
                            encoder_hidden_states=text, image_embeds=image.to(dev, unet.dtype).expand(n, -1),
                            first_frame_latent=z0[:, :, 0].expand(n, -1, -1, -1),
                            fps=torch.full((n,), 8, device=dev))  # (n, 4, F, h, w)
                losses += (pred.float() - v.float()).pow(2).flatten(1).mean(1).double().cpu() / repeats
                if t == max(timesteps):
                    x0_true_caption += (a ** 0.5 * x_t - (1 - a) ** 0.5 * pred[j:j + 1]) / repeats
            row[f"text_use_ok_{t}"] = bool(losses.argmin() == j)
            row[f"text_gap_{t}"] = float((losses.sum() - losses[j]) / (n - 1) - losses[j])
            row[f"text_use_ok_per_shape_{t}"] = [bool(min(ks, key=lambda k: losses[k]) == j) for ks in others]
        late = slice(num_frames // 2, None)  # the second half of the clip, where the shapes have moved
        for name, ref in (("true", z0), ("static", z0[:, :, :1].expand_as(z0)), ("mean", z_all.mean(0, keepdim=True))):
            row[f"x0_err_{name}"] = float((x0_true_caption - ref)[:, :, late].float().pow(2).mean())
    return row


def vae_round_trip(vae: Any, frames: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) or (F, H, W, 3) -> float, same shape, in [0, 1]: decoded from the VAE posterior mean."""
    import torch

    video = frames if frames.ndim == 4 else frames[None]  # (F, H, W, 3)
    x = torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1)
    with torch.no_grad():
        y = vae.decode(vae.encode(x.to(vae.device), sample=False))  # (1, 3, F, H, W)
    out = (y[0].float().cpu() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()  # (F, H, W, 3)
    return out if frames.ndim == 4 else out[0]


def evaluate_variant(name: str, clips: list[Any], clips_hr: list[Any], base: Any, refiner: Any, settings: Any, *,
                     seed: int, start: int, refine_steps: int | None,
                     progress: Callable[[str], None]) -> dict[str, Any]:
    """Rows (one per clip) and their means for one variant; `settings`: the resolved `GenerationSettings` whose
    guidance and timestep spacing the base stage and whose strength, guidance and sampler the refiner use."""
    import torch

    from i2vgen import eval as ev

    spec = VARIANTS[name]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for i, (clip, clip_hr) in enumerate(zip(clips, clips_hr)):
        gen = torch.Generator().manual_seed(seed + start + i)  # the same draws however the clips are split
        row: dict[str, Any] = {"seed": clip.seed, "prompt": clip.caption}
        if name == "text-use":
            row.update(text_use(base, clip, seed=seed + start + i) or {})
        elif name == "ground-truth":
            video = clip.frames.astype(np.float64) / 255  # (F, 32, 32, 3)
        elif name == "refine-gt":  # the true clip degraded the way a base output is: through the base VAE
            video = vae_round_trip(base.vae, clip.frames)  # (F, 32, 32, 3)
        else:
            video = base(clip.first_frame, clip.caption, num_frames=len(clip.frames), height=clip.frames.shape[1],
                         width=clip.frames.shape[2], target_fps=8, num_inference_steps=spec["steps"],
                         guidance_scale=settings.guidance, sampler=spec["sampler"], generator=gen,
                         ablate=spec["ablate"], timestep_spacing=settings.timestep_spacing, output_type="np")[0]
        if name not in ("refine-gt", "text-use"):
            per_shape = ev.prompt_agreement_per_item(video, clip.caption)  # what prompt_agreement reads, kept
            row["direction_ok"] = all(per_shape) if per_shape else None
            row["num_shapes"], row["direction_ok_per_shape"] = len(clip.shapes), per_shape
            # the true clip's frame 0 through the VAE (posterior mean): the ceiling of first-frame fidelity
            ff = ev.first_frame_fidelity(vae_round_trip(base.vae, clip.first_frame) if name == "ground-truth"
                                         else video, clip.first_frame)
            row["first_frame_psnr"], row["first_frame_ssim"] = ff["psnr"], ff["ssim"]
            row["flicker"] = ev.temporal_flickering(video)
            row["colour_drift"] = ev.colour_drift(video)["mean"]
        if name == "ground-truth" and refiner is not None:
            # the refiner's ceiling: its VAE's round trip of the true high-resolution clip, against bicubic
            ceiling = vae_round_trip(refiner.vae, clip_hr.frames)
            gain = ev.refinement_gain(video, ceiling, clip_hr.frames)
            row.update({k: gain[k] for k in ("psnr_refined", "psnr_bicubic", "psnr_gain_db", "ssim_gain")})
        if name == "refine-gt" or spec.get("refine"):
            size = clip_hr.frames.shape[1]
            refined = refiner(video, clip.caption, width=size, height=size, strength=settings.strength,
                              guidance_scale=settings.refine_guidance, sampler=settings.refine_sampler,
                              num_inference_steps=refine_steps, generator=gen, output_type="np")[0]
            gain = ev.refinement_gain(video, refined, clip_hr.frames)
            row.update({k: gain[k] for k in ("psnr_refined", "psnr_bicubic", "psnr_gain_db", "ssim_gain")})
            row["direction_ok_refined"] = ev.prompt_agreement(refined, clip.caption)
        rows.append(row)
        if (i + 1) % 10 == 0 or i + 1 == len(clips):
            progress(f"{name}: {i + 1}/{len(clips)} ({time.perf_counter() - t0:.0f} s)")
    return {"summary": summarise(name, rows, time.perf_counter() - t0), "rows": rows}


def summarise(name: str, rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Means over the rows (direction accuracies over the rows whose prompt the tracker can check)."""
    summary: dict[str, Any] = {"variant": name, "n": len(rows), "seconds": round(seconds, 1)}
    checked = [r["direction_ok"] for r in rows if r.get("direction_ok") is not None]
    summary["direction_accuracy"] = float(np.mean(checked)) if checked else None
    checked = [r["direction_ok_refined"] for r in rows if r.get("direction_ok_refined") is not None]
    summary["direction_accuracy_refined"] = float(np.mean(checked)) if checked else None
    # issue 11's targets: one-shape clips, and each shape of the two-shape clips on its own
    for key, shapes in (("direction_accuracy_one_shape", 1), ("direction_accuracy_two_shapes_per_shape", 2)):
        per = [ok for r in rows if r.get("num_shapes") == shapes for ok in r.get("direction_ok_per_shape") or []]
        summary[key] = float(np.mean(per)) if per else None
    for key in ("first_frame_psnr", "first_frame_ssim", "flicker", "colour_drift", "psnr_refined", "psnr_bicubic",
                "psnr_gain_db", "ssim_gain"):
        summary[key] = _mean(rows, key)
    if name == "text-use":
        summary["text_use_n"] = sum(1 for r in rows if f"text_gap_{TEXT_USE_TIMESTEPS[0]}" in r)
        for t in TEXT_USE_TIMESTEPS:
            summary[f"text_use_acc_{t}"] = _mean(rows, f"text_use_ok_{t}")
            summary[f"text_gap_{t}"] = _mean(rows, f"text_gap_{t}")
        for ref in ("true", "static", "mean"):
            summary[f"x0_err_{ref}"] = _mean(rows, f"x0_err_{ref}")
    return summary


def evaluate_shapes(model: str = "tiny-shapes", refiner_model: str = "tiny-shapes-refiner", *, n: int = 100,
                    start: int = 0,
                    variants: tuple[str, ...] = DEFAULT_VARIANTS, seed: int = 0, guidance: float | None = None,
                    strength: float | None = None, refine_guidance: float | None = None,
                    refine_sampler: str | None = None, refine_steps: int | None = None, device: str = "cpu",
                    progress: Callable[[str], None] | None = None, spacing: str | None = None) -> dict[str, Any]:
    """Run `variants` on the first `n` held-out clips; -> {"settings", "variants": {name: {"summary", "rows"}}}.
    `guidance`, `strength`, `refine_guidance` and `refine_sampler` (refiner) and `spacing` (the base stage's timestep
    grid) default as for `i2vgen generate` (`GenerationSettings`: the model folder's suggestions, else the
    reference's values; a folder without a `timestep_spacing` leaves each sampler its own)."""
    import torch

    from i2vgen.app.settings import GenerationSettings
    from i2vgen.pipelines.base import I2VGenPipeline
    from i2vgen.pipelines.refine import I2VGenRefinePipeline
    from i2vgen.shapes import make_clip, split_seeds

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise InputError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    s = GenerationSettings.from_model_folder(model, refine=True, guidance=guidance, strength=strength,
                                             refine_guidance=refine_guidance, refine_sampler=refine_sampler,
                                             timestep_spacing=spacing)
    size, size_hr, frames = s.width, s.refine_width, s.num_frames
    base = I2VGenPipeline.from_pretrained(model, device=device)
    need_refiner = any(v in ("refine-gt", "ground-truth") or VARIANTS[v].get("refine") for v in variants)
    refiner = I2VGenRefinePipeline.from_pretrained(refiner_model, device=device) if need_refiner else None
    seeds = split_seeds("heldout", start + n)[start:]
    clips = [make_clip(k, size=size, num_frames=frames) for k in seeds]
    clips_hr = [make_clip(k, size=size_hr, num_frames=frames) for k in seeds]
    out: dict[str, Any] = {
        "settings": {"model": str(model), "refiner": str(refiner_model), "n": n, "start": start,
                     "heldout_seeds": [seeds[0], seeds[-1]],
                     "seed": seed, "guidance": s.guidance, "strength": s.strength,
                     "refine_guidance": s.refine_guidance, "refine_sampler": s.refine_sampler,
                     "refine_steps": refine_steps, "timestep_spacing": s.timestep_spacing,
                     "device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "size": size, "refine_size": size_hr, "frames": frames},
        "variants": {}}
    for name in variants:
        out["variants"][name] = evaluate_variant(name, clips, clips_hr, base, refiner, s, seed=seed, start=start,
                                                 refine_steps=refine_steps, progress=progress)
    return out


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown_table(result: dict[str, Any]) -> str:
    """The results as a Markdown table (one row per variant)."""
    header = ("| variant | direction acc. (one shape / per shape of two) | first-frame PSNR (dB) | first-frame SSIM | refined PSNR (dB) | "
              "bicubic PSNR (dB) | refinement gain (dB) | flicker | colour drift | s |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    probes = []
    for name, v in result["variants"].items():
        s = v["summary"]
        if name == "text-use":
            probes = [f"| {t} | {_fmt(s[f'text_use_acc_{t}'], '.0%')} | {_fmt(s[f'text_gap_{t}'], '.2e')} |"
                      for t in TEXT_USE_TIMESTEPS]
            probe_n = s["text_use_n"]
            x0_errs = (f"x0 prediction at t = {max(TEXT_USE_TIMESTEPS)}, squared distance (second half of the clip) to "
                       f"the true clip {_fmt(s.get('x0_err_true'), '.4f')}, to frame 0 held still "
                       f"{_fmt(s.get('x0_err_static'), '.4f')}, to the mean of the four directions "
                       f"{_fmt(s.get('x0_err_mean'), '.4f')}")
            continue
        acc = "–" if s["direction_accuracy"] is None else f"{100 * s['direction_accuracy']:.0f} %"
        if s.get("direction_accuracy_one_shape") is not None:  # one shape / each shape of two
            acc += (f" ({_fmt(s['direction_accuracy_one_shape'], '.0%')} / "
                    f"{_fmt(s.get('direction_accuracy_two_shapes_per_shape'), '.0%')})")
        lines.append(f"| {name} | {acc} | {_fmt(s['first_frame_psnr'], '.2f')} | {_fmt(s['first_frame_ssim'], '.3f')} "
                     f"| {_fmt(s['psnr_refined'], '.2f')} | {_fmt(s['psnr_bicubic'], '.2f')} "
                     f"| {_fmt(s['psnr_gain_db'], '+.2f')} | {_fmt(s['flicker'], '.2f')} "
                     f"| {_fmt(s['colour_drift'], '.2f')} | {s['seconds']:.0f} |")
    if probes:
        lines += ["", f"text-use ({probe_n} one-shape clips; chance 25 %, gap 0 for a denoiser that ignores the text):",
                  "", "| t | true caption has the lowest loss | loss gap (wrong - true) |", "|---|---|---|", *probes,
                  "", x0_errs]
    return "\n".join(lines) + "\n"


def combine_results(paths: list[str]) -> dict[str, Any]:
    """Results files of one evaluation split by variant or by clips (`--start`) -> one result: rows of a variant are
    concatenated (a clip evaluated twice is refused) and summarised again; each variant keeps its files' settings."""
    out: dict[str, Any] = {"settings": {}, "variants": {}}
    for path in paths:
        try:
            part = json.loads(Path(path).read_text(encoding="utf-8"))
            variants, settings = part["variants"], part["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"cannot read eval-shapes results from {path}: {e}") from None
        for name, v in variants.items():
            have = out["variants"].setdefault(name, {"rows": [], "settings": [], "seconds": 0.0})
            seen = {r["seed"] for r in have["rows"]}
            if any(r["seed"] in seen for r in v["rows"]):
                raise InputError(f"{path}: variant {name} repeats clips of an earlier file")
            have["rows"] += v["rows"]
            have["settings"].append(settings)
            have["seconds"] += v["summary"]["seconds"]
        out["settings"] = out["settings"] or settings
    for name, v in out["variants"].items():
        v["rows"].sort(key=lambda r: r["seed"])
        v["summary"] = summarise(name, v["rows"], v.pop("seconds"))
    out["settings"]["n"] = max(v["summary"]["n"] for v in out["variants"].values())
    every = [st for v in out["variants"].values() for st in v["settings"]]
    if all("heldout_seeds" in st and "start" in st for st in every):  # the clips of all files, not the first's
        out["settings"]["start"] = min(st["start"] for st in every)
        out["settings"]["heldout_seeds"] = [min(st["heldout_seeds"][0] for st in every),
                                            max(st["heldout_seeds"][1] for st in every)]
    return out


# ---- command line ----------------------------------------------------------------------------------------------
def add_eval_shapes_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from i2vgen.diffusion.sampler_table import sampler_names  # torch-free

    p = subparsers.add_parser(
        "eval-shapes", help="the tiny-shapes results table on held-out prompts and images",
        description="Animate the first frames of held-out shapes clips with their captions and report direction "
                    "accuracy, first-frame PSNR/SSIM, refinement gain over bicubic, flicker and colour drift, for "
                    "the full cascade and its ablations. Variants: " + ", ".join(VARIANTS) + ".")
    p.add_argument("--model", default="tiny-shapes", help="base model (default: the built-in tiny-shapes)")
    p.add_argument("--refiner-model", default="tiny-shapes-refiner")
    p.add_argument("-n", type=int, default=100, help="held-out clips (default 100)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated (default: all)")
    p.add_argument("--start", type=int, default=0,
                   help="skip the first held-out clips: evaluate clips start ... start + n - 1 (to split a run)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of held-out clip i is seed + i")
    p.add_argument("--guidance", type=float, default=None,
                   help="base guidance (default: the model's suggestion, 2.0 for tiny-shapes; else 9.0)")
    p.add_argument("--strength", type=float, default=None,
                   help="refiner strength (default: the model's suggestion; else 0.6: t = 599)")
    p.add_argument("--refine-guidance", type=float, default=None,
                   help="refiner guidance (default: the model's suggestion; else 7.5)")
    p.add_argument("--refine-sampler", default=None, choices=sampler_names("refine"),
                   help="refiner sampler (default: the model's suggestion; else dpmpp-2m-sde)")
    p.add_argument("--refine-steps", type=int, default=None)
    p.add_argument("--spacing", choices=("leading", "trailing", "linspace"), default=None,
                   help="the base stage's timestep grid (default: the model folder's suggestion, else the sampler's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--output", "-o", default=None, help="write the results with per-clip rows here (JSON)")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="print one table from results files of earlier runs (e.g. variants run in parallel) instead "
                        "of evaluating; with --output, also write them as one file")
    p.set_defaults(func=run_eval_shapes)
    return p


def run_eval_shapes(args: argparse.Namespace) -> int:
    import torch

    from i2vgen.io.atomic import atomic_write_text

    if args.combine:
        result = combine_results(args.combine)
        if args.output:
            atomic_write_text(args.output, json.dumps(result, indent=1, default=float) + "\n")
        sys.stdout.write(markdown_table(result))
        return 0
    if args.n < 1:
        raise InputError(f"-n must be >= 1, got {args.n}")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if not variants:
        raise InputError("--variants names no variant")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.start < 0:
        raise InputError(f"--start must be >= 0, got {args.start}")
    result = evaluate_shapes(args.model, args.refiner_model, n=args.n, start=args.start, variants=variants,
                             seed=args.seed,
                             guidance=args.guidance, strength=args.strength,
                             refine_guidance=args.refine_guidance, refine_sampler=args.refine_sampler,
                             refine_steps=args.refine_steps,
                             device=args.device, spacing=args.spacing)
    table = markdown_table(result)
    if args.output:
        atomic_write_text(args.output, json.dumps(result, indent=1, default=float) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    sys.stdout.write(table)
    return 0
