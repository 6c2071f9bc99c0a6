"""Windows from the visual-token store (`data.store`: `Store` + `WindowLoader`) as VST windows.

The store's reader cuts one document per window, whole pages, padded at the document's
end; its split holds out documents by a hash of their id. `window(index)` is window `index`
in store order; `epoch_order(seed, epoch)` is the reader's I/O-aware shuffle (chunks of the
store in a random order, a few at a time, windows shuffled among them: see
`data.store.windows`), which `vst.data.Loader` follows. The DDP split is the Loader's, and the
data position stays one integer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.errors import BadInput, BadStore
from vst.data import Window


class StoreSource:
    def __init__(
        self,
        root: str | Path,
        T: int,
        split: str = "train",
        val_fraction: float = 0.05,
        shuffle: str = "blocks",
        shuffle_buffer: int | None = None,
        docs: list[str] | None = None,  # these documents instead of the split's
    ) -> None:
        from data.store import DEFAULT_SHUFFLE_BUFFER, Store, WindowLoader

        self.store = Store(root)
        meta = self.store.meta
        self.D, self.n = meta.D, meta.n
        # without a grid, tokens sit on one row (row 0, column = token in page)
        self.grid = tuple(meta.grid) if meta.grid is not None else (1, T)
        self.T = T
        self.loader = WindowLoader(
            self.store,
            T,
            split=split,
            val_fraction=val_fraction,
            shuffle=shuffle,
            shuffle_buffer=shuffle_buffer or DEFAULT_SHUFFLE_BUFFER,
            docs=docs,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """Window indices in the order epoch `epoch` visits them (see data.store.windows)."""
        return self.loader.epoch_order(epoch, seed)

    def window(self, index: int) -> Window:
        w = self.loader.read_window(index)
        pages, t0 = [], 0
        for i, text in enumerate(w.page_texts):
            length = int((w.page_index == w.first_page + i).sum())
            full = not (w.truncated and i == len(w.page_texts) - 1)
            if full:  # a page cut short by T is context, never a scored page
                pages.append((t0, length, text))
            t0 += length
        return Window(
            tokens=w.tokens,
            doc_start=w.doc_start,
            page=np.maximum(w.page_index, 0),
            slot=np.maximum(w.token_in_page, 0),
            pages=pages,
            doc_ids=[w.doc_id],
            valid=w.valid,
        )

    def documents(self) -> list[str]:
        return list(self.loader.doc_ids)

    def document(self, doc: int | str) -> tuple[np.ndarray, list[str]]:
        """All pages of one document: tokens [pages, n, D] (fixed n) and their texts."""
        doc_id = doc if isinstance(doc, str) else self.documents()[doc]
        stored = self.store.get_document(doc_id)
        if self.n is None:
            raise BadStore("generation needs a store of a fixed-n codec")
        return stored.tokens.reshape(-1, self.n, self.D), [p.text for p in stored.pages]


def store_sources(
    root: str | Path, T: int, val_fraction: float = 0.05
) -> tuple[StoreSource, StoreSource]:
    train, val = (
        StoreSource(root, T, "train", val_fraction),
        StoreSource(root, T, "val", val_fraction),
    )
    for name, src in (("train", train), ("val", val)):
        if len(src) == 0:
            raise BadInput(f"the {name} split of {root} has no windows",
                           hint="adjust --val-fraction, or convert a larger corpus")
    return train, val


def window_tokens(root: str | Path, pages_per_window: int) -> int:
    """T for a store: whole pages of a fixed-n codec, else a rough page budget."""
    from data.store import read_store_meta

    meta = read_store_meta(root)
    return pages_per_window * (meta.n or 256)
