"""A toy optical codec and synthetic documents, for tests, CI and benchmarks.

`ToyCodec` meets the frozen codec contract without any images of substance: a page is
`chars_per_slot * n` characters, and token j binds the characters of its own block
(a region-aligned code: sum over chars of pos_key * char_key). Its decoder reads a byte
by correlating the token of its block with every candidate byte's key, plus a small
frozen GRU prior over previous bytes; so the true tokens give a much lower NLL than
null tokens, `text_nll` is differentiable in the tokens, and no weight ever trains.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
import torch
from torch import nn

from codec.base import Codec, TextNLL


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


WORDS = (
    "the a page token model reads writes long short text vector codec frozen "
    "document visual symbol learns predicts next line grid row column"
).split()


def synthetic_documents(
    n_docs: int, seed: int = 0, min_words: int = 12, max_words: int = 60
) -> list[str]:
    """Deterministic toy English: a fixed bigram walk, so the next page is predictable."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        w = rng.choice(WORDS)
        words = []
        for _ in range(rng.randint(min_words, max_words)):
            words.append(w)
            i = WORDS.index(w)
            w = WORDS[(i * 7 + 3) % len(WORDS)] if rng.random() < 0.8 else rng.choice(WORDS)
        docs.append(" ".join(words) + ".")
    return docs


def paginate(text: str, page_chars: int) -> list[str]:
    return [text[i : i + page_chars] for i in range(0, len(text), page_chars)] or [""]


class SyntheticSource:
    """Windows of `pages_per_window` whole pages over synthetic documents, encoded by a codec.

    Documents are laid end to end (boundaries marked); the split holds out every tenth
    document for validation, so val windows come from documents never trained on.
    """

    def __init__(
        self,
        codec: ToyCodec,
        n_docs: int = 64,
        pages_per_window: int = 4,
        split: str = "train",
        seed: int = 0,
    ) -> None:
        from vst.data import Window  # noqa: F401  (keeps this module importable alone)

        self.codec, self.grid, self.D = codec, codec.grid, codec.D
        docs = [
            d
            for i, d in enumerate(synthetic_documents(n_docs, seed))
            if (i % 10 == 0) == (split == "val")
        ]
        texts, doc_start, page_idx, doc_of = [], [], [], []
        for k, d in enumerate(docs):
            pages = paginate(d, codec.page_chars)
            texts += pages
            doc_start += [True] + [False] * (len(pages) - 1)
            page_idx += list(range(len(pages)))
            doc_of += [f"{split}-{k}"] * len(pages)
        self.texts, self.doc_start, self.page_idx, self.doc_of = texts, doc_start, page_idx, doc_of
        self.tokens = codec.encode_texts(texts).numpy()  # [pages, n, D]
        self.P = pages_per_window

    def __len__(self) -> int:
        return len(self.texts) // self.P

    def window(self, index: int):
        from vst.data import Window

        n, p0 = self.codec.n, index * self.P
        sl = slice(p0, p0 + self.P)
        start = np.zeros((self.P, n), dtype=bool)
        start[:, 0] = self.doc_start[sl]
        return Window(
            tokens=self.tokens[sl].reshape(self.P * n, -1),
            doc_start=start.reshape(-1),
            page=np.repeat(np.asarray(self.page_idx[sl]), n),
            slot=np.tile(np.arange(n), self.P),
            pages=[(i * n, n, self.texts[p0 + i]) for i in range(self.P)],
            doc_ids=sorted(set(self.doc_of[sl])),
        )

    def documents(self) -> list[str]:
        return sorted(set(self.doc_of), key=lambda d: self.doc_of.index(d))

    def document(self, doc: int | str) -> tuple[np.ndarray, list[str]]:
        """All pages of one document: tokens [pages, n, D] and their texts."""
        name = doc if isinstance(doc, str) else self.documents()[doc]
        idx = [i for i, d in enumerate(self.doc_of) if d == name]
        return self.tokens[idx], [self.texts[i] for i in idx]
