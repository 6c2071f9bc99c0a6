"""Pieces shared by the DeepSeek-OCR backends (v1 and v2).

Checkpoint-directory checks, a weights fingerprint for `Codec.version`, page-image
normalisation, ragged-token handling, teacher-forced scoring and a windowed
no-repeat-n-gram guard for greedy decoding. Nothing here imports transformers at module
level, so `import codec` stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from data.errors import BadCheckpoint, BadInput, MissingPath

# File names a Hugging Face checkpoint directory may hold.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


class CheckpointError(BadCheckpoint):
    """A checkpoint directory that cannot back a codec (missing, incomplete, wrong model)."""


DEFAULT_PROMPT = "<image>\nFree OCR."  # the plain-text OCR prompt of both DeepSeek-OCR models


@dataclass(frozen=True)
class ReadOptions:
    """How a DeepSeek-OCR backend prompts and decodes; each backend adds its modes."""

    render_preset: str | None = None  # page geometry (default: the mode's own)
    prompt: str = DEFAULT_PROMPT  # the OCR prompt around the image tokens
    max_new_tokens: int = 2048  # greedy decoding length cap
    no_repeat_ngram: int = 20  # block repeating n-grams of this size ...
    no_repeat_window: int = 90  # ... within this many recent tokens
    encode_batch_size: int = 16  # pages per encode call
    decode_batch_size: int = 16  # pages per decode call


def apply_read_options(codec, opts: ReadOptions) -> None:
    """Set a backend's prompt and decoding attributes from its options (both backends)."""
    codec.prompt = opts.prompt
    codec.prompt_prefix, codec.prompt_suffix = split_prompt(opts.prompt)
    codec.max_new_tokens = opts.max_new_tokens
    codec.no_repeat_ngram = opts.no_repeat_ngram
    codec.no_repeat_window = opts.no_repeat_window
    codec.encode_batch_size = opts.encode_batch_size
    codec.decode_batch_size = opts.decode_batch_size


def open_checkpoint(path: str | os.PathLike | None, codec_name: str, env_var: str,
                    check: Callable[[Path, dict], Any]) -> tuple[Path, dict, list[Path], Any]:
    """(directory, config.json, weight files, what `check(directory, config)` returns) of a
    local checkpoint whose tokenizer is present; clear errors for anything missing."""
    directory = resolve_checkpoint_dir(path, codec_name, env_var)
    config = read_checkpoint_config(directory, codec_name)
    checked = check(directory, config)
    weights = weight_files(directory, codec_name)
    require_tokenizer(directory, codec_name)
    return directory, config, weights, checked


def resolve_checkpoint_dir(path: str | os.PathLike | None, codec_name: str, env_var: str) -> Path:
    """The directory to load from: `path`, else `$env_var`; clear errors when neither works."""
    if path is None or str(path) == "":
        path = os.environ.get(env_var) or None
    if path is None:
        raise CheckpointError(
            f"{codec_name} loads its weights from a local checkpoint directory and never "
            f"downloads them: pass path=... (CLI: --codec-path DIR) or set ${env_var}."
        )
    directory = Path(path).expanduser()
    if not directory.exists():
        raise MissingPath(f"{codec_name}: checkpoint directory {directory} does not exist",
                          hint="check --codec-path")
    if not directory.is_dir():
        raise CheckpointError(f"{codec_name}: {directory} is a file; expected a checkpoint "
                              "directory")
    return directory


def read_checkpoint_config(directory: Path, codec_name: str) -> dict:
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{codec_name}: {directory} is incomplete: config.json is missing")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{codec_name}: cannot read {config_file}: {err}") from err


def weight_files(directory: Path, codec_name: str) -> list[Path]:
    """The weight files of a checkpoint; errors when none are there or a shard is missing."""
    for index_name in WEIGHT_INDEXES:
        index = directory / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, json.JSONDecodeError, KeyError) as err:
                raise CheckpointError(f"{codec_name}: cannot read {index}: {err}") from err
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing:
                raise CheckpointError(
                    f"{codec_name}: {directory} is incomplete: {index_name} lists "
                    f"{len(missing)} missing shard(s), e.g. {missing[0]}"
                )
            return [directory / s for s in shards]
    found = [directory / name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not found:
        found = sorted(directory.glob("*.safetensors"))
    if not found:
        raise CheckpointError(
            f"{codec_name}: {directory} is incomplete: no weights "
            "(expected model.safetensors, a sharded *.safetensors set with its index, "
            "or pytorch_model.bin)"
        )
    return found


def require_tokenizer(directory: Path, codec_name: str) -> None:
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"{codec_name}: {directory} is incomplete: no tokenizer "
            f"(expected one of {', '.join(TOKENIZER_FILES)})"
        )


