"""Video-text training data: source readers, `VideoTextDataset`, `collate` and a sharded, resumable sampler.

Sources are the reference's list files (`path|||caption`), CSV (WebVid-style, with a column map), JSONL and
folders of images/videos. A video entry becomes a clip of `num_frames` frames sampled at `target_fps` by
VGen's rule (spec §4.1 "Video reading"): stride = max(1, round(native fps / target fps)), random start,
decoding only up to the last frame needed. Frames are cover-resized (PIL BOX) and centre-cropped with the
reference arithmetic (`latent_preprocess`); the first sampled frame is also the conditioning image, cropped
for CLIP (`clip_preprocess`). An image entry is a 1-frame clip with fps condition 1, as in the reference's
image batches (`max_frames == 1`).

Determinism: a sample depends only on (seed, epoch, index). Its random start comes from
`numpy.random.default_rng([seed, epoch, index, attempt])`, so every worker process and every rank produce the
same tensors for the same key. The batch sampler puts the epoch into each key it yields, so worker processes
never need `set_epoch`; `VideoTextDataset.set_epoch` only sets the epoch used when indexing with a plain int.

Bad files (missing, empty, corrupt, no frames, too short) never stop a run: `__getitem__` moves on to the next
entry of the same kind (video or image), at most `max_retries` times, logs each bad path once per process and
lists the paths it skipped in the sample's "skipped" entry. `collate` concatenates those lists, so the main
process can count skips although decoding happens in worker processes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from i2vgen.errors import InputError
from i2vgen.io import (
    VideoInfo,
    clip_preprocess,
    latent_preprocess,
    load_image,
    probe_video,
    read_video,
    sample_clip_indices,
)

logger = logging.getLogger(__name__)

LIST_SEPARATOR = "|||"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".gif"}
)
DEFAULT_COLUMNS = {"path": "path", "caption": "caption"}
CAPTIONS_FILE = "captions.txt"  # a folder source's default `name|||caption` list
_SAMPLER_STREAM = 0x5A3  # keeps the sampler's random stream apart from the per-sample streams

Media = Literal["auto", "video", "image"]
SampleKey = tuple[int, int, int]  # (index, epoch, offset): what ShardedBatchSampler yields for each sample


@dataclass(frozen=True)
class Entry:
    """One training pair: a video (or image) file and its caption."""

    path: str
    caption: str
    is_image: bool = False


# --------------------------------------------------------------------------------------------------- sources


@dataclass
class DataSource:
    """Where entries come from.

    `format` "auto" picks "folder" for a directory, "csv" for `.csv`, "jsonl" for `.jsonl`, else "list"
    (`path|||caption` lines). Relative media paths start at `root` (default: the folder holding the list, CSV
    or JSONL file). `columns` maps "path" and "caption" to the CSV/JSONL field names (e.g. WebVid:
    `{"path": "videoid", "caption": "name"}`); `path_template` (e.g. `"{page_dir}/{videoid}.mp4"`) builds the
    path from any of the row's fields instead. `captions` is a folder's `name|||caption` list (relative:
    inside the folder; default `captions.txt` there if present); a `<name>.txt` next to a file also gives its
    caption. `media` "auto" tells images from videos by file extension.
    """

    path: str
    format: Literal["auto", "list", "csv", "jsonl", "folder"] = "auto"
    root: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    path_template: str | None = None
    captions: str | None = None
    media: Media = "auto"

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        if self.format not in ("auto", "list", "csv", "jsonl", "folder"):
            raise InputError(
                f"data source format must be auto, list, csv, jsonl or folder, got {self.format!r}"
            )
        if self.media not in ("auto", "video", "image"):
            raise InputError(f"data source media must be auto, video or image, got {self.media!r}")
        unknown = set(self.columns) - set(DEFAULT_COLUMNS)
        if unknown:
            raise InputError(f"data source columns may map only 'path' and 'caption', got {sorted(unknown)}")
        self.columns = DEFAULT_COLUMNS | dict(self.columns)


def read_source(source: DataSource) -> list[Entry]:
    """The entries of one source, in file order (folders: sorted paths). Media files are not opened here."""
    path = Path(source.path).expanduser()
    fmt = source.format
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = "folder" if path.is_dir() else {".csv": "csv", ".jsonl": "jsonl"}.get(suffix, "list")
    if fmt == "folder":
        return read_folder(path, captions=source.captions, media=source.media)
    if fmt == "list":
        return read_list_file(path, root=source.root, media=source.media)
    read = read_csv if fmt == "csv" else read_jsonl
    return read(
        path, columns=source.columns, path_template=source.path_template, root=source.root, media=source.media
    )


def read_sources(sources: Iterable[DataSource]) -> list[Entry]:
    """All sources' entries, concatenated in order."""
    return [entry for source in sources for entry in read_source(source)]


