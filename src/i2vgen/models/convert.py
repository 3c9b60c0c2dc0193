"""Rename UNet state dicts between the original layouts and diffusers' layout (spec §5.3).

Our base UNet names its modules like diffusers' `I2VGenXLUNet` and our refiner like diffusers'
`UNet3DConditionModel`, so loading a checkpoint is a pure rename of a `dict[str, Tensor]`:

- VGen `UNetSD_I2VGen` (`i2vgen_xl_00854500.pth`, 1,509 tensors) <-> `I2VGenXLUNet` (1,511 tensors: VGen's fused
  `to_qkv` of the image temporal encoder is split into `to_q` / `to_k` / `to_v`);
- ModelScope `Vid2VidSDUNet` (`non_ema_0035000.pth`, ModelScope text-to-video layout) <-> `UNet3DConditionModel`.

Both original layouts share the LDM skeleton: `input_blocks.i.k` / `middle_block.k` / `output_blocks.j.k`, where
`k` is the position inside the block (0 ResBlock, 1 spatial transformer, 2 temporal transformer, last: up-sampler)
and `i`, `j` count `layers_per_block + 1` entries per resolution level. Temporal transformers use Conv1d
`proj_in` / `proj_out` weights `(out, in, 1)` where diffusers has Linear `(out, in)`. Every conversion is a bijection;
a key that fits no rule raises `CheckpointError` instead of being dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor

from i2vgen.errors import CheckpointError

StateDict = dict[str, Tensor]

# `hf: ali-vilab/i2vgen-xl/unet/config.json` (spec §2.5). diffusers ignores `num_attention_heads` here and reads the
# head *dimension* from `attention_head_dim`; both are 64 in the Hub file.
I2VGEN_XL_DIFFUSERS_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": (
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "DownBlock3D",
    ),
    "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "cross_attention_dim": 1024,
    "attention_head_dim": 64,
    "num_attention_heads": 64,
}

# `UNet3DConditionModel(**MS_VID2VID_XL_DIFFUSERS_CONFIG)` has the 1,411,233,860 parameters of MS-Vid2Vid-XL (spec
# §2.4); these are diffusers' defaults, i.e. the ModelScope text-to-video config. It cannot express the refiner's
# (2, 1)-padded down-sampling and row-cropping up-sampling (spec §8.4): same weights, different ops.
MS_VID2VID_XL_DIFFUSERS_CONFIG: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": (
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "DownBlock3D",
    ),
    "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1024,
    "attention_head_dim": 64,
}

# ResBlock children: original name -> diffusers name.
_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_RESNET_INV = {new: old for old, new in _RESNET.items()}

# Prefixes outside the block lists, shared by both original layouts.
_TOP = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "input_blocks.0.1": "transformer_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}
# VGen's image and fps branches (spec §2.3); the fused `to_qkv` is handled on its own.
_I2VGEN_TOP = {
    **_TOP,
    "fps_embedding": "fps_embedding",
    "context_embedding": "context_embedding",
    "local_image_concat": "image_latents_proj_in",
    "local_image_embedding": "image_latents_context_embedding",
    "local_temporal_encoder.layers.0.0.norm": "image_latents_temporal_encoder.norm1",
    "local_temporal_encoder.layers.0.0.fn.to_out.0": "image_latents_temporal_encoder.attn1.to_out.0",
    "local_temporal_encoder.layers.0.1.net.0.0": "image_latents_temporal_encoder.ff.net.0.proj",
    "local_temporal_encoder.layers.0.1.net.2": "image_latents_temporal_encoder.ff.net.2",
}
_QKV = "local_temporal_encoder.layers.0.0.fn.to_qkv.weight"
_Q_K_V = tuple(f"image_latents_temporal_encoder.attn1.to_{c}.weight" for c in "qkv")

# Module types allowed at each position of an original block, checked by their first child's name.
_POSITION_KIND = {"0": "resnets", "1": "attentions", "2": "temp_attentions"}
_KIND_POSITION = {kind: pos for pos, kind in _POSITION_KIND.items()}
_TRANSFORMER_CHILDREN = {"norm", "proj_in", "proj_out", "transformer_blocks"}
_TEMP_CONV_CHILDREN = {"conv1", "conv2", "conv3", "conv4"}
_PARAM_NAMES = {"weight", "bias"}
_TRANSFORMERS = ("attentions", "temp_attentions")
# middle_block.k <-> mid_block.<kind>.<layer>; the second ResBlock is at position 3.
_MIDDLE = {"0": ("resnets", 0), "1": ("attentions", 0), "2": ("temp_attentions", 0), "3": ("resnets", 1)}
_MIDDLE_INV = {kind_layer: pos for pos, kind_layer in _MIDDLE.items()}
_TEMPORAL_PROJ = re.compile(r"(^transformer_in|\.temp_attentions\.\d+)\.proj_(in|out)\.weight$")


# --- public API ---------------------------------------------------------------------------------------------------


def vgen_to_diffusers(sd: StateDict) -> StateDict:
    """VGen `UNetSD_I2VGen` state dict -> diffusers `I2VGenXLUNet` keys (1,509 -> 1,511 tensors)."""
    sd = dict(sd)
    extra = {}
    if _QKV in sd:
        qkv = sd.pop(_QKV)
        if qkv.shape[0] % 3:
            raise CheckpointError(
                f"{_QKV} has shape {tuple(qkv.shape)}: its first dimension must divide by 3"
            )
        extra = {name: part.clone() for name, part in zip(_Q_K_V, qkv.chunk(3, dim=0))}
    out = _original_to_diffusers(sd, _I2VGEN_TOP, "VGen")
    return {**out, **extra}


def diffusers_to_vgen(sd: StateDict) -> StateDict:
    """diffusers `I2VGenXLUNet` state dict -> VGen `UNetSD_I2VGen` keys (1,511 -> 1,509 tensors)."""
    sd = dict(sd)
    extra = {}
    if all(name in sd for name in _Q_K_V):
        extra = {_QKV: torch.cat([sd.pop(name) for name in _Q_K_V], dim=0)}
    out = _diffusers_to_original(sd, _I2VGEN_TOP, "diffusers I2VGenXLUNet")
    return {**out, **extra}


def modelscope_to_diffusers_unet3d(sd: StateDict) -> StateDict:
    """ModelScope `Vid2VidSDUNet` (text-to-video layout) state dict -> diffusers `UNet3DConditionModel` keys."""
    return _original_to_diffusers(sd, _TOP, "ModelScope")


def diffusers_unet3d_to_modelscope(sd: StateDict) -> StateDict:
    """diffusers `UNet3DConditionModel` state dict -> ModelScope `Vid2VidSDUNet` keys."""
    return _diffusers_to_original(sd, _TOP, "diffusers UNet3DConditionModel")


def detect_unet_format(sd: StateDict) -> Literal["diffusers", "vgen", "modelscope"]:
    """Tell a UNet state dict's layout from its key names: diffusers, VGen (base) or ModelScope (refiner)."""
    if any(key.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for key in sd):
        return "diffusers"
    if any(key.startswith(("input_blocks.", "middle_block.", "output_blocks.")) for key in sd):
        image_branches = ("local_image_concat.", "local_image_embedding.", "local_temporal_encoder.")
        return "vgen" if any(key.startswith(image_branches) for key in sd) else "modelscope"
    raise CheckpointError(
        f"not a UNet state dict in a known layout (diffusers, VGen, ModelScope): {_some(sd)}"
    )


