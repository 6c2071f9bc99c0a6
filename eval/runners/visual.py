"""Context as pages: render, cut to a visual-token budget, encode with the frozen codec.

Visual runners count their budget in visual tokens, so the middle cut happens on whole
pages: keep the first and last `budget // n // 2` pages (the LongBench rule, in pages
instead of tokens). Only the kept pages are rasterized and encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from eval.runners.common import middle_keep


class PageLike(Protocol):
    text: str
    start: int
    end: int


class Renderer(Protocol):
    """Lays text out in pages and draws one page: by default the codec's own paging
    (`Codec.paginate` / `Codec.rasterize`)."""

    def paginate(self, text: str) -> list[Any]: ...

    def rasterize(self, page: Any) -> Any: ...


@dataclass
class EncodedContext:
    """The kept pages of a context and their visual tokens [P, n, D] (P may be 0)."""

    pages: list[Any]
    tokens: Any  # torch.Tensor
    total_pages: int  # before the middle cut

    @property
    def dropped_pages(self) -> int:
        return self.total_pages - len(self.pages)

    @property
    def positions(self) -> int:
        return int(self.tokens.shape[0] * self.tokens.shape[1]) if len(self.pages) else 0


class PageEncoder:
    """Text -> pages -> (middle cut to a visual-token budget) -> codec tokens."""

    def __init__(self, codec: Any, renderer: Renderer | None = None, batch: int = 8) -> None:
        self.codec = codec
        self.renderer = renderer or codec
        self.batch = batch

    def pages(self, text: str) -> list[Any]:
        return self.renderer.paginate(text) if text else []

    def keep(self, pages: Sequence[Any], max_tokens: int | None) -> list[Any]:
        n = self.codec.n or 1  # variable-count codecs: budget in pages (documented)
        if max_tokens is None:
            return list(pages)
        head, tail = middle_keep(len(pages), max(0, max_tokens // n))
        return list(pages[:head]) + (list(pages[-tail:]) if tail else [])

    def encode_pages(self, pages: Sequence[Any]):
        import torch

        if not pages:
            return torch.zeros(0, self.codec.n or 1, self.codec.D)
        out = []
        for i in range(0, len(pages), self.batch):
            imgs = [self.renderer.rasterize(p) for p in pages[i : i + self.batch]]
            with torch.no_grad():
                out.append(self.codec.encode(imgs).detach().float().cpu())
        return torch.cat(out)

    def encode_text(self, text: str, max_tokens: int | None = None) -> EncodedContext:
        pages = self.pages(text)
        kept = self.keep(pages, max_tokens)
        return EncodedContext(kept, self.encode_pages(kept), len(pages))