def read_list_file(
    path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None, media: Media = "auto"
) -> list[Entry]:
    """The reference's list file: one `path|||caption` per line (a line without `|||` has an empty caption;
    blank lines and lines starting with '#' are ignored). Relative paths start at `root`, default the file's
    folder."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    entries = []
    for line in _read_text(path).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        media_path, _, caption = line.partition(LIST_SEPARATOR)
        media_path = _resolve(media_path.strip(), base)
        entries.append(Entry(media_path, caption.strip(), _is_image(media_path, media)))
    return entries


def read_csv(
    path: str | os.PathLike[str],
    *,
    columns: dict[str, str] | None = None,
    path_template: str | None = None,
    root: str | os.PathLike[str] | None = None,
    media: Media = "auto",
) -> list[Entry]:
    """A CSV with a header row, e.g. WebVid's `videoid,contentUrl,duration,page_dir,name` with
    `columns={"path": "videoid", "caption": "name"}, path_template="{videoid}.mp4"`. See `DataSource`."""
    path = Path(path)
    columns = DEFAULT_COLUMNS | dict(columns or {})
    text = _read_text(path)
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    needed = [columns["caption"]] + ([] if path_template else [columns["path"]])
    missing = [c for c in needed if c not in header]
    if missing:
        raise InputError(
            f"{path}: no column {missing[0]!r} (columns: {', '.join(header)}); set the column map"
        )
    rows = ((n + 2, row) for n, row in enumerate(reader))  # line numbers, the header being line 1
    return _rows_to_entries(rows, columns, path_template, Path(root) if root else path.parent, media, path)


def read_jsonl(
    path: str | os.PathLike[str],
    *,
    columns: dict[str, str] | None = None,
    path_template: str | None = None,
    root: str | os.PathLike[str] | None = None,
    media: Media = "auto",
) -> list[Entry]:
    """One JSON object per line, `{"path": ..., "caption": ...}` or other field names through `columns`."""
    path = Path(path)
    columns = DEFAULT_COLUMNS | dict(columns or {})
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise InputError(f"{path}:{n}: not valid JSON: {e}") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        rows.append((n, row))
    return _rows_to_entries(rows, columns, path_template, Path(root) if root else path.parent, media, path)


def read_folder(
    folder: str | os.PathLike[str], *, captions: str | os.PathLike[str] | None = None, media: Media = "auto"
) -> list[Entry]:
    """Every image/video file under `folder` (recursive, sorted, hidden files skipped). Captions come from the
    `captions` list file (relative: inside the folder; default `captions.txt` if present), else from a
    `<name>.txt` next to the file, else are empty."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder not found: {str(folder)!r}")
    suffixes = {"auto": IMAGE_SUFFIXES | VIDEO_SUFFIXES, "image": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES}[
        media
    ]
    known: dict[str, str] = {}
    list_file = folder / captions if captions is not None else folder / CAPTIONS_FILE
    if captions is not None or list_file.is_file():
        known = {e.path: e.caption for e in read_list_file(list_file, root=folder)}
    entries = []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder).parts
        if f.suffix.lower() not in suffixes or any(p.startswith(".") for p in rel) or not f.is_file():
            continue
        caption = known.get(str(f))
        if caption is None:
            sidecar = f.with_suffix(".txt")
            caption = _read_text(sidecar).strip() if sidecar.is_file() else ""
        entries.append(Entry(str(f), caption, _is_image(str(f), media)))
    return entries


