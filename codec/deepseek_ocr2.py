"""`deepseek-ocr2`: DeepSeek-OCR-2 through transformers' native classes.

The frozen encoder is SAM ViT-B -> a Qwen2-style encoder with causal-flow queries -> a
linear projector into the decoder width D (1280 in the real model). The decoder is
DeepSeek's 3B MoE. Weights come from a local HF-format directory (e.g. a download of
deepseek-community/DeepSeek-OCR-2), never from the network.

Tokens of one page, in the model's own order (`get_image_features(...).pooler_output`):

    mode "global": [256 global-view tokens (1024² view)] + [view separator]        n = 257
    mode "crops":  [144 per 768² tile, tile by tile] + [256 global] + [separator]  n varies

`keep_separator=False` drops the separator from `encode`'s output (n = 256 in global
mode); it is a constant learned vector, so `decode` and `text_nll` put it back. In crops
mode `encode` right-pads rows with exact zeros; `encode_with_mask` also returns the mask,
and `decode` / `text_nll` take it (or treat trailing all-zero rows as padding).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from codec.base import Codec, PageImages, TextNLL
from codec.registry import register_codec
from data.errors import BadInput
from codec.deepseek_common import (
    apply_read_options,
    ReadOptions,
    open_checkpoint,
    PROCESSOR_FILES,
    CheckpointError,
    as_page_list,
    decoder_text_nll,
    dtype_name,
    fingerprint,
    pad_rows,
    pick_device,
    pick_dtype,
    sequence_nll,
    split_rows,
    windowed_no_repeat_processor,
)

log = logging.getLogger(__name__)

MODEL_TYPE = "deepseek_ocr2"
ENV_VAR = "VST_DEEPSEEK_OCR2_PATH"
# The plain-OCR prompt of the model card ("<image>\nFree OCR."), after a BOS token.
MODES = ("global", "crops")
# model_type values of releases that need the remote-code path instead.
_REMOTE_CODE_TYPES = {"deepseek_vl_v2", "deepseekocr", "deepseek_ocr", "deepseekocr2"}


def _check_model_type(config: dict, directory) -> None:
    model_type = str(config.get("model_type", ""))
    if model_type == MODEL_TYPE:
        return
    hint = ""
    if model_type.lower() in _REMOTE_CODE_TYPES or config.get("auto_map"):
        hint = (
            " It looks like an original remote-code release (deepseek-ai/...); this backend needs "
            "the transformers-format checkpoint (e.g. deepseek-community/DeepSeek-OCR-2). "
            "DeepSeek-OCR v1 is the `deepseek-ocr` codec."
        )
    raise CheckpointError(
        f"deepseek-ocr2: {directory} holds a {model_type or 'model of unknown type'!r} "
        f"checkpoint, expected model_type {MODEL_TYPE!r}.{hint}"
    )


@dataclass(frozen=True)
class Ocr2Options(ReadOptions):
    """How the backend reads a page; declared once, for a checkpoint or an in-memory model."""

    mode: str = "global"  # global (the whole page as one view) | crops (global view + tiles)
    keep_separator: bool = True  # keep the view separator token as the page's last token

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadInput(
                f"deepseek-ocr2: unknown mode {self.mode!r}; choose one of {', '.join(MODES)}"
            )


@register_codec("deepseek-ocr2")
class DeepseekOcr2Codec(Codec):
    name = "deepseek-ocr2"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **options,
    ) -> None:
        """Load a local DeepSeek-OCR-2 checkpoint; `options` are `Ocr2Options` fields."""
        opts = Ocr2Options(**options)
        directory, _, weights, _ = open_checkpoint(
            path, self.name, ENV_VAR, lambda d, config: _check_model_type(config, d))
        torch_device = pick_device(device)
        torch_dtype = pick_dtype(dtype, torch_device)
        processor = _load_processor(directory)
        model = _load_model(directory, torch_dtype, torch_device)
        self.path = directory
        self._setup(model, processor, fingerprint(directory, weights), opts)

    @classmethod
    def from_model(
        cls, model, processor, weights_id: str = "in-memory", **options
    ) -> "DeepseekOcr2Codec":
        """A codec around an already-built model and processor (benchmarks, experiments).
        The model is frozen in place; `weights_id` goes into `version`."""
        opts = Ocr2Options(**options)
        self = cls.__new__(cls)
        self.path = None
        model.eval()
        model.requires_grad_(False)
        self._setup(model, processor, weights_id, opts)
        return self

    def _setup(self, model, processor, weights_id: str, opts: Ocr2Options) -> None:
        self.model, self.processor, self.tokenizer = model, processor, processor.tokenizer
        first = next(model.parameters())
        self._device, self.dtype = first.device, first.dtype
        mode, keep_separator, render_preset = opts.mode, opts.keep_separator, opts.render_preset
        self.mode = mode
        self.keep_separator = keep_separator
        apply_read_options(self, opts)
        self._table: torch.Tensor | bool | None = None  # see _pixel_table

        text_config = model.config.text_config
        self.D = int(text_config.hidden_size)
        self.max_positions = getattr(text_config, "max_position_embeddings", None)
        image_processor = processor.image_processor
        self.global_size = int(image_processor.size.height)
        self.tile_size = int(image_processor.tile_size)
        self.n_global = self._queries(self.global_size)
        self.n_tile = self._queries(self.tile_size)
        if mode == "global":
            self.n = self.n_global + int(keep_separator)
            # The causal-flow queries are an ordered 1D sequence, not a spatial grid.
            self.grid = (1, self.n)
        else:
            self.n = None
            self.grid = None
        from render import get_preset

        default_preset = "ds-base" if mode == "global" else "ds-large"
        self.render_config = get_preset(render_preset or default_preset)

        self.bos_id = self.tokenizer.bos_token_id
        self.eos_id = self.tokenizer.eos_token_id
        if self.bos_id is None or self.eos_id is None:
            raise CheckpointError("deepseek-ocr2: the tokenizer has no BOS/EOS token")
        self.prefix_ids = [self.bos_id] + self._ids(self.prompt_prefix)
        self.suffix_ids = self._ids(self.prompt_suffix)
        self.version = (
            f"deepseek-ocr2:{weights_id}:mode={mode}:sep={int(keep_separator)}:"
            f"{dtype_name(self.dtype)}"
        )

    # ---- geometry -------------------------------------------------------------------

    def _queries(self, side: int) -> int:
        # One query per 16x16 SAM patch after the 4x conv downsampling: 1024 -> 256, 768 -> 144.
        per_side = -(-side // (self.processor.patch_size * self.processor.downsample_ratio))
        return per_side * per_side

    def num_tiles(self, height: int, width: int) -> int:
        """Local 768² tiles the processor cuts from a page of this size (crops mode)."""
        from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import (
            get_optimal_tiled_canvas,
        )

        ip = self.processor.image_processor
        if self.mode == "global" or max(height, width) <= self.tile_size:
            return 0
        cols, rows = get_optimal_tiled_canvas(
            (height, width), (self.tile_size, self.tile_size), ip.min_patches, ip.max_patches
        )
        return cols * rows

    def tokens_per_page(self, height: int, width: int) -> int:
        """Tokens `encode` yields for one page of this pixel size, separator included or not."""
        tiles = self.num_tiles(height, width)
        return tiles * self.n_tile + self.n_global + int(self.keep_separator)

    @property
    def device(self) -> torch.device:
        return self._device

    # ---- encode ---------------------------------------------------------------------

    def encode(self, pages: PageImages) -> torch.Tensor:
        return self.encode_with_mask(pages)[0]

    @torch.no_grad()
    def encode_with_mask(self, pages: PageImages) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens [B, n_max, D] in the model dtype on the codec device, and a bool mask
        [B, n_max] of real tokens (all True in global mode)."""
        images = as_page_list(pages)
        if not images:
            empty = torch.zeros(0, self.n or 0, self.D, device=self._device, dtype=self.dtype)
            return empty, torch.zeros(0, self.n or 0, dtype=torch.bool, device=self._device)
        rows: list[torch.Tensor] = []
        for start in range(0, len(images), self.encode_batch_size):
            rows.extend(self._encode_chunk(images[start : start + self.encode_batch_size]))
        return pad_rows(rows)

    def _encode_chunk(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        pixels = self._global_view(images) if self.mode == "global" else None
        if pixels is not None:
            out = self.model.get_image_features(
                pixel_values=pixels, num_local_patches=[0] * len(images)
            )
        else:
            features = self._processor_features(images)
            local = features.get("pixel_values_local")
            out = self.model.get_image_features(
                pixel_values=features["pixel_values"].to(self._device, self.dtype),
                pixel_values_local=None if local is None else local.to(self._device, self.dtype),
                num_local_patches=features["num_local_patches"].tolist(),
            )
        rows = list(out.pooler_output)
        return rows if self.keep_separator else [row[:-1] for row in rows]

    def _processor_features(self, images: list[np.ndarray]):
        ip = self.processor.image_processor
        if self.mode == "global":
            # With crop_to_patches=False the processor sizes the global view to `tile_size`;
            # asking for the 1024² size gives the 256-token view the model reads pages at.
            return ip(images, crop_to_patches=False, tile_size=self.global_size, return_tensors="pt")
        return ip(images, crop_to_patches=True, return_tensors="pt")

    def _global_view(self, images: list[np.ndarray]) -> torch.Tensor | None:
        """Global-view pixel values of pages already at the view's size, made on the codec's
        device: None when a page needs resizing or padding (the processor does that).

        For such pages the processor only rescales and normalises each value, so a
        per-channel table of its own outputs gives the same pixels, bit for bit. It saves
        the processor's CPU time (the bottleneck of a GPU encoder) and moves uint8 to the
        device, a quarter of float32's bytes.
        """
        side = self.global_size
        if any(image.shape != (side, side, 3) for image in images):
            return None
        table = self._pixel_table()
        if table is None:
            return None
        pixels = torch.from_numpy(np.stack(images)).to(self._device, non_blocking=True)
        index = pixels.int() + torch.arange(0, 3 * 256, 256, device=self._device, dtype=torch.int32)
        return table[index].permute(0, 3, 1, 2).contiguous()

    def _pixel_table(self) -> torch.Tensor | None:
        """The processor's value for each (channel, uint8 level): a flat [3 * 256] table in the
        model dtype, or None if its output is not a function of the value alone."""
        if self._table is None:
            side = self.global_size
            # Noise after a first row that starts with every level in every channel: a
            # processor that mixes neighbouring pixels (or channels) cannot be rebuilt from
            # the levels' first values.
            page = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
            page[0, :256] = np.arange(256, dtype=np.uint8)[:, None]
            out = self._processor_features([page])["pixel_values"][0]  # [3, side, side] float32
            table = out[:, 0, :256]  # [3, 256]: channel c's value for level v
            levels = torch.from_numpy(page).long().permute(2, 0, 1)
            if torch.equal(table.gather(1, levels.flatten(1)).view_as(out), out):
                self._table = table.flatten().to(self._device, self.dtype)
            else:
                log.warning("deepseek-ocr2: the image processor is not per-value; pages go "
                            "through it on the CPU")
                self._table = False
        return self._table if self._table is not False else None

    # ---- decoder side ---------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _visual_rows(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Per-page visual embeddings as the decoder must see them (separator restored)."""
        wrong_n = self.n is not None and tokens.ndim == 3 and tokens.shape[1] != self.n
        if tokens.ndim != 3 or tokens.shape[-1] != self.D or wrong_n:
            expected = f"[B, {self.n if self.n is not None else 'n'}, {self.D}]"
            raise ValueError(
                f"deepseek-ocr2: tokens must be {expected} in mode {self.mode}; "
                f"got {tuple(tokens.shape)}"
            )
        tokens = tokens.to(self._device, self.dtype)
        rows = split_rows(tokens, mask, infer_padding=self.mode == "crops")
        if self.keep_separator:
            return rows
        sep = self.model.model.view_separator.to(self.dtype).unsqueeze(0)
        return [torch.cat([row, sep], dim=0) for row in rows]

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def _lm_hidden(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
        )
        return out.last_hidden_state

    def text_nll(
        self, tokens: torch.Tensor, texts: Sequence[str], mask: torch.Tensor | None = None
    ) -> TextNLL:
        return decoder_text_nll(self, tokens, texts, mask)

    def decode(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int | None = None,
        mask: torch.Tensor | None = None,
    ) -> list[str]:
        ids = self.generate_ids(tokens, max_new_tokens, mask)
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in ids]

    @torch.no_grad()
    def generate_ids(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int | None = None,
        mask: torch.Tensor | None = None,
    ) -> list[list[int]]:
        """Greedy decoder token ids per page, EOS excluded (what `decode` detokenises)."""
        from transformers import GenerationConfig, LogitsProcessorList

        rows = self._visual_rows(tokens, mask)
        prefix = self._embed(torch.tensor(self.prefix_ids, device=self._device)).to(self.dtype)
        suffix = self._embed(torch.tensor(self.suffix_ids, device=self._device)).to(self.dtype)
        pad_id = self.tokenizer.pad_token_id
        pad_id = self.eos_id if pad_id is None else pad_id
        # A fresh config: a checkpoint's own generation_config may ask for sampling.
        gen_config = GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=max_new_tokens or self.max_new_tokens,
            eos_token_id=self.eos_id, pad_token_id=pad_id, bos_token_id=self.bos_id,
        )
        guard = windowed_no_repeat_processor(self.no_repeat_ngram, self.no_repeat_window)
        results: list[list[int]] = [[] for _ in rows]
        # Pages with equal token counts share one unpadded generate call, so no row ever
        # sees padding and each page decodes exactly as it would alone.
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            by_length.setdefault(row.shape[0], []).append(i)
        groups = [
            same[s : s + self.decode_batch_size]
            for same in by_length.values()
            for s in range(0, len(same), self.decode_batch_size)
        ]
        for members in groups:
            embeds = torch.stack([torch.cat([prefix, rows[i], suffix], dim=0) for i in members])
            attention = torch.ones(embeds.shape[:2], dtype=torch.long, device=self._device)
            out = self.model.generate(
                inputs_embeds=embeds, attention_mask=attention, generation_config=gen_config,
                logits_processor=LogitsProcessorList([guard(0)]),
            )
            for i, ids in zip(members, out.tolist()):
                results[i] = ids[: ids.index(self.eos_id)] if self.eos_id in ids else ids
        return results

    # ---- reading: the decoder is a general LM, so it answers prompts about pages --------

    reads_prompts = True

    def _read_parts(self, tokens: torch.Tensor, before: str, after: str):
        """[BOS] + `before` ids, the pages' visual embeddings laid end to end [V, D] (each
        page with its separator, as in OCR), `after` ids."""
        rows = self._visual_rows(tokens, None) if len(tokens) else []
        vis = torch.cat(rows) if rows else torch.zeros(0, self.D, device=self._device,
                                                       dtype=self.dtype)
        return [self.bos_id] + self._ids(before), vis, self._ids(after)

    @torch.no_grad()
    def read(self, tokens: torch.Tensor, *, before: str, after: str,
             max_new_tokens: int) -> str:
        """Greedy answer to [BOS, before, the pages' tokens [P, n, D], after]. With
        before="" and after=`prompt_suffix` around one page this is `decode` (the visual
        tokens enter exactly as in OCR; only the text around them changes)."""
        from transformers import GenerationConfig

        pre, vis, post = self._read_parts(tokens, before, after)

        def emb(ids: list[int]) -> torch.Tensor:
            return self._embed(torch.tensor(ids, dtype=torch.long, device=self._device)).to(
                self.dtype)

        embeds = torch.cat([emb(pre), vis, emb(post)])[None]
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self._device)
        pad = self.tokenizer.pad_token_id
        pad = self.eos_id if pad is None else pad
        cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                               eos_token_id=self.eos_id, pad_token_id=pad, bos_token_id=self.bos_id)
        ids = self.model.generate(inputs_embeds=embeds, attention_mask=mask,
                                  generation_config=cfg)[0].tolist()
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def read_nll(self, tokens: torch.Tensor, after: str, continuation: str) -> float:
        """NLL (nats) of `continuation` after [BOS, the pages' tokens [P, n, D], after]; with
        `prompt_suffix` as `after` and one page it is `text_nll`."""
        pre, vis, post = self._read_parts(tokens, "", after)
        nll = sequence_nll(self._lm_hidden, self.model.lm_head, self._embed, [vis], pre, post,
                           [self._ids(continuation)], self.max_positions)
        return float(nll.sum())

    def null_tokens(self, batch: int) -> torch.Tensor:
        """Zeros of a page's shape; in crops mode zero rows read as padding (the prior alone)."""
        return torch.zeros(batch, self.n or 1, self.D, device=self._device, dtype=self.dtype)