# --- original (VGen / ModelScope) -> diffusers ---------------------------------------------------------------------


def _original_to_diffusers(sd: StateDict, top: dict[str, str], layout: str) -> StateDict:
    """Rename every key of an LDM-style state dict; Conv1d temporal projections become Linear weights."""
    layers = _original_layers_per_block(sd, layout)
    out: StateDict = {}
    unknown = []
    for key, value in sd.items():
        new = _original_key_to_diffusers(key, top, layers)
        if new is None or new in out:
            unknown.append(key)
            continue
        if _TEMPORAL_PROJ.search(new) and value.ndim == 3:
            value = value[:, :, 0]  # Conv1d (out, in, 1) -> Linear (out, in)
        out[new] = value
    _raise_if_any(unknown, layout)
    return out


def _original_key_to_diffusers(key: str, top: dict[str, str], layers: int) -> str | None:
    """One original key -> its diffusers name, or None if it fits no rule."""
    renamed = _rename_prefix(key, top)
    if renamed is not None:
        return renamed
    parts = key.split(".")
    if len(parts) < 4 or not parts[1].isdigit():
        return None
    index = int(parts[1])
    if parts[0] == "input_blocks" and index > 0:
        block, layer = divmod(index - 1, layers + 1)
        if layer == layers:  # the down-sampler closes a level: input_blocks.i.op.{weight,bias}
            if parts[2] == "op" and len(parts) == 4 and parts[3] in _PARAM_NAMES:
                return f"down_blocks.{block}.downsamplers.0.conv.{parts[3]}"
            return None
        return _child_to_diffusers(f"down_blocks.{block}", layer, parts[2], parts[3:])
    if parts[0] == "middle_block" and len(parts) >= 3 and parts[1] in _MIDDLE:
        kind, layer = _MIDDLE[parts[1]]
        return _child_to_diffusers("mid_block", layer, _KIND_POSITION[kind], parts[2:])
    if parts[0] == "output_blocks":
        block, layer = divmod(index, layers + 1)
        # The up-sampler is the last module of a level's last block (position 1 or 3); its only child is `conv`.
        if parts[2] != "0" and parts[3] == "conv" and len(parts) == 5 and parts[4] in _PARAM_NAMES:
            return f"up_blocks.{block}.upsamplers.0.conv.{parts[4]}" if layer == layers else None
        return _child_to_diffusers(f"up_blocks.{block}", layer, parts[2], parts[3:])
    return None