def _rows_to_entries(
    rows: Iterable[tuple[int, dict[str, Any]]],
    columns: dict[str, str],
    path_template: str | None,
    root: Path,
    media: Media,
    where: Path,
) -> list[Entry]:
    entries, empty = [], 0
    for n, row in rows:
        if path_template:
            try:
                raw = path_template.format_map(row)
            except (KeyError, IndexError, ValueError) as e:
                raise InputError(
                    f"{where}:{n}: path_template {path_template!r} cannot be filled from fields "
                    f"{sorted(row)}: {e!r}"
                ) from None
        else:
            if columns["path"] not in row:
                raise InputError(f"{where}:{n}: no field {columns['path']!r}; set the column map")
            raw = row[columns["path"]]
        raw = "" if raw is None else str(raw).strip()
        if not raw:
            empty += 1
            continue
        caption = row.get(columns["caption"])
        media_path = _resolve(raw, root)
        entries.append(
            Entry(media_path, "" if caption is None else str(caption).strip(), _is_image(media_path, media))
        )
    if empty:
        logger.warning("%s: ignored %d rows with an empty path", where, empty)
    return entries


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"data file not found: {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read data file {str(path)!r}: {e}") from None


def _resolve(raw: str, root: Path) -> str:
    p = Path(raw).expanduser()
    return str(p if p.is_absolute() else root / p)


def _is_image(path: str, media: Media) -> bool:
    if media != "auto":
        return media == "image"
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


# --------------------------------------------------------------------------------------------------- dataset


@dataclass
class DataConfig:
    """What the dataset reads and how it cuts clips. `asdict(cfg)` serialises it and `DataConfig(**d)`
    rebuilds it: `sources` may be given as `DataSource`s, dicts of their fields, or plain paths."""

    sources: list[DataSource] = field(default_factory=list)
    num_frames: int = 16  # F, frames per video clip
    target_fps: int = 16  # frames are sampled at this rate; the fps condition of video samples
    width: int = 1280  # training size (the reference trains at 1280x704)
    height: int = 704
    clip_width: int | None = None  # side of the square cropped for CLIP before the 224² resize; None: width
    # Clips with fewer frames are skipped; longer ones short of F are padded with their last frame. None: F.
    min_frames: int | None = None
    # "single": an image is (3, 1, H, W) and batches hold only images or only videos; "static": F copies.
    image_mode: Literal["single", "static"] = "single"
    image_weight: float | None = None  # share of each epoch's samples that are images; None: every entry once
    seed: int = 0
    max_retries: int = 16  # entries tried after a bad one before __getitem__ gives up

    def __post_init__(self) -> None:
        if isinstance(self.sources, (str, os.PathLike, DataSource, dict)):
            self.sources = [self.sources]
        self.sources = [_as_source(s) for s in self.sources]
        for name in ("num_frames", "target_fps", "width", "height"):
            _check_positive(getattr(self, name), name)
        if self.clip_width is not None:
            _check_positive(self.clip_width, "clip_width")
        if self.min_frames is not None and not 1 <= self.min_frames <= self.num_frames:
            raise InputError(
                f"min_frames must be between 1 and num_frames={self.num_frames}, got {self.min_frames}"
            )
        if self.image_mode not in ("single", "static"):
            raise InputError(f"image_mode must be 'single' or 'static', got {self.image_mode!r}")
        if self.image_weight is not None and not 0.0 <= self.image_weight <= 1.0:
            raise InputError(f"image_weight must be between 0 and 1 (or None), got {self.image_weight}")
        if self.seed < 0 or self.max_retries < 0:
            raise InputError(f"seed and max_retries must be >= 0, got {self.seed} and {self.max_retries}")


def _as_source(s: DataSource | dict[str, Any] | str | os.PathLike[str]) -> DataSource:
    if isinstance(s, DataSource):
        return s
    if isinstance(s, dict):
        return DataSource(**s)
    return DataSource(path=os.fspath(s))


def _check_positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


