"""Training windows cut from each document's unified reading path V_full = [V_1 ... V_M].

Policy: **one document per window**. A window starts at a page start and holds as many whole
consecutive pages of that one document as fit in T tokens; the rest is padding
(``valid == False``). Every page lands in exactly one window per epoch. A single page with
more than T tokens gets a window of its own, cut to T tokens (``truncated=True``). With a
fixed-n codec, choose T as a multiple of n so that windows are full except at a document's end.

``doc_start[0]`` is True when the window starts at the document's first page (positions
before it are not in the document, so the model has no earlier context); it is False
everywhere else. ``page_index`` is the page's position inside its document and
``token_in_page`` the token's position inside its page (both -1 on padding); with the
store's grid (rows, cols), ``page_row_col`` turns them into (page, row, col) positions.

Order: the windows of the chosen split, in store order, permuted per epoch by a generator
seeded with (seed, epoch). Window number ``cursor`` is a pure function of (store, T, split,
seed, cursor), so a trainer resumes exactly by saving one integer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from data.store import Store

SPLITS = ("train", "val", "all")


def split_of(doc_id: str, val_fraction: float = 0.05) -> str:
    """"val" for a stable ``val_fraction`` of documents (by a hash of the id), else "train"."""
    digest = hashlib.sha256(doc_id.encode("utf-8", "surrogatepass")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


@dataclass
class Window:
    tokens: np.ndarray         # [T, D] float32, zeros on padding
    valid: np.ndarray          # [T] bool
    doc_start: np.ndarray      # [T] bool
    page_index: np.ndarray     # [T] int32, -1 on padding
    token_in_page: np.ndarray  # [T] int32, -1 on padding
    doc_id: str
    first_page: int
    page_texts: list[str]      # texts of the window's pages, in order
    page_spans: list[tuple[int, int]]  # their character spans in the document
    truncated: bool
    cursor: int


def page_row_col(page_index: np.ndarray, token_in_page: np.ndarray,
                 grid: tuple[int, int] | None) -> np.ndarray:
    """(page, row, col) of each position, ``[..., 3]``; without a grid row = 0, col = token."""
    if grid is None:
        row, col = np.zeros_like(token_in_page), token_in_page
    else:
        row, col = np.divmod(token_in_page, grid[1])
        row = np.where(token_in_page < 0, -1, row)
        col = np.where(token_in_page < 0, -1, col)
    return np.stack([page_index, row, col], axis=-1)


def plan_windows(token_counts: Sequence[int], T: int) -> list[tuple[int, int]]:
    """(first page, page count) of a document's windows: greedy runs of whole pages within T
    tokens; a page longer than T alone (it will be cut)."""
    windows, page = [], 0
    while page < len(token_counts):
        used, end = 0, page
        while end < len(token_counts) and used + token_counts[end] <= T:
            used += token_counts[end]
            end += 1
        end = max(end, page + 1)
        windows.append((page, end - page))
        page = end
    return windows


class WindowLoader:
    """Deterministic, resumable windows of T tokens over a store's documents."""

    def __init__(self, store: Store, T: int, *, split: str = "train", val_fraction: float = 0.05,
                 seed: int = 0, shuffle: bool = True) -> None:
        if T < 1:
            raise ValueError(f"T must be positive, got {T}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.store = store
        self.T = T
        self.split = split
        self.seed = seed
        self.shuffle = shuffle
        self.doc_ids = store.doc_ids_in_split(split, val_fraction)
        self._plan_windows()
        self._epoch: int | None = None
        self._order: np.ndarray | None = None

    def _plan_windows(self) -> None:
        """(document, first page, page count) of every window, greedily packing whole pages."""
        docs, firsts, counts = [], [], []
        for doc_number, doc_id in enumerate(self.doc_ids):
            for first, count in plan_windows(self.store.page_token_counts(doc_id).tolist(), self.T):
                docs.append(doc_number)
                firsts.append(first)
                counts.append(count)
        self._win_doc = np.asarray(docs, np.int64)
        self._win_first = np.asarray(firsts, np.int64)
        self._win_pages = np.asarray(counts, np.int64)

    def __len__(self) -> int:
        """Windows in one epoch."""
        return len(self._win_doc)

    def _window_number(self, cursor: int) -> int:
        if len(self) == 0:
            raise IndexError(f"no windows in split {self.split!r}")
        if cursor < 0:
            raise IndexError(f"cursor must be >= 0, got {cursor}")
        epoch, position = divmod(cursor, len(self))
        if not self.shuffle:
            return position
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self))
            self._epoch = epoch
        return int(self._order[position])

    def window(self, cursor: int) -> Window:
        """The window at a position of the endless stream (epoch = cursor // len(self))."""
        number = self._window_number(cursor)
        doc_id = self.doc_ids[self._win_doc[number]]
        first, num_pages = int(self._win_first[number]), int(self._win_pages[number])
        records = self.store.page_records(doc_id, first, num_pages)
        tokens = self.store.read_pages(doc_id, first, num_pages)
        truncated = len(tokens) > self.T
        tokens = tokens[: self.T]
        used = len(tokens)

        T, D = self.T, self.store.meta.D
        out_tokens = np.zeros((T, D), np.float32)
        out_tokens[:used] = tokens
        valid = np.zeros(T, bool)
        valid[:used] = True
        page_index = np.full(T, -1, np.int32)
        token_in_page = np.full(T, -1, np.int32)
        position = 0
        for record in records:
            take = min(record.token_count, used - position)
            page_index[position:position + take] = record.page
            token_in_page[position:position + take] = np.arange(take)
            position += take
        doc_start = np.zeros(T, bool)
        doc_start[0] = first == 0
        return Window(out_tokens, valid, doc_start, page_index, token_in_page, doc_id, first,
                      [r.text for r in records], [(r.char_start, r.char_end) for r in records],
                      truncated, cursor)

    def iterate(self, start: int = 0, stop: int | None = None) -> Iterator[Window]:
        """Windows ``start, start+1, ...`` (endless, crossing epochs, unless ``stop`` is given)."""
        cursor = start
        while stop is None or cursor < stop:
            yield self.window(cursor)
            cursor += 1

    def __iter__(self) -> Iterator[Window]:
        """One epoch from the start."""
        return self.iterate(0, len(self))

    def batches(self, batch_size: int, start: int = 0,
                stop: int | None = None) -> Iterator[dict]:
        """Stacked windows; each batch's ``next_cursor`` is what to save to resume after it."""
        cursor = start
        while stop is None or cursor < stop:
            size = batch_size if stop is None else min(batch_size, stop - cursor)
            windows = [self.window(c) for c in range(cursor, cursor + size)]
            cursor += size
            yield {
                "tokens": np.stack([w.tokens for w in windows]),
                "valid": np.stack([w.valid for w in windows]),
                "doc_start": np.stack([w.doc_start for w in windows]),
                "page_index": np.stack([w.page_index for w in windows]),
                "token_in_page": np.stack([w.token_in_page for w in windows]),
                "doc_ids": [w.doc_id for w in windows],
                "first_pages": [w.first_page for w in windows],
                "page_texts": [w.page_texts for w in windows],
                "next_cursor": cursor,
            }
