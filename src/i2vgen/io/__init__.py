"""Image and video input/output: loading, reference pre-processing, atomic writing, reading and probing."""

from i2vgen.io.atomic import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text
from i2vgen.io.image import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_MAX_PIXELS,
    center_crop_wide,
    clip_preprocess,
    latent_preprocess,
    load_image,
    pil_to_tensor,
)
from i2vgen.io.video import (
    VideoInfo,
    constant_fps_indices,
    output_kind,
    probe_video,
    read_metadata,
    read_video,
    read_video_cfr,
    sample_clip_indices,
    sidecar_path_field,
    to_uint8_frames,
    write_sidecar_json,
    write_video,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_MAX_PIXELS",
    "VideoInfo",
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "center_crop_wide",
    "clip_preprocess",
    "constant_fps_indices",
    "latent_preprocess",
    "load_image",
    "output_kind",
    "pil_to_tensor",
    "probe_video",
    "read_metadata",
    "read_video",
    "read_video_cfr",
    "sample_clip_indices",
    "sidecar_path_field",
    "to_uint8_frames",
    "write_sidecar_json",
    "write_video",
]
