"""Frozen CLIP encoders: thin wrappers around transformers' `CLIPTextModel` and `CLIPVisionModelWithProjection`.

I2VGen-XL conditions on OpenCLIP ViT-H/14 (spec §3):
- text: the *penultimate* transformer layer followed by the final layer norm, all 77 token states -> (B, 77, 1024);
- image: the pooled, projected embedding of the full vision tower at 224² -> (B, 1024).

Both load from the subfolders of a diffusers-format model folder (`text_encoder/`, `tokenizer/`, `image_encoder/`),
local files only; any loading failure becomes a one-line `CheckpointError` naming the folder.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import Tensor, nn
from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from i2vgen.errors import CheckpointError, InputError

CONTEXT_LENGTH = 77  # OpenCLIP / HF CLIP text context, bos and eos included

# transformers renamed `torch_dtype=` to `dtype=` in 4.56; >= 5 defaults to the checkpoint's dtype ("auto"),
# so the dtype is always passed explicitly.
_TRANSFORMERS_VERSION = tuple(int(v) for v in transformers.__version__.split(".")[:2])
_DTYPE_KWARG = "dtype" if _TRANSFORMERS_VERSION >= (4, 56) else "torch_dtype"


def _one_line(err: BaseException) -> str:
    """First non-empty line of an exception message (library errors are often multi-line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-file "Loading weights" / "Writing model shards" bars: tiny local files, pure noise."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_transformers_model(
    cls: type[Any], folder: str | Path, what: str, dtype: torch.dtype, variant: str | None
) -> Any:
    """`cls.from_pretrained` from a local folder; every failure (or a missing weight) raises `CheckpointError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{what} folder not found: {folder}")
    try:
        with quiet_transformers():
            model, info = cls.from_pretrained(
                folder, local_files_only=True, variant=variant, output_loading_info=True, **{_DTYPE_KWARG: dtype}
            )
    except Exception as err:  # OSError, ValueError, safetensors errors, ... all mean "cannot load"
        raise CheckpointError(f"cannot load the {what} from {folder}: {_one_line(err)}") from err
    missing = sorted(info.get("missing_keys") or [])
    if missing:  # transformers only warns and leaves those weights random
        raise CheckpointError(
            f"the {what} in {folder} lacks {len(missing)} weight(s), e.g. {missing[0]!r}: not a {cls.__name__}"
        )
    return model


def _load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """A `CLIPTokenizer` from a local folder holding `tokenizer.json` or `vocab.json` + `merges.txt`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder not found: {folder}")
    # Without these files transformers >= 5 silently builds a 3-token tokenizer instead of failing.
    has_files = (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )
    if not has_files:
        raise CheckpointError(f"no tokenizer.json or vocab.json + merges.txt in tokenizer folder {folder}")
    try:
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot load the tokenizer from {folder}: {_one_line(err)}") from err


