"""Reading a consolidated token store: ``Store`` (documents, pages, tokens, texts) over its
parts, with a bounded cache of decoded token chunks.

    vst store info ROOT                     # metadata and totals
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq

from data.corpus.splits import split_of
from data.store.format import (INDEX_FILE, MANIFEST_FILE, PARTS_DIR, PageRecord, StoreCorruptError,
                               StoreMeta, StoreOpenError, part_name, read_store_meta)
from data.store.parts import read_part_info, verify_part, verify_store
from data.store.token_arrays import open_array, storage_dtype, to_float32

# Decoded token chunks a reader keeps (all parts together); a window loader raises it to what
# its shuffle buffer needs (see data.store.windows).
DEFAULT_CACHE_BYTES = 256 << 20
# Columns every reader loads at open; page texts are read per part only when needed.
SMALL_COLUMNS = ["doc_id", "page", "char_start", "char_end", "token_offset", "token_count"]


@dataclass
class StoredDocument:
    doc_id: str
    tokens: np.ndarray  # [total tokens, D] float32, pages concatenated in order
    pages: list[PageRecord]

    @property
    def page_offsets(self) -> np.ndarray:
        """Start of each page inside ``tokens`` (and the end as the last entry)."""
        return np.concatenate([[0], np.cumsum([p.token_count for p in self.pages])])


class _ChunkCache:
    """Decoded token chunks of a store's parts, least recently used out, bounded in bytes.

    zarr pays ~2 ms of async machinery per read whatever its size, and an 8 MiB chunk takes
    ~10 ms to decompress: windows of nearby pages must cost a slice, not a read. A lock keeps
    it consistent when a loader thread and the main thread read the same store.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int], load: Any) -> np.ndarray:
        with self._lock:
            rows = self._items.get(key)
            if rows is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return rows
        rows = load()  # decode outside the lock
        with self._lock:
            self.misses += 1
            if key not in self._items:
                self._items[key] = rows
                self.bytes += rows.nbytes
            self._items.move_to_end(key)
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.nbytes
        return rows

    def __len__(self) -> int:
        return len(self._items)


