"""CLIP text/image encoder wrappers, on tiny random models saved to and loaded from a temporary folder."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from helpers import randomize_
from i2vgen.errors import CheckpointError, InputError
from i2vgen.models.encoders import (
    CONTEXT_LENGTH,
    ImageEncoder,
    TextEncoder,
    tiny_text_config,
    tiny_vision_config,
    write_tiny_clip_tokenizer,
)

PROMPTS = ["the cat", "a dog on the grass, the end"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers-style folder with text_encoder/, tokenizer/ and image_encoder/ (tiny, random weights)."""
    root = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    randomize_(CLIPTextModel(tiny_text_config()), seed=1).save_pretrained(root / "text_encoder")
    randomize_(CLIPVisionModelWithProjection(tiny_vision_config()), seed=2).save_pretrained(
        root / "image_encoder"
    )
    write_tiny_clip_tokenizer(root / "tokenizer")
    return root


@pytest.fixture(scope="module")
def text_encoder(model_dir: Path) -> TextEncoder:
    return TextEncoder.from_model_folder(model_dir)


def _reference_ids(model_dir: Path, prompts: list[str]) -> torch.Tensor:
    tok = CLIPTokenizer.from_pretrained(model_dir / "tokenizer", local_files_only=True)
    return tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def _final_ln(model: nn.Module) -> nn.LayerNorm:
    return getattr(model, "text_model", model).final_layer_norm