def _load_processor(directory):
    """Tokenizer + the PIL image processor (no torchvision; the same pixels in every install)."""
    from transformers import AutoTokenizer, DeepseekOcr2Processor
    from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import (
        DeepseekOcr2ImageProcessorPil,
    )

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the directory named
        raise CheckpointError(
            f"deepseek-ocr2: cannot load the tokenizer in {directory}: {err}"
        ) from err
    if any((directory / name).is_file() for name in PROCESSOR_FILES):
        image_processor = DeepseekOcr2ImageProcessorPil.from_pretrained(
            directory, local_files_only=True
        )
    else:
        log.warning("deepseek-ocr2: %s has no processor config; using the defaults", directory)
        image_processor = DeepseekOcr2ImageProcessorPil()
    return DeepseekOcr2Processor(image_processor=image_processor, tokenizer=tokenizer)


def _load_model(directory, dtype: torch.dtype, device: torch.device):
    from transformers import DeepseekOcr2ForConditionalGeneration

    try:
        model = DeepseekOcr2ForConditionalGeneration.from_pretrained(
            directory, local_files_only=True, dtype=dtype
        )
    except Exception as err:  # noqa: BLE001 - re-raised with the directory named
        raise CheckpointError(
            f"deepseek-ocr2: cannot load the model in {directory}: {err}"
        ) from err
    model.to(device).eval()
    model.requires_grad_(False)  # frozen: gradients may reach the tokens, never a weight
    return model
