"""Synthetic documents and windows over them, for tests, CI and benchmarks.

The documents are a fixed bigram walk over a small vocabulary, so the next page is
predictable; `SyntheticSource` pages them with the toy codec (`codec.toy`) and serves
training windows without a token store.
"""

from __future__ import annotations

import random

import numpy as np

from codec.toy import ToyCodec


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
        self.codec, self.grid, self.D = codec, codec.grid, codec.D
        docs = [
            d
            for i, d in enumerate(synthetic_documents(n_docs, seed))
            if (i % 10 == 0) == (split == "val")
        ]
        texts, doc_start, page_idx, doc_of = [], [], [], []
        for k, d in enumerate(docs):
            pages = [p.text for p in codec.paginate(d)]
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