def test_text_is_penultimate_layer_then_final_layer_norm(text_encoder: TextEncoder, model_dir: Path) -> None:
    ref_model = CLIPTextModel.from_pretrained(model_dir / "text_encoder", local_files_only=True)
    ids = _reference_ids(model_dir, PROMPTS)
    with torch.no_grad():
        out = text_encoder.encode(PROMPTS)
        ref_out = ref_model(input_ids=ids, output_hidden_states=True)
        ln = _final_ln(ref_model)
        by_hand = F.layer_norm(ref_out.hidden_states[-2], ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        # Independent check: the same model with its last layer removed ends in exactly this state.
        shorter = copy.deepcopy(ref_model)
        layers = getattr(shorter, "text_model", shorter).encoder.layers
        del layers[-1]
        truncated_model_out = shorter(input_ids=ids).last_hidden_state

    assert out.shape == (2, CONTEXT_LENGTH, 8)
    torch.testing.assert_close(out, by_hand, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, truncated_model_out, rtol=0, atol=1e-6)
    assert (out - ref_out.last_hidden_state).abs().max() > 1e-2  # penultimate, not last


class _Nested(nn.Module):
    """transformers 4.x layout: everything under `.text_model`."""

    def __init__(self, inner: CLIPTextModel):
        super().__init__()
        self.text_model = inner
        self.config = inner.config

    @property
    def device(self) -> torch.device:
        return self.text_model.device

    def forward(self, **kwargs):
        return self.text_model(**kwargs)


class _Flat(_Nested):
    """transformers >= 5 layout: `final_layer_norm` on the model itself, no `.text_model`."""

    def __init__(self, inner: CLIPTextModel):
        super().__init__(inner)
        del self.text_model
        self.inner = inner
        self.final_layer_norm = _final_ln(inner)

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def forward(self, **kwargs):
        return self.inner(**kwargs)


@pytest.mark.parametrize("layout", [_Nested, _Flat])
def test_text_works_with_and_without_text_model_attribute(
    layout: type[nn.Module], text_encoder: TextEncoder
) -> None:
    wrapped = TextEncoder(layout(text_encoder.model), text_encoder.tokenizer)
    assert hasattr(wrapped.model, "text_model") == (layout is _Nested)
    with torch.no_grad():
        torch.testing.assert_close(wrapped.encode(PROMPTS), text_encoder.encode(PROMPTS), rtol=0, atol=0)


def test_long_prompt_is_truncated_with_a_warning(text_encoder: TextEncoder) -> None:
    long_prompt = "the cat " * 100  # 200 word tokens + bos + eos = 202 -> 125 cut
    with pytest.warns(UserWarning, match=r"last 125 tokens were cut"):
        ids = text_encoder.tokenize(["the cat", long_prompt])
    assert ids.shape == (2, CONTEXT_LENGTH)
    assert (
        ids[1, 0] == text_encoder.tokenizer.bos_token_id and ids[1, -1] == text_encoder.tokenizer.eos_token_id
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # short prompts warn about nothing
        text_encoder.tokenize(PROMPTS)


def test_a_tokenizer_with_a_shorter_model_max_length_sets_the_context(model_dir: Path) -> None:
    """A tiny model's folder may name a shorter text context; real CLIP folders say 77, others (unset: a huge
    number) get 77 as well. The tokens are those of the 77-token context, cut to the shorter length."""
    full = TextEncoder.from_model_folder(model_dir)
    tok = CLIPTokenizer.from_pretrained(model_dir / "tokenizer", local_files_only=True, model_max_length=12)
    short = TextEncoder(full.model, tok)
    assert short.context_length == 12 and full.context_length == CONTEXT_LENGTH
    torch.testing.assert_close(short.tokenize("the cat"), full.tokenize("the cat")[:, :12])
    assert short.encode(["the cat", "a dog"]).shape == (2, 12, full.model.config.hidden_size)
    with pytest.warns(UserWarning, match="12-token text context"):
        ids = short.tokenize(["the cat " * 10])
    assert ids.shape == (1, 12) and ids[0, -1] == short.tokenizer.eos_token_id
    huge = CLIPTokenizer.from_pretrained(model_dir / "tokenizer", local_files_only=True, model_max_length=10**30)
    assert TextEncoder(full.model, huge).context_length == CONTEXT_LENGTH


def test_pad_token_override_only_changes_padding(text_encoder: TextEncoder) -> None:
    default = text_encoder.tokenize(PROMPTS)
    zero_pad = TextEncoder(text_encoder.model, text_encoder.tokenizer, pad_token_id=0).tokenize(PROMPTS)
    n = len(text_encoder.tokenizer("the cat").input_ids)  # bos, the, cat, eos
    assert torch.equal(zero_pad[0, :n], default[0, :n])
    assert (zero_pad[0, n:] == 0).all() and (default[0, n:] == text_encoder.tokenizer.pad_token_id).all()


def test_text_accepts_a_single_string_and_rejects_bad_prompts(text_encoder: TextEncoder) -> None:
    with torch.no_grad():
        torch.testing.assert_close(text_encoder.encode("the cat"), text_encoder.encode(["the cat"]))
    for bad in ([], [None], [3]):
        with pytest.raises(InputError):
            text_encoder.encode(bad)


def test_image_encoder_returns_projected_embeds(model_dir: Path) -> None:
    encoder = ImageEncoder.from_model_folder(model_dir)
    ref = CLIPVisionModelWithProjection.from_pretrained(model_dir / "image_encoder", local_files_only=True)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = encoder.encode(pixels)
        torch.testing.assert_close(out, ref(pixel_values=pixels).image_embeds, rtol=0, atol=1e-6)
    assert out.shape == (2, 8)
    for bad in (torch.zeros(3, 32, 32), torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 32, 32)):
        with pytest.raises(InputError, match="image encoder expects"):
            encoder.encode(bad)


def test_fp16_variant_loads(model_dir: Path, tmp_path: Path) -> None:
    text = CLIPTextModel.from_pretrained(model_dir / "text_encoder", local_files_only=True).half()
    text.save_pretrained(tmp_path / "text_encoder", variant="fp16")
    vision = CLIPVisionModelWithProjection.from_pretrained(model_dir / "image_encoder", local_files_only=True)
    vision.half().save_pretrained(tmp_path / "image_encoder", variant="fp16")

    te16 = TextEncoder.from_pretrained(
        tmp_path / "text_encoder", model_dir / "tokenizer", torch.float16, "fp16"
    )
    ie16 = ImageEncoder.from_pretrained(tmp_path / "image_encoder", torch.float16, "fp16")
    assert te16.model.dtype == torch.float16 and ie16.model.dtype == torch.float16
    te32 = TextEncoder.from_pretrained(tmp_path / "text_encoder", model_dir / "tokenizer", variant="fp16")
    assert te32.model.dtype == torch.float32  # fp16 files, upcast on load
    torch.testing.assert_close(_final_ln(te32.model).weight, _final_ln(text).weight.float(), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="text_encoder"):  # only fp16 files there
        TextEncoder.from_pretrained(tmp_path / "text_encoder", model_dir / "tokenizer")


def test_loading_failures_raise_one_line_checkpoint_errors(model_dir: Path, tmp_path: Path) -> None:
    missing, empty = tmp_path / "nowhere", tmp_path / "empty"
    empty.mkdir()
    cases = [  # (loader, folder the message must name)
        (lambda: TextEncoder.from_pretrained(missing, model_dir / "tokenizer"), missing),
        (lambda: TextEncoder.from_pretrained(model_dir / "text_encoder", missing), missing),
        (lambda: TextEncoder.from_pretrained(model_dir / "text_encoder", empty), empty),
        (lambda: TextEncoder.from_pretrained(empty, model_dir / "tokenizer"), empty),
        (
            lambda: TextEncoder.from_pretrained(model_dir / "image_encoder", model_dir / "tokenizer"),
            model_dir / "image_encoder",
        ),  # a vision checkpoint is not a text encoder
        (lambda: ImageEncoder.from_pretrained(missing), missing),
        (lambda: ImageEncoder.from_pretrained(model_dir / "text_encoder"), model_dir / "text_encoder"),
        (lambda: TextEncoder.from_model_folder(missing), missing / "text_encoder"),
    ]
    for load, folder in cases:
        with pytest.raises(CheckpointError) as info:
            load()
        assert "\n" not in str(info.value) and str(folder) in str(info.value)
