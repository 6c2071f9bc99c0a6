"""`deepseek-ocr`: DeepSeek-OCR (v1) through the checkpoint's own remote code.

transformers 5.23 has no native DeepSeek-OCR v1 class, so loading it means importing the
Python files shipped in the checkpoint directory (`modeling_deepseekocr.py`,
`deepencoder.py`, ...). That runs only when the user passes `trust_remote_code=True`
(CLI: `--trust-remote-code`); otherwise the codec refuses and says why.

UNVERIFIED ON REAL WEIGHTS: the remote code could not be obtained where this backend was
written. What is tested is flag handling, directory checks, mode geometry and token
counts, and the assembly/decoding mechanics against a stand-in model (see
tests/test_deepseek_ocr.py and docs/deepseek.md).

Native resolution modes (global view only, padded/resized to a square):

    mode   side   tokens   with layout tokens (a newline per row + a view separator)
    tiny    512     64      8 x (8 + 1) + 1  =  73
    small   640    100     10 x (10 + 1) + 1 = 111
    base   1024    256     16 x (16 + 1) + 1 = 273
    large  1280    400     20 x (20 + 1) + 1 = 421

The newline and separator embeddings are constants of the model. `keep_layout_tokens`
chooses whether `encode` returns them (the decoder's exact input) or only the informative
tokens on a (side/64 x side/64) grid; either way `decode` and `text_nll` give the decoder
the full layout. The choice is part of `version`, so a token store records it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from codec.base import Codec, PageImages, TextNLL
from codec.registry import register_codec
from data.errors import BadInput, UserError
from codec.deepseek_common import (
    apply_read_options,
    ReadOptions,
    open_checkpoint,
    CheckpointError,
    as_page_list,
    decoder_text_nll,
    dtype_name,
    fingerprint,
    greedy_generate,
    pick_device,
    pick_dtype,
    split_rows,
    windowed_no_repeat_processor,
)

ENV_VAR = "VST_DEEPSEEK_OCR_PATH"
PATCH, DOWNSAMPLE = 16, 4  # SAM patch size, then 4x conv compression: one token per 64 px
MODES = {"tiny": 512, "small": 640, "base": 1024, "large": 1280}
PRESETS = {"tiny": "ds-tiny", "small": "ds-small", "base": "ds-base", "large": "ds-large"}
_PAD_COLOR = (127, 127, 127)  # the image mean (0.5) in uint8: how the model's own code pads


class RemoteCodeRefused(UserError, PermissionError):
    """Loading would run code from the checkpoint and the user did not allow it."""


def mode_geometry(mode: str, keep_layout_tokens: bool = False) -> tuple[int, int, tuple[int, int]]:
    """(page side in px, tokens per page, grid) of a native mode; no model needed."""
    if mode not in MODES:
        raise BadInput(f"deepseek-ocr: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    side = MODES[mode]
    per_side = -(-side // (PATCH * DOWNSAMPLE))
    if keep_layout_tokens:
        n = per_side * (per_side + 1) + 1
        return side, n, (1, n)  # rows of width+1 plus a separator: an ordered 1D sequence
    return side, per_side * per_side, (per_side, per_side)


def _remote_code_files(directory: Path, config: dict) -> list[str]:
    auto_map = config.get("auto_map") or {}
    modules = {str(ref).split("--")[-1].split(".")[0] for ref in auto_map.values()}
    return sorted(f"{m}.py" for m in modules)


def _check_checkpoint(directory: Path, config: dict) -> list[str]:
    """The remote-code files this checkpoint would run; errors for the wrong model."""
    model_type = str(config.get("model_type", ""))
    auto_model = str((config.get("auto_map") or {}).get("AutoModel", ""))
    if model_type == "deepseek_ocr2" or "deepseekocr2" in auto_model.lower():
        raise CheckpointError(
            f"deepseek-ocr: {directory} is a DeepSeek-OCR-2 checkpoint; use the `deepseek-ocr2` "
            "codec (with the transformers-format weights)"
        )
    if "modeling_deepseekocr" not in auto_model:
        raise CheckpointError(
            f"deepseek-ocr: {directory} is not a DeepSeek-OCR v1 checkpoint: its config.json has "
            f"model_type {model_type!r} and auto_map.AutoModel {auto_model or 'missing'!r}, "
            "expected 'modeling_deepseekocr.DeepseekOCRForCausalLM'"
        )
    files = _remote_code_files(directory, config)
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(
            f"deepseek-ocr: {directory} is incomplete: remote code {missing} is missing"
        )
    return files


@dataclass(frozen=True)
class OcrOptions(ReadOptions):
    """How the backend reads a page (see `ReadOptions`), and its resolution mode."""

    mode: str = "small"  # tiny | small | base | large (512 / 640 / 1024 / 1280 px pages)
    keep_layout_tokens: bool = False  # keep the newline-per-row and view-separator tokens


@register_codec("deepseek-ocr")
class DeepseekOcrCodec(Codec):
    name = "deepseek-ocr"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        trust_remote_code: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **options,
    ) -> None:
        """Load a local DeepSeek-OCR checkpoint (its own code: only with trust_remote_code=True);
        `options` are `OcrOptions` fields."""
        opts = OcrOptions(**options)
        mode, keep_layout_tokens = opts.mode, opts.keep_layout_tokens
        side, n, grid = mode_geometry(mode, keep_layout_tokens)
        directory, _, weights, code_files = open_checkpoint(
            path, self.name, ENV_VAR, lambda d, config: _check_checkpoint(d, config))
        if trust_remote_code is not True:
            raise RemoteCodeRefused(
                "deepseek-ocr: DeepSeek-OCR v1 has no native transformers class, so loading it "
                f"would import and run Python code from {directory} ({', '.join(code_files)}). "
                "Read that code, then pass trust_remote_code=True (CLI: --trust-remote-code) "
                "to allow it. The `deepseek-ocr2` codec needs no remote code."
            )

        self.path = directory
        self.mode = mode
        self.side = side
        self.n, self.grid = n, grid
        self.keep_layout_tokens = keep_layout_tokens
        self.rows_per_side = int(round(side / (PATCH * DOWNSAMPLE)))
        apply_read_options(self, opts)
        self._device = pick_device(device)
        self.dtype = pick_dtype(dtype, self._device)

        self.tokenizer, self.model = _load_remote(directory, self.dtype, self._device)
        self.inner = self.model.model
        for attr in ("sam_model", "vision_model", "projector", "image_newline", "view_seperator"):
            if not hasattr(self.inner, attr):
                raise CheckpointError(
                    f"deepseek-ocr: the remote model in {directory} has no `model.{attr}`; "
                    "this backend expects DeepSeek-OCR's DeepseekOCRForCausalLM layout"
                )
        self.D = int(self.inner.image_newline.shape[-1])
        from render import get_preset

        self.render_config = get_preset(opts.render_preset or PRESETS[mode])
        self.bos_id = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else 0
        self.eos_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 1
        self.prefix_ids = [self.bos_id] + self._ids(self.prompt_prefix)
        self.suffix_ids = self._ids(self.prompt_suffix)
        lm_config = getattr(self.model.config, "language_config", None) or self.model.config
        if isinstance(lm_config, dict):
            self.max_positions = lm_config.get("max_position_embeddings")
        else:
            self.max_positions = getattr(lm_config, "max_position_embeddings", None)
        self.version = (
            f"deepseek-ocr:{fingerprint(directory, weights)}:mode={mode}:"
            f"layout={int(keep_layout_tokens)}:{dtype_name(self.dtype)}"
        )

    @property
    def device(self) -> torch.device:
        return self._device

    # ---- encode ---------------------------------------------------------------------

    def preprocess(self, page: np.ndarray) -> torch.Tensor:
        """One page -> normalised [3, side, side]: squares are resized, others padded with
        the mean grey after an aspect-preserving resize, as the model's own code does."""
        from PIL import Image, ImageOps

        image = Image.fromarray(page)
        if image.size == (self.side, self.side):
            pass
        elif self.side <= 640 or image.width == image.height:
            image = image.resize((self.side, self.side), Image.Resampling.BICUBIC)
        else:
            image = ImageOps.pad(image, (self.side, self.side), color=_PAD_COLOR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        return ((pixels - 0.5) / 0.5).permute(2, 0, 1)

    @torch.no_grad()
    def encode(self, pages: PageImages) -> torch.Tensor:
        images = as_page_list(pages)
        if not images:
            return torch.zeros(0, self.n, self.D, device=self._device, dtype=self.dtype)
        out = []
        for start in range(0, len(images), self.encode_batch_size):
            chunk = images[start : start + self.encode_batch_size]
            batch = torch.stack([self.preprocess(page) for page in chunk])
            out.append(self._features(batch.to(self._device, self.dtype)))
        return torch.cat(out, dim=0)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        """DeepEncoder: SAM features feed CLIP; both are concatenated and projected to D."""
        sam = self.inner.sam_model(pixels)
        clip = self.inner.vision_model(pixels, sam)
        joined = torch.cat([clip[:, 1:], sam.flatten(2).permute(0, 2, 1)], dim=-1)
        tokens = self.inner.projector(joined)  # [B, h*w, D]
        if tokens.shape[1] != self.rows_per_side**2:
            raise RuntimeError(
                f"deepseek-ocr: the encoder gave {tokens.shape[1]} tokens, "
                f"expected {self.rows_per_side**2}"
            )
        return self.add_layout(tokens) if self.keep_layout_tokens else tokens

    def add_layout(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, h*w, D] -> [B, h*(w+1)+1, D]: a newline after every row, then the separator."""
        batch, _, dim = tokens.shape
        h = w = self.rows_per_side
        grid = tokens.reshape(batch, h, w, dim)
        newline = self.inner.image_newline.to(tokens.dtype).expand(batch, h, 1, dim)
        flat = torch.cat([grid, newline], dim=2).reshape(batch, h * (w + 1), dim)
        sep = self.inner.view_seperator.to(tokens.dtype).expand(batch, 1, dim)
        return torch.cat([flat, sep], dim=1)

    # ---- decoder side ---------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _visual_rows(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
        if tokens.ndim != 3 or tokens.shape[1:] != (self.n, self.D):
            raise ValueError(
                f"deepseek-ocr: tokens must be [B, {self.n}, {self.D}] in mode {self.mode}; "
                f"got {tuple(tokens.shape)}"
            )
        tokens = tokens.to(self._device, self.dtype)
        if not self.keep_layout_tokens:
            tokens = self.add_layout(tokens)
        return split_rows(tokens, mask, infer_padding=False)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def _lm(self, **kwargs):
        # DeepseekOCRModel.forward insists on input_ids for its image branch; the text-only
        # forward of its DeepseekV2Model parent is what reads the embeddings.
        return super(type(self.inner), self.inner).forward(**kwargs)

    def _lm_hidden(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self._lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)
        return out[0]

    def text_nll(
        self, tokens: torch.Tensor, texts: Sequence[str], mask: torch.Tensor | None = None
    ) -> TextNLL:
        return decoder_text_nll(self, tokens, texts, mask)

    @torch.no_grad()
    def decode(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int | None = None,
        mask: torch.Tensor | None = None,
    ) -> list[str]:
        rows = self._visual_rows(tokens, mask)
        if not rows:
            return []
        prefix = self._embed(torch.tensor(self.prefix_ids, device=self._device)).to(self.dtype)
        suffix = self._embed(torch.tensor(self.suffix_ids, device=self._device)).to(self.dtype)
        guard = windowed_no_repeat_processor(self.no_repeat_ngram, self.no_repeat_window)(0)

        def step(inputs, attention, positions, past):
            out = self._lm(
                inputs_embeds=inputs, attention_mask=attention, position_ids=positions,
                past_key_values=past, use_cache=True,
            )
            return self.model.lm_head(out[0][:, -1]).float(), out[1]

        ids: list[list[int]] = []
        for start in range(0, len(rows), self.decode_batch_size):
            chunk = rows[start : start + self.decode_batch_size]
            prompt = torch.stack([torch.cat([prefix, row, suffix], dim=0) for row in chunk])
            ids += greedy_generate(
                step, self._embed, prompt, self.eos_id, max_new_tokens or self.max_new_tokens, guard
            )
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in ids]


def _load_remote(directory: Path, dtype: torch.dtype, device: torch.device):
    from transformers import AutoModel, AutoTokenizer

    try:
        options = dict(trust_remote_code=True, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, **options)
        model = AutoModel.from_pretrained(directory, dtype=dtype, use_safetensors=True, **options)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise CheckpointError(
            f"deepseek-ocr: loading the remote code in {directory} failed: "
            f"{type(err).__name__}: {err}. DeepSeek-OCR's code was written for transformers "
            "4.46; with this project's transformers it may need a patched copy "
            "(see docs/deepseek.md)."
        ) from err
    model.to(device).eval()
    model.requires_grad_(False)
    return tokenizer, model
