"""The toy codec: the frozen codec contract without images of substance, for tests and CI.

A page is `chars_per_slot * n` characters, and token j binds the characters of its own
block (a region-aligned code: sum over chars of pos_key * char_key). Its decoder reads a
byte by correlating the token of its block with every candidate byte's key, plus a small
frozen GRU prior over previous bytes; so the true tokens give a much lower NLL than null
tokens, `text_nll` is differentiable in the tokens, and no weight ever trains.

    from codec import load_codec
    codec = load_codec("toy")            # or load_codec("toy", options=["D=32"])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from codec.base import Codec, TextNLL
from codec.registry import register_codec
from data.errors import BadInput


@dataclass
class CharPage:
    """A page of a fixed number of characters: text[start:end]."""

    text: str
    start: int
    end: int
    index: int = 0


def char_pages(text: str, page_chars: int) -> list[CharPage]:
    """Consecutive pages of `page_chars` characters (one empty page for an empty text)."""
    if not text:
        return [CharPage("", 0, 0, 0)]
    return [CharPage(text[i : i + page_chars], i, min(i + page_chars, len(text)), k)
            for k, i in enumerate(range(0, len(text), page_chars))]


class _ToyDecoder(nn.Module):
    def __init__(self, D: int, chars: int, hidden: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.char_key = nn.Parameter(torch.randn(256, D, generator=g))
        self.pos_key = nn.Parameter(torch.randn(chars, D, generator=g).sign())
        self.emb = nn.Embedding(257, hidden)  # 256 = start of page
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.prior = nn.Linear(hidden, 256)
        for m in (self.emb, self.gru, self.prior):
            for p in m.parameters():
                nn.init.normal_(p, std=0.1, generator=g)
        self.scale = 6.0 / math.sqrt(D)


class ToyCodec(Codec):
    name, mode, version = "toy", "toy", "toy-0"
    render_config = None

    def __init__(
        self, D: int = 64, grid: tuple[int, int] = (2, 4), chars_per_slot: int = 4, seed: int = 0
    ) -> None:
        self.D, self.grid, self.c = D, grid, chars_per_slot
        self.n = grid[0] * grid[1]
        self.page_chars = self.n * chars_per_slot
        self.dec = _ToyDecoder(D, chars_per_slot, 32, seed).requires_grad_(False).eval()

    def parameters(self):
        return self.dec.parameters()

    # -- "rendering": a page image that simply carries the page's bytes --------------------
    def render(self, text: str) -> np.ndarray:
        b = np.zeros((1, self.page_chars, 3), dtype=np.uint8)
        raw = text.encode()[: self.page_chars]
        b[0, : len(raw), 0] = np.frombuffer(raw, dtype=np.uint8)
        b[0, : len(raw), 1] = 1  # occupancy
        return b

    def encode(self, pages) -> torch.Tensor:
        imgs = torch.as_tensor(np.stack([np.asarray(p) for p in pages]))
        codes, used = imgs[:, 0, :, 0].long(), imgs[:, 0, :, 1].float()  # [B, chars]
        keys = self.dec.char_key[codes] * self.dec.pos_key.repeat(self.n, 1)[None] * used[..., None]
        return keys.view(len(imgs), self.n, self.c, self.D).sum(2).detach()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode([self.render(t) for t in texts])

    # -- the contract's paging: fixed-size character blocks ---------------------------------
    def paginate(self, text: str) -> list[CharPage]:
        return char_pages(text, self.page_chars)

    def rasterize(self, page: CharPage) -> np.ndarray:
        return self.render(page.text)

    def used_tokens(self, page: CharPage) -> int:
        return min(self.n, max(1, math.ceil(len(page.text) / self.c)))

    def text_nll(self, tokens: torch.Tensor, texts: Sequence[str]) -> TextNLL:
        B = len(texts)
        L = self.page_chars
        ids = torch.zeros(B, L, dtype=torch.long)
        mask = torch.zeros(B, L)
        for i, t in enumerate(texts):
            raw = list(t.encode()[:L])
            ids[i, : len(raw)] = torch.tensor(raw, dtype=torch.long)
            mask[i, : len(raw)] = 1
        logits = self._logits(tokens, ids)
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
        n_bytes = torch.tensor([len(t.encode()) for t in texts], dtype=torch.float32)
        return TextNLL(nll=(nll * mask.to(nll)).sum(1), n_bytes=n_bytes)

    def _logits(self, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        d = self.dec
        B, L = ids.shape
        slot_tok = tokens.float().repeat_interleave(self.c, dim=1)[:, :L]  # [B, L, D]
        keys = d.pos_key.repeat(self.n, 1)[:L]  # [L, D]
        read = torch.einsum("bld,vd,ld->blv", slot_tok, d.char_key, keys) * d.scale
        prev = torch.cat([torch.full((B, 1), 256, dtype=torch.long), ids[:, :-1]], dim=1)
        h, _ = d.gru(d.emb(prev))
        return read + d.prior(h)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, max_new_tokens: int | None = None) -> list[str]:
        B = tokens.size(0)
        L = min(self.page_chars, max_new_tokens or self.page_chars)
        ids = torch.zeros(B, L, dtype=torch.long)
        for k in range(L):  # greedy, one byte at a time (the GRU prior sees the prefix)
            ids[:, k] = self._logits(tokens, ids)[:, k].argmax(-1)
        return [bytes(row.tolist()).split(b"\0")[0].decode("utf-8", "replace") for row in ids]


@register_codec("toy")
def _factory(mode: str = "toy", device: str = "cpu", **kw) -> ToyCodec:
    if mode != "toy" or device != "cpu":
        raise BadInput("the toy codec has one mode ('toy') and runs on CPU")
    return ToyCodec(**kw)
