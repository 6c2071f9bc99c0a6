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

Order (``shuffle``), a fresh one each epoch from a generator seeded with (seed, epoch):

- ``"blocks"`` (``True``, the default): I/O-aware. Windows are grouped by the stored chunk
  that holds their first token; the chunks are visited in a random order, ``shuffle_buffer``
  chunks at a time, and the windows of those chunks are shuffled together. Each decoded chunk
  then serves all of its windows from the store's cache instead of being decoded again for
  nearly every window (a chunk holds ~8 MiB: hundreds of pages). The price: a batch mixes
  documents from ``shuffle_buffer`` chunks, not from the whole store.
- ``"full"``: one global permutation (every window anywhere); on a store larger than the
  chunk cache nearly every window decodes a chunk.
- ``"none"`` (``False``): store order.

Window number ``cursor`` is a pure function of (store, T, split, val_fraction, seed,
shuffle, shuffle_buffer, cursor), so a trainer resumes exactly by saving one integer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from data.store.reader import Store

SPLITS = ("train", "val", "all")
SHUFFLES = ("blocks", "full", "none")
DEFAULT_SHUFFLE_BUFFER = 8  # stored chunks (~8 MiB each) whose windows are shuffled together


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


def block_shuffle(blocks: np.ndarray, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(len(blocks))``: blocks (any integer labels) in a random order,
    taken ``buffer`` at a time; the items of each group of blocks shuffled together.

    Item i belongs to block ``blocks[i]``. The result is a function of (blocks, buffer, the
    generator's state) only.
    """
    if buffer < 1:
        raise ValueError(f"the shuffle buffer must hold at least one block, got {buffer}")
    labels, dense = np.unique(np.asarray(blocks, np.int64), return_inverse=True)
    rank = np.empty(len(labels), np.int64)
    rank[rng.permutation(len(labels))] = np.arange(len(labels))
    group = rank[dense] // buffer
    return np.lexsort((rng.random(len(dense)), group))


class WindowLoader:
    """Deterministic, resumable windows of T tokens over a store's documents."""

    def __init__(self, store: Store, T: int, *, split: str = "train", val_fraction: float = 0.05,
                 seed: int = 0, shuffle: bool | str = True,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                 docs: Sequence[str] | None = None) -> None:
        """docs: cut windows from these documents of the store (in store order) instead of
        from the split's, e.g. a band of the hash split that is neither trained on nor
        held out (the text frontier's selection documents)."""
        if T < 1:
            raise ValueError(f"T must be positive, got {T}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        mode = {True: "blocks", False: "none"}.get(shuffle, shuffle)  # type: ignore[call-overload]
        if mode not in SHUFFLES:
            raise ValueError(f"shuffle must be True, False or one of {SHUFFLES}, got {shuffle!r}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}")
        self.store = store
        self.T = T
        self.split = split
        self.seed = seed
        self.shuffle = mode
        self.shuffle_buffer = shuffle_buffer
        if docs is None:
            self.doc_ids = store.doc_ids_in_split(split, val_fraction)
        else:
            wanted = set(docs)
            missing = wanted - set(store.doc_ids)
            if missing:
                raise ValueError(f"{len(missing)} documents are not in the store, e.g. "
                                 f"{sorted(missing)[0]!r}")
            self.doc_ids = [d for d in store.doc_ids if d in wanted]
        self._plan_windows()
        self._epoch: tuple[int, int] | None = None
        self._order: np.ndarray | None = None
        if mode == "blocks":
            self._plan_blocks()

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

    def _plan_blocks(self) -> None:
        """The stored chunk of every window's first token, and cache room for a buffer."""
        docs = [self.doc_ids[d] for d in self._win_doc]
        where = self.store.locate_pages(docs, self._win_first)
        self._win_block = where["chunk"]
        if len(docs) == 0:
            return
        # What a group of `shuffle_buffer` chunks touches: the chunks themselves (a window
        # crossing a chunk's end reads the next one too, hence 2x) and their page texts.
        last = self._win_first + self._win_pages - 1
        last_groups = self.store.locate_pages(docs, last)["text_group"]
        pairs = np.unique(np.stack([np.concatenate([self._win_block, self._win_block]),
                                    np.concatenate([where["text_group"], last_groups])]), axis=1)
        per_block = np.bincount(np.unique(pairs[0], return_inverse=True)[1])
        buffer = min(self.shuffle_buffer, len(per_block))
        self.store.reserve_cache(
            chunk_bytes=(2 * buffer + 2) * self.store.max_chunk_bytes(),
            text_groups=2 * int(np.sort(per_block)[::-1][:buffer].sum()) + 2)

    def __len__(self) -> int:
        """Windows in one epoch."""
        return len(self._win_doc)

    def epoch_order(self, epoch: int, seed: int | None = None) -> np.ndarray:
        """Window numbers in the order epoch ``epoch`` visits them (a permutation)."""
        seed = self.seed if seed is None else seed
        if self.shuffle == "none":
            return np.arange(len(self))
        rng = np.random.default_rng([seed, epoch])
        if self.shuffle == "full":
            return rng.permutation(len(self))
        return block_shuffle(self._win_block, self.shuffle_buffer, rng)

    def _window_number(self, cursor: int) -> int:
        if len(self) == 0:
            raise IndexError(f"no windows in split {self.split!r}")
        if cursor < 0:
            raise IndexError(f"cursor must be >= 0, got {cursor}")
        epoch, position = divmod(cursor, len(self))
        if self.shuffle == "none":
            return position
        if self._epoch != (self.seed, epoch):
            self._order = self.epoch_order(epoch)
            self._epoch = (self.seed, epoch)
        return int(self._order[position])

    def window(self, cursor: int) -> Window:
        """The window at a position of the endless stream (epoch = cursor // len(self))."""
        return self.read_window(self._window_number(cursor), cursor)

    def read_window(self, number: int, cursor: int | None = None) -> Window:
        """Window ``number`` of the split in store order (0 <= number < len(self))."""
        if not 0 <= number < len(self):
            raise IndexError(f"window {number} out of range ({len(self)} windows)")
        cursor = number if cursor is None else cursor
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