class _Part:
    """One part opened for reading: the small index columns eagerly, the rest lazily."""

    def __init__(self, root: Path, name: str, meta: StoreMeta, index: int = 0,
                 cache: _ChunkCache | None = None, chunk_rows: int | None = None) -> None:
        self.name = name
        self.index = index
        self.directory = root / PARTS_DIR / name
        self.meta = meta
        index_file = pq.ParquetFile(self.directory / INDEX_FILE)
        table = index_file.read(columns=SMALL_COLUMNS)
        sizes = [index_file.metadata.row_group(i).num_rows
                 for i in range(index_file.metadata.num_row_groups)]
        self.row_group_starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.columns = {key: table[key].to_numpy() for key in SMALL_COLUMNS if key != "doc_id"}
        self.doc_ids: list[str] = table["doc_id"].to_pylist()
        self._tokens: Any = None
        self._cache = cache if cache is not None else _ChunkCache(DEFAULT_CACHE_BYTES)
        self._chunk_rows = chunk_rows  # rows a stored chunk (from the part's record)

    @property
    def tokens(self) -> Any:
        if self._tokens is None:
            self._tokens = open_array(self.directory, self.meta.layout)
        return self._tokens

    @property
    def chunk_rows(self) -> int:
        """Rows of a stored chunk: the zarr chunk, or the checksum chunk of a .npy file."""
        if self._chunk_rows is None:
            if self.meta.layout == "zarr":
                self._chunk_rows = int(self.tokens.chunks[0])
            else:
                self._chunk_rows = int(read_part_info(self.directory.parent.parent, self.name)
                                       ["token_array"]["chunk_rows"])
        return self._chunk_rows

    @property
    def row_bytes(self) -> int:
        row = (self.meta.n or 1) * self.meta.D
        return row * storage_dtype(self.meta.dtype).itemsize

    def read_texts(self, row_group: int) -> list[str]:
        with pq.ParquetFile(self.directory / INDEX_FILE) as index_file:
            return index_file.read_row_group(row_group, columns=["text"])["text"].to_pylist()

    def token_rows(self, first_page: int, num_pages: int) -> tuple[int, int]:
        """Rows ``start, stop`` of the token array that hold these consecutive pages."""
        if self.meta.fixed_n:
            return first_page, first_page + num_pages
        offsets, counts = self.columns["token_offset"], self.columns["token_count"]
        last = first_page + num_pages - 1
        return int(offsets[first_page]), int(offsets[last] + counts[last])

    def read_tokens(self, first_page: int, num_pages: int) -> np.ndarray:
        """Float32 tokens of consecutive pages, concatenated: ``[tokens, D]``."""
        if num_pages == 0:
            return np.zeros((0, self.meta.D), np.float32)
        stored = self._rows(*self.token_rows(first_page, num_pages))
        return to_float32(stored, self.meta.dtype).reshape(-1, self.meta.D)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the token array (through the chunk cache for zarr)."""
        if self.meta.layout != "zarr":
            return np.asarray(self.tokens[start:stop])  # a memmap slice is already cheap
        size = self.chunk_rows
        pieces = []
        for chunk in range(start // size, (stop - 1) // size + 1):
            rows = self._cache.get((self.index, chunk), lambda c=chunk: np.asarray(
                self.tokens[c * size:(c + 1) * size]))
            lo, hi = max(start - chunk * size, 0), min(stop - chunk * size, len(rows))
            pieces.append(rows[lo:hi])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


class Store:
    """A consolidated store opened for reading (parts as listed in manifest.json)."""

    def __init__(self, root: str | Path, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 text_cache_groups: int = 64) -> None:
        """``cache_bytes``: decoded token chunks kept (zarr), all parts together;
        ``text_cache_groups``: index row groups of page texts kept (256 pages each)."""
        self.root = Path(root)
        self.meta = read_store_meta(self.root)
        manifest_path = self.root / MANIFEST_FILE
        if not manifest_path.exists():
            raise StoreOpenError(
                f"no {MANIFEST_FILE} in {self.root}: the conversion has not finished",
                hint=f"re-run it, or `vst store consolidate {self.root}`")
        self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.part_names: list[str] = sorted(self.manifest["parts"])
        self._chunk_cache = _ChunkCache(cache_bytes)
        self._parts = [self._open_part(i, name) for i, name in enumerate(self.part_names)]
        # Page texts are read per index row group and kept in a small LRU cache.
        self._texts: OrderedDict[tuple[int, int], list[str]] = OrderedDict()
        self._texts_lock = threading.Lock()
        self._text_cache_groups = text_cache_groups
        self._build_doc_table()

    def _open_part(self, index: int, name: str) -> "_Part":
        recorded = self.manifest["parts"][name].get("token_array", {}).get("chunk_rows")
        try:
            return _Part(self.root, name, self.meta, index, self._chunk_cache, recorded)
        except Exception as err:  # a damaged index fails in pyarrow in many ways
            raise StoreCorruptError(f"{name}: cannot read {INDEX_FILE} ({type(err).__name__}: "
                                    f"{err}); verify_store() checks every part") from None

    def _build_doc_table(self) -> None:
        """Per document: its part and first page row; pages of a doc are contiguous in a part."""
        doc_ids: list[str] = []
        part_of, first_row, page_counts = [], [], []
        for part_index, part in enumerate(self._parts):
            pages = part.columns["page"]
            starts = np.flatnonzero(pages == 0)
            if len(pages) and (len(starts) == 0 or starts[0] != 0):
                raise StoreCorruptError(f"{part.name}: index does not start at a page 0")
            ends = np.append(starts[1:], len(pages))
            for start, end in zip(starts, ends):
                doc_ids.append(part.doc_ids[start])
                part_of.append(part_index)
                first_row.append(start)
                page_counts.append(end - start)
        self.doc_ids: list[str] = doc_ids
        self._doc_part = np.asarray(part_of, np.int32)
        self._doc_first_row = np.asarray(first_row, np.int64)
        self._doc_pages = np.asarray(page_counts, np.int64)
        self._doc_lookup = {doc_id: i for i, doc_id in enumerate(doc_ids)}
        if len(self._doc_lookup) != len(doc_ids):
            seen: set[str] = set()
            dup = next(d for d in doc_ids if d in seen or seen.add(d))
            raise StoreCorruptError(f"document {dup!r} appears in more than one place")

    # -- sizes

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def num_pages(self) -> int:
        return int(self.manifest["totals"]["pages"])

    @property
    def num_tokens(self) -> int:
        return int(self.manifest["totals"]["tokens"])

    def __len__(self) -> int:
        return self.num_docs

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._doc_lookup

    def doc_ids_in_split(self, split: str | None = None, val_fraction: float = 0.05) -> list[str]:
        if split in (None, "all"):
            return list(self.doc_ids)
        return [d for d in self.doc_ids if split_of(d, val_fraction) == split]

    # -- document-level helpers used by the window reader

    def _doc_index(self, doc_id: str) -> int:
        try:
            return self._doc_lookup[doc_id]
        except KeyError:
            raise KeyError(f"document {doc_id!r} is not in the store") from None

    def page_count(self, doc_id: str) -> int:
        return int(self._doc_pages[self._doc_index(doc_id)])

    def page_token_counts(self, doc_id: str) -> np.ndarray:
        index = self._doc_index(doc_id)
        part = self._parts[self._doc_part[index]]
        first = self._doc_first_row[index]
        return part.columns["token_count"][first:first + self._doc_pages[index]].astype(np.int64)

    def read_pages(self, doc_id: str, first_page: int, num_pages: int) -> np.ndarray:
        """Float32 tokens of pages ``first_page .. first_page+num_pages-1`` of a document."""
        index = self._doc_index(doc_id)
        if first_page < 0 or first_page + num_pages > self._doc_pages[index]:
            raise IndexError(f"{doc_id}: pages {first_page}..{first_page + num_pages - 1} out of "
                             f"range (document has {self._doc_pages[index]})")
        part = self._parts[self._doc_part[index]]
        return part.read_tokens(int(self._doc_first_row[index]) + first_page, num_pages)

    def _text_group(self, part_index: int, group: int) -> list[str]:
        key = (part_index, group)
        with self._texts_lock:
            texts = self._texts.get(key)
            if texts is not None:
                self._texts.move_to_end(key)
                return texts
        texts = self._parts[part_index].read_texts(group)
        with self._texts_lock:
            self._texts[key] = texts
            while len(self._texts) > self._text_cache_groups:
                self._texts.popitem(last=False)
        return texts

    def _page_text(self, part_index: int, row: int) -> str:
        part = self._parts[part_index]
        group = int(np.searchsorted(part.row_group_starts, row, side="right")) - 1
        return self._text_group(part_index, group)[row - part.row_group_starts[group]]

    def page_records(self, doc_id: str, first_page: int = 0,
                     num_pages: int | None = None) -> list[PageRecord]:
        index = self._doc_index(doc_id)
        total = int(self._doc_pages[index])
        num_pages = total - first_page if num_pages is None else num_pages
        if first_page < 0 or first_page + num_pages > total:
            raise IndexError(f"{doc_id}: pages {first_page}..{first_page + num_pages - 1} out of "
                             f"range (document has {total})")
        part_index = int(self._doc_part[index])
        part = self._parts[part_index]
        meta = self.meta
        records = []
        for row in range(self._doc_first_row[index] + first_page,
                         self._doc_first_row[index] + first_page + num_pages):
            records.append(PageRecord(
                doc_id=doc_id, page=int(part.columns["page"][row]),
                char_start=int(part.columns["char_start"][row]),
                char_end=int(part.columns["char_end"][row]),
                text=self._page_text(part_index, row),
                render_config_id=meta.render_config_id, codec_name=meta.codec_name,
                codec_mode=meta.codec_mode, codec_version=meta.codec_version,
                token_offset=int(part.columns["token_offset"][row]),
                token_count=int(part.columns["token_count"][row]), part=part.name))
        return records

    def locate_pages(self, doc_ids: Sequence[str], pages: Sequence[int] | np.ndarray
                     ) -> dict[str, np.ndarray]:
        """Where pages are stored, for I/O-aware ordering: per (doc, page), its ``part``
        index, ``chunk`` (the stored chunk holding its first token, numbered across the whole
        store) and ``text_group`` (its index row group, numbered across the whole store)."""
        doc_index = np.fromiter((self._doc_index(d) for d in doc_ids), np.int64, len(doc_ids))
        part = self._doc_part[doc_index].astype(np.int64)
        row = self._doc_first_row[doc_index] + np.asarray(pages, np.int64)
        chunk = np.zeros(len(row), np.int64)
        group = np.zeros(len(row), np.int64)
        chunk_base = group_base = 0
        for index, p in enumerate(self._parts):
            mask = part == index
            rows = row[mask]
            token_row = rows if self.meta.fixed_n else p.columns["token_offset"][rows]
            chunk[mask] = chunk_base + token_row // p.chunk_rows
            group[mask] = group_base + np.searchsorted(p.row_group_starts, rows, "right") - 1
            stored_rows = len(p.columns["page"]) if self.meta.fixed_n else int(
                p.columns["token_count"].sum())
            chunk_base += -(-stored_rows // p.chunk_rows)
            group_base += len(p.row_group_starts) - 1
        return {"part": part, "chunk": chunk, "text_group": group}

    def max_chunk_bytes(self) -> int:
        """Bytes of the largest decoded token chunk (what the chunk cache holds per entry)."""
        return max((p.chunk_rows * p.row_bytes for p in self._parts), default=0)

    def reserve_cache(self, chunk_bytes: int = 0, text_groups: int = 0) -> None:
        """Raise the caches to at least this many bytes of decoded chunks and text row groups
        (a window loader asks for what its shuffle buffer touches; never lowers them)."""
        self._chunk_cache.max_bytes = max(self._chunk_cache.max_bytes, int(chunk_bytes))
        self._text_cache_groups = max(self._text_cache_groups, int(text_groups))

    @property
    def cache_info(self) -> dict[str, int]:
        """Chunk cache counters: hits, misses (decoded chunks), entries, bytes, max_bytes."""
        c = self._chunk_cache
        return {"hits": c.hits, "misses": c.misses, "entries": len(c), "bytes": c.bytes,
                "max_bytes": c.max_bytes}

    # -- public reads

    def get_page(self, doc_id: str, page: int) -> tuple[np.ndarray, PageRecord]:
        """Tokens ``[n, D]`` float32 and the index record of one page."""
        return self.read_pages(doc_id, page, 1), self.page_records(doc_id, page, 1)[0]

    def get_document(self, doc_id: str) -> StoredDocument:
        pages = self.page_count(doc_id)
        return StoredDocument(doc_id, self.read_pages(doc_id, 0, pages),
                              self.page_records(doc_id))

    def iter_documents(self, split: str | None = None,
                       val_fraction: float = 0.05) -> Iterator[StoredDocument]:
        """Documents in store order (part by part, as written)."""
        for doc_id in self.doc_ids_in_split(split, val_fraction):
            yield self.get_document(doc_id)

    # -- checks

    def verify(self) -> None:
        """Recompute every part's checksums against the manifest; raise StoreCorruptError."""
        verify_store(self.root)

    def verify_part(self, part_id: int | str) -> dict:
        name = part_name(part_id)
        return verify_part(self.root, name, expected=self.manifest["parts"].get(name))