def _child_to_diffusers(prefix: str, layer: int, position: str, rest: list[str]) -> str | None:
    """`<block>.<position>.<rest>` -> `<prefix>.<kind>.<layer>.<rest>` (ResBlock children renamed)."""
    kind = _POSITION_KIND.get(position)
    if kind is None or not rest:
        return None
    tail = ".".join(rest)
    if kind == "resnets":
        if rest[0] == "temopral_conv":  # (sic) VGen / ModelScope spelling
            return f"{prefix}.temp_convs.{layer}.{'.'.join(rest[1:])}" if _is_temp_conv(rest[1:]) else None
        renamed = _rename_prefix(tail, _RESNET)
        return None if renamed is None else f"{prefix}.resnets.{layer}.{renamed}"
    return f"{prefix}.{kind}.{layer}.{tail}" if rest[0] in _TRANSFORMER_CHILDREN else None


# --- diffusers -> original -----------------------------------------------------------------------------------------


def _diffusers_to_original(sd: StateDict, top: dict[str, str], layout: str) -> StateDict:
    """Inverse of `_original_to_diffusers`: Linear temporal projections become Conv1d weights again."""
    top_inv = {new: old for old, new in top.items()}
    layers = _diffusers_layers_per_block(sd, layout)
    out: StateDict = {}
    unknown = []
    for key, value in sd.items():
        new = _diffusers_key_to_original(key, top_inv, layers, sd)
        if new is None or new in out:
            unknown.append(key)
            continue
        if _TEMPORAL_PROJ.search(key) and value.ndim == 2:
            value = value.unsqueeze(-1)  # Linear (out, in) -> Conv1d (out, in, 1)
        out[new] = value
    _raise_if_any(unknown, layout)
    return out


def _diffusers_key_to_original(key: str, top_inv: dict[str, str], layers: int, sd: StateDict) -> str | None:
    """One diffusers key -> its original name, or None if it fits no rule."""
    renamed = _rename_prefix(key, top_inv)
    if renamed is not None:
        return renamed
    parts = key.split(".")
    if parts[0] == "mid_block" and len(parts) >= 4 and parts[2].isdigit():
        # A temporal conv lives inside its ResBlock.
        owner = "resnets" if parts[1] == "temp_convs" else parts[1]
        position = _MIDDLE_INV.get((owner, int(parts[2])))
        child = _child_to_original(parts[1], parts[3:])
        return None if position is None or child is None else f"middle_block.{position}.{child}"
    if len(parts) < 5 or not parts[1].isdigit() or not parts[3].isdigit():
        return None
    block, kind, layer, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
    if parts[0] == "down_blocks":
        first = 1 + block * (layers + 1)
        if (
            kind == "downsamplers"
            and layer == 0
            and rest[0] == "conv"
            and len(rest) == 2
            and rest[1] in _PARAM_NAMES
        ):
            return f"input_blocks.{first + layers}.op.{rest[1]}"
        return (
            _block_child_to_original(f"input_blocks.{first + layer}", kind, rest) if layer < layers else None
        )
    if parts[0] == "up_blocks":
        first = block * (layers + 1)
        if (
            kind == "upsamplers"
            and layer == 0
            and rest[0] == "conv"
            and len(rest) == 2
            and rest[1] in _PARAM_NAMES
        ):
            # The up-sampler follows the block's ResBlock and whichever transformers the level has.
            position = 1 + sum(
                any(k.startswith(f"up_blocks.{block}.{t}.") for k in sd) for t in _TRANSFORMERS
            )
            return f"output_blocks.{first + layers}.{position}.conv.{rest[1]}"
        return (
            _block_child_to_original(f"output_blocks.{first + layer}", kind, rest)
            if layer <= layers
            else None
        )
    return None