def fingerprint(directory: Path, files: Sequence[Path], extra: str = "") -> str:
    """A short, cheap identity of the weights: config text + every weight file's name, size,
    first and last MiB (hashing many GB of weights on every load would be too slow)."""
    digest = hashlib.sha256((directory / "config.json").read_bytes())
    for file in sorted(files):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(size - (1 << 20))
                digest.update(handle.read(1 << 20))
    digest.update(extra.encode())
    return digest.hexdigest()[:12]


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on a GPU (what the model was trained in), fp32 on a CPU (slow bf16 matmuls there)."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if dtype not in names:
        raise BadInput(f"unknown dtype {dtype!r}; use one of {', '.join(names)}")
    return names[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def as_page_list(pages) -> list[np.ndarray]:
    """uint8 [B, H, W, 3] (tensor or array) or a list of [H, W, 3] -> list of HWC uint8 arrays."""
    if isinstance(pages, torch.Tensor):
        pages = pages.detach().cpu().numpy()
    if isinstance(pages, np.ndarray):
        if pages.ndim == 3:
            raise ValueError("encode takes a batch of pages [B, H, W, 3]; got one page [H, W, 3]")
        pages = list(pages)
    out = []
    for i, page in enumerate(pages):
        page = np.asarray(page)
        if page.ndim != 3 or page.shape[-1] != 3:
            raise ValueError(f"page {i}: expected an RGB image [H, W, 3], got shape {page.shape}")
        if page.dtype != np.uint8:
            raise ValueError(f"page {i}: expected uint8 pixels, got {page.dtype}")
        out.append(np.ascontiguousarray(page))
    return out


def pad_rows(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ragged [n_i, D] rows with zeros -> (tokens [B, n_max, D], mask [B, n_max])."""
    n_max = max(r.shape[0] for r in rows)
    first = rows[0]
    tokens = first.new_zeros(len(rows), n_max, first.shape[-1])
    mask = torch.zeros(len(rows), n_max, dtype=torch.bool, device=first.device)
    for i, row in enumerate(rows):
        tokens[i, : row.shape[0]] = row
        mask[i, : row.shape[0]] = True
    return tokens, mask


def split_rows(
    tokens: torch.Tensor, mask: torch.Tensor | None, infer_padding: bool
) -> list[torch.Tensor]:
    """[B, n, D] (+ mask) -> the valid [n_i, D] of each row, in order.

    Without a mask and with `infer_padding`, trailing all-zero rows count as padding: a
    real or predicted token is never exactly zero, and `encode` pads with exact zeros.
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [B, n, D]; got shape {tuple(tokens.shape)}")
    if mask is not None:
        if mask.shape != tokens.shape[:2]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match tokens {tuple(tokens.shape[:2])}"
            )
        return [tokens[i][mask[i].to(tokens.device)] for i in range(tokens.shape[0])]
    if not infer_padding:
        return list(tokens.unbind(0))
    nonzero = tokens.detach().ne(0).any(-1)  # [B, n]
    rows = []
    for i in range(tokens.shape[0]):
        idx = nonzero[i].nonzero()
        length = int(idx[-1]) + 1 if len(idx) else 0
        rows.append(tokens[i, :length])
    return rows


def split_prompt(prompt: str, image_token: str = "<image>") -> tuple[str, str]:
    if prompt.count(image_token) != 1:
        raise ValueError(f"the decode prompt must contain {image_token!r} exactly once: {prompt!r}")
    before, after = prompt.split(image_token)
    return before, after


def decoder_text_nll(codec, tokens: torch.Tensor, texts: Sequence[str],
                     mask: torch.Tensor | None = None):
    """`Codec.text_nll` for both DeepSeek backends: the NLL of each page's text after its
    visual tokens under the frozen language decoder (see `sequence_nll`)."""
    from codec.base import TextNLL

    if len(texts) != tokens.shape[0]:
        raise ValueError(f"{codec.name}: {tokens.shape[0]} pages of tokens but {len(texts)} texts")
    rows = codec._visual_rows(tokens, mask)
    if not rows:
        zeros = torch.zeros(0, device=codec._device)
        return TextNLL(nll=zeros + 0.0 * tokens.sum(), n_bytes=zeros.long())
    nll = sequence_nll(
        codec._lm_hidden, codec.model.lm_head, codec._embed, rows, codec.prefix_ids,
        codec.suffix_ids, [codec._ids(t) for t in texts], codec.max_positions,
    )
    n_bytes = torch.tensor([len(t.encode("utf-8")) for t in texts], device=nll.device)
    return TextNLL(nll=nll, n_bytes=n_bytes)


def sequence_nll(
    lm_hidden: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lm_head: torch.nn.Module,
    embed: Callable[[torch.Tensor], torch.Tensor],
    visual_rows: Sequence[torch.Tensor],
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    text_ids: Sequence[Sequence[int]],
    max_positions: int | None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Teacher-forced NLL (nats, [B]) of each text after [prefix, visual row, suffix].

    Rows are right-padded and attention-masked, so every row keeps positions 0..L_i-1 as
    in generation. Only the text positions are projected to the vocabulary, in chunks
    with activation checkpointing, so memory stays bounded for long pages.
    """
    device = visual_rows[0].device
    dtype = visual_rows[0].dtype
    prefix = embed(torch.tensor(list(prefix_ids), dtype=torch.long, device=device)).to(dtype)
    suffix = embed(torch.tensor(list(suffix_ids), dtype=torch.long, device=device)).to(dtype)
    seqs, targets, positions = [], [], []
    for i, (vis, ids) in enumerate(zip(visual_rows, text_ids)):
        ids_t = torch.tensor(list(ids), dtype=torch.long, device=device)
        seq = torch.cat([prefix, vis, suffix, embed(ids_t).to(dtype)], dim=0)
        if max_positions is not None and seq.shape[0] > max_positions:
            raise ValueError(
                f"page {i}: {seq.shape[0]} positions (visual + prompt + {len(ids)} text tokens) "
                f"exceed the decoder's {max_positions}; split the text or shorten the page"
            )
        start = prefix.shape[0] + vis.shape[0] + suffix.shape[0]
        # position p predicts token p + 1: text token k is predicted from position start + k - 1
        positions.append(torch.arange(start - 1, start - 1 + len(ids), device=device))
        targets.append(ids_t)
        seqs.append(seq)
    batch = len(seqs)
    length = max(s.shape[0] for s in seqs)
    width = seqs[0].shape[-1]
    inputs = seqs[0].new_zeros(batch, length, width)
    attention = torch.zeros(batch, length, dtype=torch.long, device=device)
    for i, seq in enumerate(seqs):
        inputs[i, : seq.shape[0]] = seq
        attention[i, : seq.shape[0]] = 1
    hidden = lm_hidden(inputs, attention)  # [B, L, H]
    row_of = torch.cat([torch.full_like(p, i) for i, p in enumerate(positions)])
    flat_pos = torch.cat(positions)
    flat_tgt = torch.cat(targets)
    nll = torch.zeros(batch, dtype=torch.float32, device=device)
    if flat_tgt.numel() == 0:
        return nll + 0.0 * hidden.sum()  # keeps the graph connected for empty texts
    picked = hidden[row_of, flat_pos]  # [T, H]

    def chunk_nll(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = lm_head(h).float()
        return torch.nn.functional.cross_entropy(logits, t, reduction="none")

    pieces = []
    for s in range(0, picked.shape[0], chunk):
        h, t = picked[s : s + chunk], flat_tgt[s : s + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            from torch.utils.checkpoint import checkpoint

            pieces.append(checkpoint(chunk_nll, h, t, use_reentrant=False))
        else:
            pieces.append(chunk_nll(h, t))
    return nll.index_add(0, row_of, torch.cat(pieces))


def windowed_no_repeat_processor(ngram: int, window: int):
    """A LogitsProcessor that bans any token which would repeat an n-gram seen in the last
    `window` generated tokens: the guard DeepSeek-OCR uses against greedy loops, limited to
    a window so that legitimately repeated lines far apart stay possible."""
    from transformers import LogitsProcessor

    class WindowedNoRepeatNGram(LogitsProcessor):
        def __init__(self, start: int):
            self.start = start  # prompt length in input_ids (0 when prompting with embeddings)

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if ngram <= 0:
                return scores
            generated = input_ids[:, self.start :].tolist()
            for row, ids in enumerate(generated):
                recent = ids[-window:]
                if len(recent) < ngram:
                    continue
                key = tuple(recent[-(ngram - 1) :]) if ngram > 1 else ()
                banned = {
                    recent[j + ngram - 1]
                    for j in range(len(recent) - ngram + 1)
                    if tuple(recent[j : j + ngram - 1]) == key
                }
                if banned:
                    scores[row, list(banned)] = float("-inf")
            return scores

    return WindowedNoRepeatNGram


def greedy_generate(
    step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, object], tuple[torch.Tensor, object]],
    embed: Callable[[torch.Tensor], torch.Tensor],
    prompt_embeds: torch.Tensor,
    eos_id: int,
    max_new_tokens: int,
    guard=None,
) -> list[list[int]]:
    """Greedy decoding with a KV cache, for decoders that `generate` cannot drive (v1 remote
    code). `prompt_embeds` [B, L, H] hold equal-length, unpadded rows.

    `step(inputs_embeds, attention_mask, position_ids, past)` returns the last position's
    logits [B, V] and the new cache. Returns the ids generated per row, EOS excluded.
    """
    batch, length = prompt_embeds.shape[:2]
    device = prompt_embeds.device
    attention = torch.ones(batch, length, dtype=torch.long, device=device)
    positions = torch.arange(length, device=device).unsqueeze(0).expand(batch, -1)
    generated = torch.zeros(batch, 0, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    inputs, past = prompt_embeds, None
    for _ in range(max_new_tokens):
        logits, past = step(inputs, attention, positions, past)
        if guard is not None:
            logits = guard(generated, logits)
        next_ids = logits.argmax(-1).masked_fill(done, eos_id)
        generated = torch.cat([generated, next_ids[:, None]], dim=1)
        done |= next_ids.eq(eos_id)
        if bool(done.all()):
            break
        inputs = embed(next_ids[:, None]).to(prompt_embeds.dtype)
        attention = torch.cat([attention, attention.new_ones(batch, 1)], dim=1)
        positions = positions[:, -1:] + 1
    out = []
    for ids in generated.tolist():
        out.append(ids[: ids.index(eos_id)] if eos_id in ids else ids)
    return out