class VideoTextDataset(Dataset):
    """Video-text (and image-text) clips for training; see the module docstring for sampling and skipping.

    `dataset[i]` (epoch from `set_epoch`) or `dataset[(i, epoch)]` / `dataset[(i, epoch, offset)]` (what
    `ShardedBatchSampler` yields) returns:
        frames        float32 (3, F, H, W) in [-1, 1]; an image in "single" mode is (3, 1, H, W)
        clip_pixels   float32 (3, 224, 224), CLIP-normalised crop of the first frame (the conditioning image)
        caption       str
        fps           int, the fps condition: target_fps, or 1 for an image
        num_frames    int, real frames before padding (1 for an image)
        is_image      bool
        path          str, the file the sample came from (after any skips)
        index         int, that file's entry index
        frame_indices list[int], the source frames used
        skipped       list[str], bad files passed over to produce this sample
        position      {"epoch", "offset"}: only for sampler keys, the data position after this sample's batch
    """

    def __init__(self, config: DataConfig, entries: Sequence[Entry] | None = None) -> None:
        self.config = config
        self.entries = list(read_sources(config.sources) if entries is None else entries)
        if not self.entries:
            raise InputError("the training data has no entries; check the data sources")
        self.is_image = [e.is_image for e in self.entries]
        weight = config.image_weight
        if weight and not any(self.is_image):
            raise InputError(f"image_weight={weight} but the data sources hold no images")
        if weight is not None and weight < 1 and all(self.is_image):
            raise InputError(f"image_weight={weight} but the data sources hold no videos")
        self.min_frames = config.min_frames or config.num_frames
        self.clip_width = config.clip_width or config.width
        self.epoch = 0
        # Retries stay within an entry's kind, so image and video batches stay homogeneous.
        self._kind = [np.flatnonzero(~np.asarray(self.is_image)), np.flatnonzero(self.is_image)]
        self._rank_in_kind = np.empty(len(self.entries), dtype=np.int64)
        for group in self._kind:
            self._rank_in_kind[group] = np.arange(len(group))
        self._probes: dict[str, VideoInfo | str] = {}  # per process: probe result or its error message
        self._logged: set[str] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """The epoch used by `dataset[i]` with a plain int (sampler keys carry their own epoch)."""
        self.epoch = operator.index(epoch)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index, epoch, offset = self._parse_key(key)
        skipped: list[str] = []
        reason = ""
        for attempt, j in enumerate(self._candidates(index)):
            entry = self.entries[j]
            rng = np.random.default_rng([self.config.seed, epoch, index, attempt])
            try:
                sample = self._load_image(entry) if entry.is_image else self._load_video(entry, rng)
            except Exception as e:  # noqa: BLE001 - a bad file must not stop a training run; it is logged
                reason = str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
                self._log_skip(entry.path, reason)
                skipped.append(entry.path)
                continue
            sample |= {"caption": entry.caption, "path": entry.path, "index": j, "skipped": skipped}
            if offset is not None:
                sample["position"] = {"epoch": epoch, "offset": offset}
            return sample
        raise InputError(
            f"{len(skipped)} entries in a row from index {index} could not be read (last: {reason}); "
            "check the data sources or raise max_retries"
        )

    def _parse_key(self, key: int | tuple[int, ...]) -> tuple[int, int, int | None]:
        if isinstance(key, tuple):
            index, epoch, offset = key[0], key[1], (key[2] if len(key) > 2 else None)
        else:
            index, epoch, offset = key, self.epoch, None
        index, epoch = operator.index(index), operator.index(epoch)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} entries")
        if epoch < 0:
            raise InputError(f"epoch must be >= 0, got {epoch}")
        return index % len(self), epoch, offset

    def _candidates(self, index: int) -> list[int]:
        """`index`, then the next entries of the same kind (cyclic), at most `max_retries` of them."""
        group = self._kind[int(self.is_image[index])]
        start = int(self._rank_in_kind[index])
        tries = min(len(group), self.config.max_retries + 1)
        return [int(group[(start + k) % len(group)]) for k in range(tries)]

    def _load_video(self, entry: Entry, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        info = self._probe(entry.path)
        stride = max(1, round(info.fps / cfg.target_fps))
        indices = sample_clip_indices(info.num_frames, info.fps, cfg.target_fps, cfg.num_frames, rng)
        if len(indices) < self.min_frames:
            raise InputError(
                f"too short: {info.num_frames} frames at {info.fps:g} fps give {len(indices)} frames at "
                f"stride {stride}, fewer than min_frames={self.min_frames}"
            )
        # (n, h, w, 3): decodes up to the clip's last frame only
        frames, _ = read_video(entry.path, start=indices[0], stride=stride, max_frames=len(indices))
        n = len(frames)
        if n < self.min_frames:
            raise InputError(
                f"decoded only {n} frames from frame {indices[0]}, fewer than min_frames={self.min_frames}"
            )
        images = [Image.fromarray(f) for f in frames]
        crops = [latent_preprocess(im, cfg.width, cfg.height) for im in images]  # n x (3, H, W)
        pixels = torch.stack(crops, dim=1)  # (3, n, H, W)
        if n < cfg.num_frames:  # pad by repeating the last frame (the reference pads with zeros)
            pixels = torch.cat([pixels, pixels[:, -1:].expand(-1, cfg.num_frames - n, -1, -1)], dim=1)
        return {
            "frames": pixels.contiguous(),  # (3, F, H, W)
            "clip_pixels": clip_preprocess(images[0], self.clip_width),  # (3, 224, 224)
            "fps": cfg.target_fps,
            "num_frames": n,
            "is_image": False,
            "frame_indices": indices[:n],
        }

    def _load_image(self, entry: Entry) -> dict[str, Any]:
        cfg = self.config
        image = load_image(entry.path)
        pixels = latent_preprocess(image, cfg.width, cfg.height)[:, None]  # (3, 1, H, W)
        if cfg.image_mode == "static":
            pixels = pixels.expand(-1, cfg.num_frames, -1, -1).contiguous()  # (3, F, H, W)
        return {
            "frames": pixels,
            "clip_pixels": clip_preprocess(image, self.clip_width),
            "fps": 1,  # the reference's fps condition for image batches
            "num_frames": 1,
            "is_image": True,
            "frame_indices": [0],
        }

    def _probe(self, path: str) -> VideoInfo:
        """`probe_video`, cached per process; a file that fails to probe fails the same way every time."""
        info = self._probes.get(path)
        if info is None:
            try:
                info = probe_video(path)
            except InputError as e:
                info = str(e)
            self._probes[path] = info
        if isinstance(info, str):
            raise InputError(info)
        return info

    def _log_skip(self, path: str, reason: str) -> None:
        if path not in self._logged:  # once per path and process (each worker logs its own)
            self._logged.add(path)
            logger.warning("skipping %s: %s", path, reason)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Samples → a batch: frames (B, 3, F, H, W), clip_pixels (B, 3, 224, 224), fps / num_frames / indices
    (B,) int64, is_image (B,) bool, captions / paths / frame_indices lists, skipped (every sample's skips in
    one list), position (the data position after this batch, for samples from `ShardedBatchSampler`).
    Samples of other datasets may lack index / frame_indices / skipped; their other keys go through torch's
    `default_collate`.
    """
    shapes = sorted({tuple(s["frames"].shape) for s in samples})
    if len(shapes) > 1:
        raise InputError(
            f"cannot batch clips of shapes {shapes}: images in image_mode='single' are 1-frame clips; "
            "use make_dataloader, whose batches never mix images and videos, or image_mode='static'"
        )
    batch = {
        "frames": torch.stack([s["frames"] for s in samples]),  # (B, 3, F, H, W)
        "clip_pixels": torch.stack([s["clip_pixels"] for s in samples]),  # (B, 3, 224, 224)
        "captions": [s["caption"] for s in samples],
        "fps": torch.tensor([s["fps"] for s in samples], dtype=torch.long),
        "num_frames": torch.tensor([s["num_frames"] for s in samples], dtype=torch.long),
        "is_image": torch.tensor([s["is_image"] for s in samples], dtype=torch.bool),
        "paths": [s["path"] for s in samples],
        "indices": torch.tensor([s.get("index", -1) for s in samples], dtype=torch.long),
        "frame_indices": [s.get("frame_indices") for s in samples],
        "skipped": [p for s in samples for p in s.get("skipped", ())],
    }
    if "position" in samples[0]:
        batch["position"] = dict(samples[0]["position"])
    extra = samples[0].keys() - _SAMPLE_KEYS
    batch |= {k: default_collate([s[k] for s in samples]) for k in sorted(extra)}
    return batch


_SAMPLE_KEYS = frozenset(
    {
        "frames",
        "clip_pixels",
        "caption",
        "fps",
        "num_frames",
        "is_image",
        "path",
        "index",
        "frame_indices",
        "skipped",
        "position",
    }
)


# --------------------------------------------------------------------------------------------------- sampling


class ShardedBatchSampler(Sampler[list[SampleKey]]):
    """This rank's batches of one epoch, each a list of `(index, epoch, offset)` keys for `VideoTextDataset`.

    The epoch's batches are a function of (seed, epoch) only: entries are shuffled, cut into batches (images
    and videos in separate batches unless `mix_images`), the batches shuffled, padded by repeating the first
    ones so that every rank gets the same number (DDP needs equal step counts; `drop_last` drops the remainder
    instead), and dealt out round-robin: rank r takes batches r, r + world_size, ... `image_weight` makes
    images that share of the epoch's samples, repeating entries of the scarcer kind as needed.

    Resume: `offset` counts this rank's batches already consumed in the epoch. Every key carries the offset
    *after* its batch and `collate` returns it as `batch["position"] = {"epoch", "offset"}`: save that with a
    checkpoint and `load_state_dict` it to continue with the next batch (the DataLoader prefetches, so the
    sampler itself cannot know what the trainer consumed). A training loop:

        sampler = loader.batch_sampler
        if saved_position: sampler.load_state_dict(saved_position)
        while not done:
            for batch in loader:
                ...  # train; checkpoints save batch["position"]
            sampler.set_epoch(sampler.epoch + 1)
    """

    def __init__(
        self,
        is_image: Sequence[bool],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        image_weight: float | None = None,
        mix_images: bool = False,
    ) -> None:
        _check_positive(batch_size, "batch_size")
        _check_positive(world_size, "world_size")
        if not 0 <= rank < world_size:
            raise InputError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if seed < 0:
            raise InputError(f"seed must be >= 0, got {seed}")
        self.is_image = np.asarray(is_image, dtype=bool)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.image_weight, self.mix_images = image_weight, mix_images
        self.epoch, self.offset = 0, 0
        self.num_batches = len(self._global_batches(0)) // world_size  # per rank and epoch
        if self.num_batches == 0:
            raise InputError(
                f"{len(self.is_image)} entries make no batch of {batch_size} for each of {world_size} ranks "
                "with drop_last; lower batch_size or set drop_last=False"
            )

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the beginning of `epoch`."""
        self.set_state(epoch, 0)

    def set_state(self, epoch: int, offset: int) -> None:
        """Start the next iteration at batch `offset` (batches of this rank already consumed) of `epoch`."""
        epoch, offset = operator.index(epoch), operator.index(offset)
        if epoch < 0 or not 0 <= offset <= self.num_batches:
            raise InputError(
                f"data position must have epoch >= 0 and 0 <= offset <= {self.num_batches}, got "
                f"epoch {epoch}, offset {offset}"
            )
        self.epoch, self.offset = epoch, offset

    def state_dict(self) -> dict[str, int]:
        """Where the next iteration starts, with what must match for the order to be the same on resume."""
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "seed": self.seed,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """`set_state` from a `state_dict()` or a batch's "position"; refuses a different seed, world size or
        batch size, which would give a different order."""
        for name in ("seed", "world_size", "batch_size"):
            if name in state and state[name] != getattr(self, name):
                raise InputError(
                    f"cannot resume the data order: saved {name}={state[name]}, now {getattr(self, name)}"
                )
        self.set_state(state["epoch"], state["offset"])

    def __len__(self) -> int:
        return self.num_batches - self.offset

    def __iter__(self) -> Iterator[list[SampleKey]]:
        batches = self._global_batches(self.epoch)[self.rank :: self.world_size]
        epoch = self.epoch
        for k in range(self.offset, len(batches)):
            yield [(int(i), epoch, k + 1) for i in batches[k]]

    def _global_batches(self, epoch: int) -> list[np.ndarray]:
        """Every rank's batches of `epoch`, padded (or cut, with drop_last) to a multiple of world_size."""
        rng = np.random.default_rng([self.seed, epoch, _SAMPLER_STREAM])
        images, videos = np.flatnonzero(self.is_image), np.flatnonzero(~self.is_image)
        if self.image_weight is not None:
            n_images = round(self.image_weight * len(self.is_image))
            images = self._draw(images, n_images, rng, "images")
            videos = self._draw(videos, len(self.is_image) - n_images, rng, "videos")
        elif self.shuffle:
            images, videos = rng.permutation(images), rng.permutation(videos)
        if self.mix_images:
            pool = np.concatenate([videos, images])
            batches = self._chunk(rng.permutation(pool) if self.shuffle else np.sort(pool, kind="stable"))
        else:
            batches = self._chunk(videos) + self._chunk(images)
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        per_rank = (
            len(batches) // self.world_size if self.drop_last else math.ceil(len(batches) / self.world_size)
        )
        total = per_rank * self.world_size
        return (batches * math.ceil(total / len(batches)))[:total] if batches else []

    def _draw(self, indices: np.ndarray, n: int, rng: np.random.Generator, what: str) -> np.ndarray:
        """`n` of `indices`: whole passes over them (each pass shuffled), then part of one."""
        if n == 0:
            return indices[:0]
        if len(indices) == 0:
            raise InputError(
                f"image_weight={self.image_weight} asks for {n} {what} per epoch but there are none"
            )
        passes = [
            rng.permutation(indices) if self.shuffle else indices for _ in range(math.ceil(n / len(indices)))
        ]
        return np.concatenate(passes)[:n]

    def _chunk(self, indices: np.ndarray) -> list[np.ndarray]:
        batches = [indices[k : k + self.batch_size] for k in range(0, len(indices), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches


class SampleDataset(Dataset):
    """A dataset that already returns finished samples (the item layout of `VideoTextDataset`, e.g.
    `i2vgen.shapes.ShapesDataset`), made usable by `make_dataloader` and `train(dataset=...)`: it takes the sampler's
    `(index, epoch, offset)` keys, reports the data position for exact resume, and treats every item as a clip.
    `config` supplies the sampler's seed (its data fields are not used to load anything)."""

    def __init__(self, samples: Dataset, config: DataConfig | None = None) -> None:
        self.samples = samples
        self.config = config or DataConfig()
        self.is_image = [False] * len(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index, epoch, offset = (key[0], key[1], key[2] if len(key) > 2 else None) if isinstance(key, tuple) \
            else (key, 0, None)
        sample = {"skipped": [], "index": index, **self.samples[index]}
        if offset is not None:
            sample["position"] = {"epoch": epoch, "offset": offset}
        return sample


def make_dataloader(
    dataset: VideoTextDataset,
    batch_size: int,
    *,
    num_workers: int = 0,
    shuffle: bool = True,
    seed: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over this rank's shard, decoding in `num_workers` processes (persistent across epochs).

    Its `batch_sampler` is a `ShardedBatchSampler` whose order uses `seed` (default `dataset.config.seed`,
    which also draws the clips' starts): call `loader.batch_sampler.set_epoch(epoch)` each epoch, and
    `loader.batch_sampler.load_state_dict(batch["position"])` to resume after that batch.
    """
    sampler = ShardedBatchSampler(
        dataset.is_image,
        batch_size,
        shuffle=shuffle,
        seed=dataset.config.seed if seed is None else seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
        image_weight=dataset.config.image_weight,
        mix_images=dataset.config.image_mode == "static",
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=_init_worker if num_workers > 0 else None,
    )


def _init_worker(worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding workers: one thread each, or they oversubscribe the CPUs