def _block_child_to_original(prefix: str, kind: str, rest: list[str]) -> str | None:
    """`<kind>.<layer>.<rest>` -> `<prefix>.<position>.<child>`; a temporal conv sits inside the ResBlock (0)."""
    child = _child_to_original(kind, rest)
    position = _KIND_POSITION.get("resnets" if kind == "temp_convs" else kind)
    return None if child is None or position is None else f"{prefix}.{position}.{child}"


def _child_to_original(kind: str, rest: list[str]) -> str | None:
    """`<kind>.<layer>.<rest>` -> the name inside the original module at that position (ResBlock children renamed)."""
    tail = ".".join(rest)
    if kind == "temp_convs":
        return f"temopral_conv.{tail}" if _is_temp_conv(rest) else None
    if kind == "resnets":
        return _rename_prefix(tail, _RESNET_INV)
    if kind in _TRANSFORMERS and rest[0] in _TRANSFORMER_CHILDREN:
        return tail
    return None


# --- helpers -------------------------------------------------------------------------------------------------------


def _rename_prefix(key: str, table: dict[str, str]) -> str | None:
    """Replace a whole-component prefix of `key` found in `table` (`a.b` matches `a.b.weight`, not `a.bc`)."""
    for old, new in table.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    return None


def _is_temp_conv(rest: list[str]) -> bool:
    """`conv{1..4}.<i>.{weight,bias}` inside a TemporalConvBlock_v2 / TemporalConvLayer."""
    return len(rest) == 3 and rest[0] in _TEMP_CONV_CHILDREN and rest[1].isdigit() and rest[2] in _PARAM_NAMES


def _original_layers_per_block(sd: StateDict, layout: str) -> int:
    """ResBlocks per down level, read off the first down-sampler's index (`input_blocks.{layers + 1}.op`)."""
    downsamplers = [int(k.split(".")[1]) for k in sd if re.fullmatch(r"input_blocks\.\d+\.op\.weight", k)]
    if downsamplers:
        return min(downsamplers) - 1
    blocks = [int(k.split(".")[1]) for k in sd if re.match(r"input_blocks\.\d+\.", k)]
    if not blocks:
        raise CheckpointError(f"no input_blocks.* keys in the {layout} UNet state dict: {_some(sd)}")
    return max(blocks)  # a single level: no down-sampler


def _diffusers_layers_per_block(sd: StateDict, layout: str) -> int:
    """ResBlocks per down level: the number of `down_blocks.0.resnets.<n>`."""
    layers = {k.split(".")[3] for k in sd if re.match(r"down_blocks\.0\.resnets\.\d+\.", k)}
    if not layers:
        raise CheckpointError(f"no down_blocks.0.resnets.* keys in the {layout} UNet state dict: {_some(sd)}")
    return len(layers)


def _some(keys: Iterable[str], limit: int = 5) -> str:
    """The first `limit` keys, comma-separated, with the total count."""
    keys = list(keys)
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{shown} ({len(keys)} key{'s' if len(keys) != 1 else ''})"


def _raise_if_any(unknown: list[str], layout: str) -> None:
    """Refuse to drop keys silently."""
    if unknown:
        raise CheckpointError(f"unexpected keys in the {layout} UNet state dict: {_some(unknown)}")
