"""i2vgen.train.data: source readers, clip sampling on real videos, images as 1-frame clips, skipping bad
files, determinism (also across worker processes), sharding and exact resume."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from i2vgen.errors import InputError
from i2vgen.io import clip_preprocess, latent_preprocess, read_video, write_video
from i2vgen.train.data import (
    DataConfig,
    DataSource,
    Entry,
    ShardedBatchSampler,
    VideoTextDataset,
    collate,
    make_dataloader,
    read_csv,
    read_folder,
    read_jsonl,
    read_list_file,
    read_source,
)

MP4 = "1066674877.mp4"  # 165 frames at 16 fps, 596x336
AVI = "v_PlayingGuitar_g03_c01.avi"  # 250 frames at 25 fps, 320x240
TINY = {"num_frames": 4, "target_fps": 8, "width": 64, "height": 48}


def tiny_config(sources: list | None = None, **overrides: Any) -> DataConfig:
    return DataConfig(sources=sources or [], **(TINY | overrides))


@pytest.fixture(scope="module")
def videos_dir(real_data_dir: str) -> Path:
    """The videos of ../shared/data/real, or of its synthetic stand-in (conftest.py)."""
    return Path(real_data_dir) / "videos"


@pytest.fixture(scope="module")
def images_dir(real_data_dir: str) -> Path:
    """The images of ../shared/data/real, or of its synthetic stand-in (conftest.py)."""
    return Path(real_data_dir) / "images"


@pytest.fixture(scope="module")
def real_dataset(videos_dir: Path, images_dir: Path) -> VideoTextDataset:
    return VideoTextDataset(tiny_config([str(videos_dir / "captions.txt"), str(images_dir)], seed=3))


@pytest.fixture(scope="module")
def real_samples(real_dataset: VideoTextDataset) -> list[dict]:
    """Every entry of the real data at epoch 0, decoded once for the module."""
    return [real_dataset[i] for i in range(len(real_dataset))]


# ------------------------------------------------------------------------------------------------- readers


def test_list_file_of_the_reference(tmp_path, videos_dir):
    entries = read_list_file(videos_dir / "captions.txt")
    assert [Path(e.path).name for e in entries][:2] == ["1066674877.mp4", "1066674883.mp4"]
    assert all(Path(e.path).is_file() and not e.is_image for e in entries) and len(entries) == 5
    assert entries[1].caption == "moon rise in the cloud time lapse"

    (tmp_path / "sub").mkdir()
    lst = tmp_path / "sub" / "list.txt"
    lst.write_text(
        f"# a comment\n\n{videos_dir / MP4}|||absolute path\nclips/a.avi|||relative: a ||| b\n"
        "photo.JPG|||an image\nno_caption.mp4\n",
        encoding="utf-8",
    )
    entries = read_list_file(lst)
    assert entries == [
        Entry(str(videos_dir / MP4), "absolute path", False),
        Entry(str(tmp_path / "sub" / "clips" / "a.avi"), "relative: a ||| b", False),
        Entry(str(tmp_path / "sub" / "photo.JPG"), "an image", True),
        Entry(str(tmp_path / "sub" / "no_caption.mp4"), "", False),
    ]
    assert read_list_file(lst, root=tmp_path)[1].path == str(tmp_path / "clips" / "a.avi")
    assert all(not e.is_image for e in read_list_file(lst, media="video"))
    with pytest.raises(InputError, match="not found"):
        read_list_file(tmp_path / "missing.txt")


def test_csv_webvid_columns_and_template(tmp_path, videos_dir):
    csv_file = tmp_path / "results_2M_val.csv"
    csv_file.write_text(  # WebVid's header, with a UTF-8 byte-order mark as spreadsheets write it
        "\ufeffvideoid,contentUrl,duration,page_dir,name\n"
        '1066674877,https://x/1066674877.mp4,PT00H00M10S,dir,"cactus flower, blooming"\n'
        "1066674883,https://x/1066674883.mp4,PT00H00M12S,dir,moon rise\n"
        ",https://x/none.mp4,PT0S,dir,a row without an id\n",
        encoding="utf-8",
    )
    entries = read_csv(
        csv_file, columns={"caption": "name"}, path_template="{videoid}.mp4", root=videos_dir
    )  # the empty-id row fills the template as ".mp4": kept, and skipped later when it fails to read
    assert entries[:2] == [
        Entry(str(videos_dir / "1066674877.mp4"), "cactus flower, blooming", False),
        Entry(str(videos_dir / "1066674883.mp4"), "moon rise", False),
    ]
    by_column = read_csv(csv_file, columns={"path": "videoid", "caption": "name"})
    assert [Path(e.path).name for e in by_column] == ["1066674877", "1066674883"]  # the empty path is dropped
    assert by_column[0].path == str(tmp_path / "1066674877")
    with pytest.raises(InputError, match="no column 'caption'"):
        read_csv(csv_file, columns={"path": "videoid"})
    with pytest.raises(InputError, match="path_template"):
        read_csv(csv_file, columns={"caption": "name"}, path_template="{video_id}.mp4")
    source = DataSource(
        str(csv_file), columns={"caption": "name"}, path_template="{videoid}.mp4", root=videos_dir
    )
    assert read_source(source) == entries


def test_jsonl_with_column_map(tmp_path, videos_dir):
    jsonl = tmp_path / "data.jsonl"
    rows = [{"file": MP4, "text": "cactus"}, {"file": AVI, "text": "guitar", "extra": 1}, {"file": "x.png"}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    entries = read_jsonl(jsonl, columns={"path": "file", "caption": "text"}, root=videos_dir)
    assert entries == [
        Entry(str(videos_dir / MP4), "cactus", False),
        Entry(str(videos_dir / AVI), "guitar", False),
        Entry(str(videos_dir / "x.png"), "", True),
    ]
    default = tmp_path / "default.jsonl"
    default.write_text(json.dumps({"path": "a.mp4", "caption": "c"}) + "\n", encoding="utf-8")
    assert read_source(DataSource(str(default))) == [Entry(str(tmp_path / "a.mp4"), "c", False)]
    (tmp_path / "bad.jsonl").write_text('{"path": "a.mp4"}\n{oops\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="no field 'path'"):
        read_jsonl(jsonl)


def test_image_folder_and_sidecar_captions(tmp_path, images_dir):
    entries = read_folder(images_dir)  # captions from its captions.txt
    assert [Path(e.path).name for e in entries] == [
        "img_0001.jpg",
        "img_0003.jpg",
        "img_0007.jpg",
        "img_0012.jpg",
    ]
    assert all(e.is_image for e in entries) and entries[1].caption == "Evening waterfall"

    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    (tmp_path / "b.txt").write_text("a black square\n", encoding="utf-8")
    Image.new("RGB", (8, 8)).save(tmp_path / ".hidden.png")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"not decoded while listing")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    assert read_folder(tmp_path) == [
        Entry(str(tmp_path / "b.png"), "a black square", True),
        Entry(str(tmp_path / "clips" / "a.mp4"), "", False),
    ]
    assert [Path(e.path).name for e in read_folder(tmp_path, media="image")] == ["b.png"]


def test_config_round_trip_and_validation():
    cfg = tiny_config(["list.txt", {"path": "w.csv", "columns": {"path": "videoid"}}], image_weight=0.25)
    assert cfg.sources[0] == DataSource("list.txt")
    assert cfg.sources[1].columns == {"path": "videoid", "caption": "caption"}
    assert DataConfig(**asdict(cfg)) == cfg  # what a YAML config file stores and reads back
    for bad in ({"num_frames": 0}, {"min_frames": 5}, {"image_weight": 1.5}, {"image_mode": "mixed"}):
        with pytest.raises(InputError):
            tiny_config(**bad)
    with pytest.raises(InputError, match="columns"):
        DataSource("a.csv", columns={"url": "contentUrl"})


# ------------------------------------------------------------------------------------------------- samples


def test_sample_shapes_and_ranges(real_dataset, real_samples):
    assert len(real_samples) == 9 and real_dataset.is_image == [False] * 5 + [True] * 4
    for entry, s in zip(real_dataset.entries, real_samples, strict=True):
        frames_shape = (3, 1, 48, 64) if entry.is_image else (3, 4, 48, 64)
        assert s["frames"].shape == frames_shape and s["frames"].dtype == torch.float32
        assert -1.0 <= s["frames"].min() and s["frames"].max() <= 1.0 and s["frames"].std() > 0.05
        assert s["clip_pixels"].shape == (3, 224, 224) and s["clip_pixels"].dtype == torch.float32
        assert (s["caption"], s["path"], s["is_image"]) == (entry.caption, entry.path, entry.is_image)
        assert s["skipped"] == [] and s["index"] == real_dataset.entries.index(entry)
        assert (s["fps"], s["num_frames"]) == ((1, 1) if entry.is_image else (8, 4))
    image = real_samples[5]  # an image is the reference pre-processing of the file itself
    pil = Image.open(real_dataset.entries[5].path).convert("RGB")
    torch.testing.assert_close(image["frames"][:, 0], latent_preprocess(pil, 64, 48), rtol=0, atol=0)
    torch.testing.assert_close(image["clip_pixels"], clip_preprocess(pil, 64), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "target_fps", "stride"),
    [(MP4, 8, 2), (MP4, 16, 1), (AVI, 8, 3)],  # round(16/8), 16/16, round(25/8)
)
def test_stride_and_frames_on_a_real_clip(name, target_fps, stride, videos_dir):
    cfg = tiny_config([], target_fps=target_fps, clip_width=96)
    dataset = VideoTextDataset(cfg, [Entry(str(videos_dir / name), "c")])
    s = dataset[0]
    idx = s["frame_indices"]
    n_total = 165 if name == MP4 else 250
    assert np.diff(idx).tolist() == [stride] * 3 and 0 <= idx[0] <= n_total - stride * 4 - 5
    assert s["fps"] == target_fps  # the condition is the target rate, as in the reference
    if stride == 2:  # the frames are exactly those source frames, pre-processed like the reference
        raw, _ = read_video(videos_dir / name, start=idx[0], max_frames=idx[-1] - idx[0] + 1)  # stride 1
        expected = torch.stack([latent_preprocess(Image.fromarray(f), 64, 48) for f in raw[::stride]], dim=1)
        torch.testing.assert_close(s["frames"], expected, rtol=0, atol=0)
        first = clip_preprocess(Image.fromarray(raw[0]), 96)  # the conditioning image is the first frame
        torch.testing.assert_close(s["clip_pixels"], first, rtol=0, atol=0)


def test_deterministic_per_seed_epoch_index(real_dataset, real_samples):
    again = VideoTextDataset(real_dataset.config)  # a fresh dataset, as in another process or rank
    for i in (0, 3, 6):
        for key in ("frames", "clip_pixels"):
            torch.testing.assert_close(again[i][key], real_samples[i][key], rtol=0, atol=0)
    again.set_epoch(1)
    epoch1 = {i: again[i] for i in (0, 2)}
    for i in (0, 2):  # another epoch: another random start, and `set_epoch` is the same as keying the epoch
        assert epoch1[i]["frame_indices"] != real_samples[i]["frame_indices"]
        assert epoch1[i]["frame_indices"] == real_dataset[(i, 1)]["frame_indices"]
    other_seed = VideoTextDataset(tiny_config(real_dataset.config.sources, seed=4))
    assert other_seed[0]["frame_indices"] != real_samples[0]["frame_indices"]


def test_worker_processes_give_the_same_batches(real_dataset, real_samples):
    loader = make_dataloader(real_dataset, 2, num_workers=2, shuffle=True)
    seen = []
    for batch in loader:
        assert batch["is_image"].all() or not batch["is_image"].any()  # images and videos never share a batch
        for b, i in enumerate(batch["indices"].tolist()):
            seen.append(i)
            torch.testing.assert_close(batch["frames"][b], real_samples[i]["frames"], rtol=0, atol=0)
            torch.testing.assert_close(
                batch["clip_pixels"][b], real_samples[i]["clip_pixels"], rtol=0, atol=0
            )
            assert batch["captions"][b] == real_samples[i]["caption"]
            assert batch["fps"][b] == real_samples[i]["fps"]
    assert sorted(seen) == list(range(9))


def test_images_as_one_frame_or_static_clips(images_dir):
    single = VideoTextDataset(tiny_config([str(images_dir)]))
    s = single[1]
    assert s["frames"].shape == (3, 1, 48, 64) and (s["fps"], s["num_frames"], s["is_image"]) == (1, 1, True)
    static = VideoTextDataset(tiny_config([str(images_dir)], image_mode="static"))[1]
    assert static["frames"].shape == (3, 4, 48, 64) and static["num_frames"] == 1
    assert all(torch.equal(static["frames"][:, k], s["frames"][:, 0]) for k in range(4))
    batch = collate([s, single[2]])
    assert batch["frames"].shape == (2, 3, 1, 48, 64) and batch["is_image"].tolist() == [True, True]
    assert batch["fps"].tolist() == [1, 1] and batch["captions"][0] == "Evening waterfall"
    with pytest.raises(InputError, match="cannot batch clips of shapes"):
        collate([s, static])


def test_bad_files_are_skipped_counted_and_logged_once(tmp_path, caplog, videos_dir, images_dir):
    (tmp_path / "garbage.mp4").write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    )
    (tmp_path / "empty.mp4").write_bytes(b"")
    write_video(np.full((3, 48, 64, 3), 128, np.uint8), tmp_path / "short.mp4", fps=8)  # 3 frames < 4
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    lst = tmp_path / "list.txt"
    names = [
        "garbage.mp4",
        "empty.mp4",
        "missing.mp4",
        "short.mp4",
        str(videos_dir / MP4),
        "broken.jpg",
        str(images_dir / "img_0003.jpg"),
    ]
    lst.write_text("".join(f"{n}|||caption {k}\n" for k, n in enumerate(names)), encoding="utf-8")
    dataset = VideoTextDataset(tiny_config([str(lst)]))
    loader = make_dataloader(dataset, 2, shuffle=False)  # batches [0, 1], [2, 3], [4], [5, 6]
    with caplog.at_level(logging.WARNING, logger="i2vgen.train.data"):
        batch = next(iter(loader))
    good = str(videos_dir / MP4)
    assert batch["paths"] == [good, good] and batch["frames"].shape == (2, 3, 4, 48, 64)
    assert batch["captions"] == ["caption 4", "caption 4"] and batch["indices"].tolist() == [4, 4]
    assert batch["frame_indices"][0] != batch["frame_indices"][1]  # drawn for index 0 and index 1
    bad = [str(tmp_path / n) for n in names[:4]]
    assert batch["skipped"] == bad + bad[1:]
    logged = {r.getMessage().split(":")[0].removeprefix("skipping ") for r in caplog.records}
    assert logged == set(bad)  # each bad file once, although it was skipped twice
    reasons = " ".join(r.getMessage() for r in caplog.records)
    assert "empty (0 bytes)" in reasons and "not found" in reasons and "too short" in reasons

    images = list(loader)[-1]  # a bad image is replaced by the next image, never by a video
    assert images["paths"] == [str(images_dir / "img_0003.jpg")] * 2
    assert images["skipped"] == [str(tmp_path / "broken.jpg")]

    padded = VideoTextDataset(tiny_config([str(lst)], min_frames=2))[3]  # short clips may be padded instead
    assert padded["num_frames"] == 3 and padded["skipped"] == []
    assert torch.equal(padded["frames"][:, 3], padded["frames"][:, 2])  # the last frame, repeated

    with pytest.raises(InputError, match="2 entries in a row"):
        VideoTextDataset(tiny_config([str(lst)], max_retries=1))[0]


# ------------------------------------------------------------------------------------------ sharding, resume


def test_sharding_is_disjoint_and_covers_every_entry():
    flags = [False] * 8 + [True] * 4  # 4 video batches + 2 image batches of 2: 3 per rank, no padding
    for epoch in (0, 1):
        shards = []
        for rank in (0, 1):
            sampler = ShardedBatchSampler(flags, 2, seed=5, rank=rank, world_size=2)
            sampler.set_epoch(epoch)
            batches = [[i for i, _, _ in b] for b in sampler]
            assert len(batches) == len(sampler) == 3
            assert all(len({flags[i] for i in b}) == 1 for b in batches)  # homogeneous
            shards.append({i for b in batches for i in b})
        assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(12))
    # uneven: every rank still gets as many batches (padding repeats entries), or fewer with drop_last
    padded = [list(ShardedBatchSampler([False] * 5, 1, rank=r, world_size=2)) for r in (0, 1)]
    assert [len(p) for p in padded] == [3, 3] and {b[0][0] for p in padded for b in p} == set(range(5))
    dropped = [
        [b[0][0] for b in ShardedBatchSampler([False] * 5, 1, rank=r, world_size=2, drop_last=True)]
        for r in (0, 1)
    ]
    assert [len(d) for d in dropped] == [2, 2] and not set(dropped[0]) & set(dropped[1])
    # the order depends on the seed and the epoch only
    a, b = ShardedBatchSampler(flags, 2, seed=5), ShardedBatchSampler(flags, 2, seed=5)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert [k[0] for batch in a for k in batch] != [k[0] for batch in b for k in batch]


def test_sharded_loaders_split_the_real_images(images_dir):
    dataset = VideoTextDataset(tiny_config([str(images_dir)]))
    shards = [
        {
            i
            for batch in make_dataloader(dataset, 1, rank=r, world_size=2, seed=1)
            for i in batch["indices"].tolist()
        }
        for r in (0, 1)
    ]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == {0, 1, 2, 3}


def test_image_weight_sets_the_share_of_images():
    flags = [False] * 8 + [True] * 2
    sampler = ShardedBatchSampler(flags, 5, seed=0, image_weight=0.5)
    batches = [[k[0] for k in b] for b in sampler]
    drawn = [i for b in batches for i in b]
    assert len(drawn) == 10 and sum(flags[i] for i in drawn) == 5  # both images, repeated
    assert all(len({flags[i] for i in b}) == 1 for b in batches)
    assert min(drawn.count(8), drawn.count(9)) == 2  # whole passes over the images first
    mixed = ShardedBatchSampler(flags, 5, seed=0, image_weight=0.5, mix_images=True)
    assert any(len({flags[k[0]] for k in b}) == 2 for b in mixed)  # image_mode="static" mixes them


def test_resume_from_a_batch_position_gives_the_same_batches(images_dir):
    entries = read_folder(images_dir) * 3  # 12 entries, cheap to decode
    cfg = tiny_config([], seed=7)

    def run(position: dict | None, n_epochs: int = 2) -> list[dict]:
        loader = make_dataloader(VideoTextDataset(cfg, entries), 2, shuffle=True)
        sampler = loader.batch_sampler
        if position:
            sampler.load_state_dict(position)
        out = []
        while sampler.epoch < n_epochs:
            out += [
                {"indices": b["indices"], "frames": b["frames"], "position": b["position"]} for b in loader
            ]
            sampler.set_epoch(sampler.epoch + 1)
        return out

    full = run(None)
    assert len(full) == 12 and [b["position"] for b in full[:2]] == [
        {"epoch": 0, "offset": 1},
        {"epoch": 0, "offset": 2},
    ]
    for stop in (2, 6):  # inside epoch 0, and exactly at its end
        resumed = run(full[stop - 1]["position"])
        assert len(resumed) == len(full) - stop
        for a, b in zip(full[stop:], resumed, strict=True):
            assert torch.equal(a["indices"], b["indices"]) and torch.equal(a["frames"], b["frames"])
            assert a["position"] == b["position"]

    sampler = ShardedBatchSampler([False] * 12, 2, seed=7)
    sampler.set_state(1, 4)
    assert len(sampler) == 2 and sampler.state_dict() == {
        "epoch": 1,
        "offset": 4,
        "seed": 7,
        "world_size": 1,
        "batch_size": 2,
    }
    with pytest.raises(InputError, match="seed=8"):
        sampler.load_state_dict(sampler.state_dict() | {"seed": 8})
    with pytest.raises(InputError, match="offset"):
        sampler.set_state(0, 7)


def test_collate_passes_extra_keys_through():
    sample = {
        "frames": torch.zeros(3, 2, 8, 8),
        "clip_pixels": torch.zeros(3, 224, 224),
        "caption": "c",
        "fps": 8,
        "num_frames": 2,
        "is_image": False,
        "path": "shapes://1",
        "meta": {"seed": 1, "xy": torch.ones(2)},
    }
    batch = collate([sample, sample])
    assert batch["indices"].tolist() == [-1, -1] and batch["skipped"] == []
    assert batch["meta"]["seed"].tolist() == [1, 1] and batch["meta"]["xy"].shape == (2, 2)