class TextEncoder(nn.Module):
    """CLIP text tower: prompts -> (B, 77, D) penultimate-layer token states after the final layer norm.

    Matches VGen's `FrozenOpenCLIPEmbedder(layer="penultimate")` and diffusers' `clip_skip=1` path (spec §3).

    Args:
        model: a `CLIPTextModel`. transformers >= 5 puts `final_layer_norm` on the model itself; 4.x nests it under
            `.text_model`; both layouts work.
        tokenizer: the matching `CLIPTokenizer`.
        pad_token_id: if set, padding positions get this id instead of the tokenizer's pad token. VGen's
            `open_clip.tokenize` pads with 0, and since all 77 states are used as context the pad id changes
            the tail embeddings (spec §8.6); `None` keeps the tokenizer's choice, as diffusers does.
    """

    def __init__(self, model: CLIPTextModel, tokenizer: CLIPTokenizer, *, pad_token_id: int | None = None):
        super().__init__()
        # The tokenizer's model_max_length when it names a shorter context (a tiny model's folder may: fewer padding
        # tokens beside the words), else CLIP's 77 (the real models').
        self.context_length = min(CONTEXT_LENGTH, int(getattr(tokenizer, "model_max_length", CONTEXT_LENGTH)))
        if self.context_length < 2:
            raise CheckpointError(f"tokenizer model_max_length {tokenizer.model_max_length} leaves no room for words")
        if model.config.max_position_embeddings < self.context_length:
            raise CheckpointError(
                f"text encoder has {model.config.max_position_embeddings} positions, needs {self.context_length}"
            )
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.pad_token_id = pad_token_id

    @classmethod
    def from_pretrained(
        cls,
        folder_text_encoder: str | Path,
        folder_tokenizer: str | Path,
        dtype: torch.dtype = torch.float32,
        variant: str | None = None,
        *,
        pad_token_id: int | None = None,
    ) -> TextEncoder:
        """Load from a model folder's `text_encoder/` and `tokenizer/`; `variant="fp16"` reads `model.fp16.*`."""
        model = _load_transformers_model(CLIPTextModel, folder_text_encoder, "text encoder", dtype, variant)
        return cls(model, _load_tokenizer(folder_tokenizer), pad_token_id=pad_token_id)

    @classmethod
    def from_model_folder(
        cls, root: str | Path, dtype: torch.dtype = torch.float32, variant: str | None = None, **kwargs: Any
    ) -> TextEncoder:
        """Load from a diffusers-format model folder (`root/text_encoder`, `root/tokenizer`)."""
        root = Path(root)
        return cls.from_pretrained(root / "text_encoder", root / "tokenizer", dtype, variant, **kwargs)

    @property
    def final_layer_norm(self) -> nn.LayerNorm:
        """The final layer norm, wherever this transformers version keeps it."""
        return getattr(self.model, "text_model", self.model).final_layer_norm

    def tokenize(self, prompts: str | Sequence[str]) -> Tensor:
        """Prompts -> (B, L) token ids, truncated (with a warning) and padded to the L-token context
        (`context_length`: 77 for CLIP)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"expected one or more prompt strings, got {prompts!r}")
        # Tokens per prompt with bos/eos, before truncation, to report what gets cut.
        lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False, verbose=False).input_ids]
        for i, n in enumerate(lengths):
            if n > self.context_length:
                warnings.warn(
                    f"prompt {i} is {n} tokens long; its last {n - self.context_length} tokens were cut to fit the "
                    f"{self.context_length}-token text context",
                    stacklevel=3,
                )
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=self.context_length, truncation=True, return_tensors="pt"
        )
        ids = tokens.input_ids  # (B, L)
        if self.pad_token_id is not None:
            ids = ids.masked_fill(tokens.attention_mask == 0, self.pad_token_id)
        return ids

    def encode(self, prompts: str | Sequence[str]) -> Tensor:
        """Prompts -> (B, L, D) context (L = `context_length`, 77 for CLIP): hidden state of the penultimate
        layer, then the final layer norm."""
        return self.encode_ids(self.tokenize(prompts).to(self.model.device))

    def encode_ids(self, ids: Tensor) -> Tensor:
        """Token ids (B, L), as `tokenize` gives them -> (B, L, D): what `encode` returns for their prompts."""
        # No attention mask: CLIP's causal mask already keeps padding out of the real tokens (as VGen and diffusers).
        out = self.model(input_ids=ids, output_hidden_states=True)
        hidden = out.hidden_states[-2]  # (B, L, D); hidden_states[0] is the embedding output
        return self.final_layer_norm(hidden)

    def forward(self, prompts: str | Sequence[str]) -> Tensor:
        return self.encode(prompts)


class ImageEncoder(nn.Module):
    """CLIP vision tower with projection: normalised (B, 3, 224, 224) pixels -> (B, D) `image_embeds`.

    The full tower, pooled and projected (not penultimate), as VGen's `encode_image` (spec §3). Pre-processing
    (cover-resize, centre crop, bilinear to 224, CLIP mean/std) is the caller's job.
    """

    def __init__(self, model: CLIPVisionModelWithProjection):
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, dtype: torch.dtype = torch.float32, variant: str | None = None
    ) -> ImageEncoder:
        """Load from a model folder's `image_encoder/`; `variant="fp16"` reads `model.fp16.*`."""
        return cls(
            _load_transformers_model(CLIPVisionModelWithProjection, folder, "image encoder", dtype, variant)
        )

    @classmethod
    def from_model_folder(
        cls, root: str | Path, dtype: torch.dtype = torch.float32, variant: str | None = None
    ) -> ImageEncoder:
        """Load from a diffusers-format model folder (`root/image_encoder`)."""
        return cls.from_pretrained(Path(root) / "image_encoder", dtype, variant)

    def encode(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, S, S) CLIP-normalised pixels, S = the config's image size (224) -> (B, D) image embeddings."""
        cfg = self.model.config
        expected = (cfg.num_channels, cfg.image_size, cfg.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise InputError(
                f"image encoder expects (B, {', '.join(map(str, expected))}) pixels, got {tuple(pixel_values.shape)}"
            )
        x = pixel_values.to(device=self.model.device, dtype=self.model.dtype)
        return self.model(pixel_values=x).image_embeds  # (B, D)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.encode(pixel_values)


# --- tiny components for tests (no network) ---------------------------------------------------------------------


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte -> printable character table used by byte-level BPE, in byte order 0..255."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def write_tiny_clip_tokenizer(folder: str | Path) -> Path:
    """Write a tiny CLIP BPE vocabulary (bytes, a few merges, special tokens; 518 ids) as vocab.json + merges.txt.

    Load it with `CLIPTokenizer.from_pretrained(folder)`. Ids: bos 516, eos = pad 517.
    """
    return _write_clip_bpe(folder, [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>")])


def _write_clip_bpe(folder: str | Path, merges: Sequence[tuple[str, str]]) -> Path:
    """vocab.json + merges.txt of a CLIP BPE: ids are the 512 byte tokens (plain, then with "</w>"), the merged
    symbols in merge order (each once), then <|startoftext|> and <|endoftext|>."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = [*_bytes_to_unicode(), *(c + "</w>" for c in _bytes_to_unicode())]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                       encoding="utf-8")
    return folder


def tiny_text_config(**overrides: Any) -> transformers.CLIPTextConfig:
    """A 2-layer, 8-wide `CLIPTextConfig` whose special ids match `write_tiny_clip_tokenizer`."""
    cfg: dict[str, Any] = {
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 518,
        "projection_dim": 8,
        "max_position_embeddings": CONTEXT_LENGTH,
        "bos_token_id": 516,
        "eos_token_id": 517,
        "pad_token_id": 517,
    }
    return transformers.CLIPTextConfig(**{**cfg, **overrides})


def tiny_vision_config(**overrides: Any) -> transformers.CLIPVisionConfig:
    """A 2-layer, 8-wide `CLIPVisionConfig` at 32² with 8×8 patches."""
    cfg: dict[str, Any] = {
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "projection_dim": 8,
        "image_size": 32,
        "patch_size": 8,
    }
    return transformers.CLIPVisionConfig(**{**cfg, **overrides})


def learn_word_merges(words: Sequence[str]) -> list[tuple[str, str]]:
    """BPE merges (in rank order) after which every word of `words` is a single token.

    Classic BPE learning over the word list, each word counted once: merge the most frequent adjacent pair (ties
    broken by the pair itself, so the result is deterministic) until no word has two symbols left. Applying the
    merges in rank order to a learned word replays its learning, so it ends as one token. Words are CLIP-style: the
    last symbol carries "</w>".
    """
    split = {w: [*w[:-1], w[-1] + "</w>"] for w in sorted(set(words)) if w}
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in split.values():
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for w, symbols in split.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            split[w] = out


def write_word_clip_tokenizer(folder: str | Path, words: Sequence[str]) -> Path:
    """Write a CLIP BPE tokenizer (vocab.json + merges.txt) that keeps each of `words` (lower-case, no spaces) as
    one token; any other text falls back to byte tokens. Ids: 512 byte tokens, the merged symbols, then
    <|startoftext|> and <|endoftext|> (= pad) last, so `vocab_size` = the number of ids. Load it with
    `CLIPTokenizer.from_pretrained(folder)`."""
    bad = [w for w in words if not w or w != w.lower() or not re.fullmatch(r"[a-z0-9]+|[^\sa-z0-9]", w)]
    if bad:
        raise InputError(f"tokenizer words must be lower-case letters/digits or one punctuation mark, got {bad[:3]}")
    return _write_clip_bpe(folder, learn_word_merges(words))
