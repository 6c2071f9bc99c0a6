"""The visual-token store: parts written independently, consolidated by a manifest.

Layout of a store root::

    store.json                 StoreMeta: D, n, grid, codec, render config, dtype, layout
    manifest.json              consolidated parts: counts and checksums (see consolidate())
    parts/part-00007/          one complete part (renamed into place only when finished)
        tokens.zarr | tokens.npy   [pages, n, D] (fixed n) or [tokens, D] (variable n)
        index.parquet          one row per page: doc_id, page, char span, text, config, offsets
        part.json              completion marker: counts, sha256 of tokens, chunks and index
    parts/.tmp-part-00008-<random>/   a part being written (or left by a crash): never read

A part holds whole documents: all pages of a document, in page order, in one part. A writer
(``StoreWriter``) needs no coordination with other writers, so parts can be written from Ray
tasks or separate processes; ``part_status`` / ``verify_part`` tell a later run which parts
are complete and intact, and ``consolidate`` writes the manifest that readers use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.token_arrays import (LAYOUTS, TokenArrayCorrupt, TokenArrayWriter, open_array,
                               storage_dtype, to_float32, to_storage, verify_array)

FORMAT = "vst-token-store"
FORMAT_VERSION = 1
STORE_META_FILE = "store.json"
MANIFEST_FILE = "manifest.json"
PARTS_DIR = "parts"
PART_MARKER = "part.json"
INDEX_FILE = "index.parquet"
TMP_PREFIX = ".tmp-"
TARGET_CHUNK_BYTES = 8 << 20
# Decoded token chunks a reader keeps (all parts together); a window loader raises it to what
# its shuffle buffer needs (see data.windows).
DEFAULT_CACHE_BYTES = 256 << 20
# Small index row groups let a reader fetch a few page texts without decoding a whole part.
INDEX_ROW_GROUP = 256
_PART_NAME = re.compile(r"^part-[A-Za-z0-9_.-]+$")
# Columns every reader loads at open; page texts are read per part only when needed.
_SMALL_COLUMNS = ["doc_id", "page", "char_start", "char_end", "token_offset", "token_count"]


class StoreError(Exception):
    """Misuse of the store or a store that cannot be opened."""


class StoreCorruptError(StoreError):
    """Stored bytes disagree with the recorded checksums or counts; the message names the part."""


class PartExistsError(StoreError):
    """A complete part with this id exists already (pass overwrite=True to replace it)."""


@dataclass(frozen=True)
class StoreMeta:
    """What every token in a store shares. ``n=None`` means a variable number of tokens a page."""

    D: int
    n: int | None
    grid: tuple[int, int] | None
    codec_name: str
    codec_mode: str
    codec_version: str
    render_config: dict
    render_config_id: str
    dtype: str = "float16"
    layout: str = "zarr"

    def __post_init__(self) -> None:
        storage_dtype(self.dtype)  # validates
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.D < 1 or (self.n is not None and self.n < 1):
            raise ValueError(f"D and n must be positive, got D={self.D} n={self.n}")
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(int(x) for x in self.grid))
            if self.n is not None and self.grid[0] * self.grid[1] != self.n:
                raise ValueError(f"grid {self.grid} does not hold n={self.n} tokens")

    @property
    def fixed_n(self) -> bool:
        return self.n is not None

    def to_json(self) -> dict:
        out = asdict(self)
        out["grid"] = list(self.grid) if self.grid is not None else None
        return out

    @classmethod
    def from_json(cls, data: dict) -> "StoreMeta":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_codec(cls, codec: Any, *, mode: str = "default", dtype: str = "float16",
                   layout: str = "zarr") -> "StoreMeta":
        """Meta from a codec object (``D``, ``n``, ``grid``, ``version``, ``render_config``)."""
        config = codec.render_config
        return cls(D=int(codec.D), n=codec.n, grid=codec.grid,
                   codec_name=getattr(codec, "name", type(codec).__name__), codec_mode=mode,
                   codec_version=str(codec.version), render_config=json.loads(config.to_json()),
                   render_config_id=str(config.id), dtype=dtype, layout=layout)


@dataclass(frozen=True)
class PageRecord:
    """One row of a part's page index."""

    doc_id: str
    page: int
    char_start: int
    char_end: int
    text: str
    render_config_id: str
    codec_name: str
    codec_mode: str
    codec_version: str
    token_offset: int
    token_count: int
    part: str = ""


# ---------------------------------------------------------------- small file helpers


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def part_name(part_id: int | str) -> str:
    name = f"part-{part_id:05d}" if isinstance(part_id, int) else str(part_id)
    if not name.startswith("part-"):
        name = f"part-{name}"
    if not _PART_NAME.match(name):
        raise ValueError(f"bad part id {part_id!r}: use an int or [A-Za-z0-9_.-]")
    return name


# ---------------------------------------------------------------- store metadata


def create_store(root: str | Path, meta: StoreMeta) -> StoreMeta:
    """Create ``root/store.json`` unless it exists; then it must hold the same meta.

    Safe to call from many writers at once: the file appears atomically (hard link of a
    finished temp file), and the loser of a race compares instead of overwriting.
    """
    root = Path(root)
    (root / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    target = root / STORE_META_FILE
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta.to_json()}
    if not target.exists():
        tmp = root / f"{TMP_PREFIX}{STORE_META_FILE}-{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    existing = read_store_meta(root)
    if existing != meta:
        raise StoreError(f"{target} holds different metadata:\n  existing {existing}\n  "
                         f"given    {meta}")
    return existing


def read_store_meta(root: str | Path) -> StoreMeta:
    path = Path(root) / STORE_META_FILE
    if not path.exists():
        raise StoreError(f"no {STORE_META_FILE} in {root}: not a token store (create_store first)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: unsupported format {data.get('format')!r} "
                         f"v{data.get('format_version')}")
    return StoreMeta.from_json(data)


# ---------------------------------------------------------------- writing one part


class StoreWriter:
    """Writes one part. Use as a context manager; the part appears only if the block succeeds.

        with StoreWriter(root, part_id=7, meta=meta) as writer:
            for doc_id, pages, tokens in ...:
                writer.add_document(doc_id, pages, tokens)

    Pages must come document by document, each starting at page 0 in order. ``tokens`` may be
    numpy arrays or torch tensors (a torch bfloat16 tensor is stored bit for bit).
    ``chunk_rows``: pages a chunk for a fixed-n store, tokens a chunk for a variable-n one
    (default: about 8 MiB a chunk). Chunks run along the leading axis.
    """

    def __init__(self, root: str | Path, part_id: int | str, meta: StoreMeta | None = None, *,
                 chunk_rows: int | None = None, overwrite: bool = False) -> None:
        self.root = Path(root)
        self.meta = create_store(self.root, meta) if meta is not None else read_store_meta(root)
        self.name = part_name(part_id)
        self.final_dir = self.root / PARTS_DIR / self.name
        self.overwrite = overwrite
        if self.final_dir.exists() and not overwrite:
            raise PartExistsError(f"{self.final_dir} exists; pass overwrite=True to replace it")
        self.tmp_dir = self.root / PARTS_DIR / f"{TMP_PREFIX}{self.name}-{uuid.uuid4().hex[:8]}"
        self.tmp_dir.mkdir(parents=True)
        row_shape = (self.meta.n, self.meta.D) if self.meta.fixed_n else (self.meta.D,)
        if chunk_rows is None:  # about TARGET_CHUNK_BYTES a chunk
            row_bytes = int(np.prod(row_shape)) * storage_dtype(self.meta.dtype).itemsize
            chunk_rows = max(1, TARGET_CHUNK_BYTES // row_bytes)
        self._tokens = TokenArrayWriter(self.tmp_dir, self.meta.layout, row_shape,
                                        self.meta.dtype, chunk_rows)
        self._columns: dict[str, list] = {name: [] for name in
                                          ("doc_id", "page", "char_start", "char_end", "text",
                                           "token_offset", "token_count")}
        self._docs_seen: set[str] = set()
        self._current_doc: str | None = None
        self._next_page = 0
        self._next_char = 0
        self._token_total = 0
        self._closed = False

    # -- adding pages

    def add_page(self, doc_id: str, page: int, char_start: int, char_end: int, text: str,
                 tokens: Any) -> None:
        """Append one page; ``tokens`` is ``[n, D]`` (or ``[k, D]`` for a variable-n store).
        A rejected page (ValueError) leaves the writer as it was."""
        self._check_order(doc_id, page, char_start, char_end, text)
        stored = to_storage(tokens, self.meta.dtype)
        if stored.ndim != 2 or stored.shape[1] != self.meta.D or len(stored) == 0:
            raise ValueError(f"{doc_id} page {page}: tokens shape {stored.shape}, "
                             f"expected [{self.meta.n or 'k'}, {self.meta.D}]")
        if self.meta.fixed_n and len(stored) != self.meta.n:
            raise ValueError(f"{doc_id} page {page}: {len(stored)} tokens, "
                             f"store has n={self.meta.n}")
        self._tokens.append(stored[None] if self.meta.fixed_n else stored)
        if doc_id != self._current_doc:
            self._docs_seen.add(doc_id)
            self._current_doc = doc_id
        self._next_page, self._next_char = page + 1, char_end
        columns = self._columns
        columns["doc_id"].append(doc_id)
        columns["page"].append(page)
        columns["char_start"].append(char_start)
        columns["char_end"].append(char_end)
        columns["text"].append(text)
        columns["token_offset"].append(self._token_total)
        columns["token_count"].append(len(stored))
        self._token_total += len(stored)

    def add_document(self, doc_id: str, pages: Sequence[Any], tokens: Any) -> None:
        """Append all pages of a document. ``pages`` items have ``start``, ``end`` and ``text``
        (render's ``Page``) or are ``(start, end, text)`` tuples; ``tokens`` is ``[pages, n, D]``
        or a list of per-page ``[k, D]`` arrays."""
        if len(pages) != len(tokens):
            raise ValueError(f"{doc_id}: {len(pages)} pages but {len(tokens)} token arrays")
        for number, (page, page_tokens) in enumerate(zip(pages, tokens)):
            start, end, text = (page if isinstance(page, tuple)
                                else (page.start, page.end, page.text))
            self.add_page(doc_id, number, start, end, text, page_tokens)

    def _check_order(self, doc_id: str, page: int, start: int, end: int, text: str) -> None:
        """Raise ValueError if this page cannot come next; changes nothing."""
        if self._closed:
            raise StoreError(f"{self.name}: writer is closed")
        new_doc = doc_id != self._current_doc
        if new_doc and doc_id in self._docs_seen:
            raise ValueError(f"{doc_id}: pages of a document must be contiguous in one part")
        expected_page = 0 if new_doc else self._next_page
        expected_char = start if new_doc else self._next_char
        if page != expected_page:
            raise ValueError(f"{doc_id}: got page {page}, expected page {expected_page}")
        if start != expected_char or end < start or len(text) != end - start:
            raise ValueError(f"{doc_id} page {page}: char span ({start}, {end}) does not follow "
                             f"the previous page (at {expected_char}) or does not match "
                             f"its {len(text)}-char text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{doc_id} page {page}: text is not valid Unicode ({err})") from None

    # -- finishing

    def close(self) -> dict:
        """Write index and completion marker, then rename the part into place. Returns part.json."""
        if self._closed:
            raise StoreError(f"{self.name}: writer is closed")
        self._closed = True
        try:
            token_info = self._tokens.close()
            index_path = self.tmp_dir / INDEX_FILE
            pq.write_table(self._index_table(), index_path, compression="zstd",
                           row_group_size=INDEX_ROW_GROUP)
            info = {
                "part": self.name,
                "pages": len(self._columns["page"]),
                "tokens": self._token_total,
                "docs": len(self._docs_seen),
                "layout": self.meta.layout,
                "token_array": token_info,
                "index_sha256": _sha256_file(index_path),
            }
            _write_json_atomic(self.tmp_dir / PART_MARKER, info)
            self._move_into_place()
        except BaseException:
            self.abort()
            raise
        return info

    def _index_table(self) -> pa.Table:
        columns = self._columns
        count = len(columns["page"])
        constant = {"render_config_id": self.meta.render_config_id,
                    "codec_name": self.meta.codec_name, "codec_mode": self.meta.codec_mode,
                    "codec_version": self.meta.codec_version}
        return pa.table({
            "doc_id": pa.array(columns["doc_id"], pa.string()),
            "page": pa.array(columns["page"], pa.int32()),
            "char_start": pa.array(columns["char_start"], pa.int64()),
            "char_end": pa.array(columns["char_end"], pa.int64()),
            "text": pa.array(columns["text"], pa.string()),
            **{key: pa.array([value] * count, pa.string()).dictionary_encode()
               for key, value in constant.items()},
            "token_offset": pa.array(columns["token_offset"], pa.int64()),
            "token_count": pa.array(columns["token_count"], pa.int32()),
        })

    def _move_into_place(self) -> None:
        if self.final_dir.exists():
            if not self.overwrite:
                raise PartExistsError(f"{self.final_dir} was completed by another writer")
            trash = self.final_dir.with_name(f"{TMP_PREFIX}old-{self.name}-{uuid.uuid4().hex[:8]}")
            os.rename(self.final_dir, trash)
            os.rename(self.tmp_dir, self.final_dir)
            shutil.rmtree(trash)
        else:
            os.rename(self.tmp_dir, self.final_dir)  # atomic: readers see all or nothing

    def abort(self) -> None:
        """Drop everything written so far."""
        self._closed = True
        self._tokens.abort()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


# ---------------------------------------------------------------- completeness and checks


def part_status(root: str | Path, part_id: int | str) -> str:
    """"complete" (marker present), "incomplete" (temp dir, or dir without marker), "missing"."""
    root = Path(root)
    name = part_name(part_id)
    final = root / PARTS_DIR / name
    if (final / PART_MARKER).exists():
        return "complete"
    if final.exists() or any((root / PARTS_DIR).glob(f"{TMP_PREFIX}{name}-*")):
        return "incomplete"
    return "missing"


def read_part_info(root: str | Path, part_id: int | str) -> dict:
    marker = Path(root) / PARTS_DIR / part_name(part_id) / PART_MARKER
    if not marker.exists():
        raise StoreError(f"{marker.parent} is not a complete part (no {PART_MARKER})")
    return json.loads(marker.read_text(encoding="utf-8"))


def verify_part(root: str | Path, part_id: int | str, expected: dict | None = None) -> dict:
    """Recompute a complete part's checksums and counts; raise StoreCorruptError on mismatch.

    ``expected`` (e.g. the part's manifest entry) must also agree with the part's marker.
    Returns the part's info (its part.json).
    """
    root = Path(root)
    name = part_name(part_id)
    directory = root / PARTS_DIR / name
    try:
        info = read_part_info(root, name)
    except (StoreError, json.JSONDecodeError) as err:
        raise StoreCorruptError(f"{name}: {err}") from None
    if expected is not None and expected != info:
        raise StoreCorruptError(f"{name}: part.json differs from the manifest entry")
    index_path = directory / INDEX_FILE
    if not index_path.exists() or _sha256_file(index_path) != info["index_sha256"]:
        raise StoreCorruptError(f"{name}: {INDEX_FILE} missing or checksum mismatch")
    meta = read_store_meta(root)
    try:
        verify_array(directory, meta.layout, info["token_array"])
    except TokenArrayCorrupt as err:
        raise StoreCorruptError(f"{name}: {err}") from None
    constants = {"render_config_id": meta.render_config_id, "codec_name": meta.codec_name,
                 "codec_mode": meta.codec_mode, "codec_version": meta.codec_version}
    index = pq.read_table(index_path, columns=["doc_id", "token_count", *constants])
    tokens = int(pc.sum(index["token_count"]).as_py() or 0)
    docs = len(pc.unique(index["doc_id"]))
    if (index.num_rows, tokens, docs) != (info["pages"], info["tokens"], info["docs"]):
        raise StoreCorruptError(f"{name}: index counts (pages, tokens, docs) = "
                                f"{(index.num_rows, tokens, docs)} disagree with part.json")
    for column, value in constants.items():
        if set(pc.unique(index[column].cast(pa.string())).to_pylist()) - {value}:
            raise StoreCorruptError(f"{name}: index column {column} disagrees with store.json")
    return info


def scan_parts(root: str | Path) -> tuple[list[str], list[str]]:
    """Names of complete parts and of incomplete ones (temp dirs, dirs without a marker)."""
    parts_dir = Path(root) / PARTS_DIR
    complete, incomplete = [], []
    for child in sorted(parts_dir.iterdir()) if parts_dir.exists() else []:
        if not child.is_dir():
            continue
        if child.name.startswith(TMP_PREFIX) or not (child / PART_MARKER).exists():
            incomplete.append(child.name)
        else:
            complete.append(child.name)
    return complete, incomplete


def consolidate(root: str | Path, *, verify: bool = False) -> dict:
    """Write ``manifest.json`` from the complete parts (optionally verifying each first).

    Incomplete parts are listed in the manifest under "incomplete" and not counted. Call it
    once all writers are done (e.g. at the end of the conversion job).
    """
    root = Path(root)
    meta = read_store_meta(root)
    complete, incomplete = scan_parts(root)
    parts = {}
    for name in complete:
        parts[name] = verify_part(root, name) if verify else read_part_info(root, name)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta.to_json(),
        "parts": parts,
        "incomplete": incomplete,
        "totals": {key: sum(p[key] for p in parts.values()) for key in ("pages", "tokens", "docs")},
    }
    _write_json_atomic(root / MANIFEST_FILE, manifest)
    return manifest


def verify_store(root: str | Path) -> dict:
    """Check every part listed in the manifest (without opening the store for reading)."""
    root = Path(root)
    manifest_path = root / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StoreCorruptError(f"{manifest_path}: unreadable ({err})") from None
    complete, _ = scan_parts(root)
    missing = sorted(set(manifest["parts"]) - set(complete))
    if missing:
        raise StoreCorruptError(f"parts in the manifest but not complete on disk: {missing}")
    for name, entry in sorted(manifest["parts"].items()):
        verify_part(root, name, expected=entry)
    return manifest


def remove_incomplete(root: str | Path) -> list[str]:
    """Delete temp dirs and marker-less part dirs. Only safe when no writer is running."""
    _, incomplete = scan_parts(root)
    for name in incomplete:
        shutil.rmtree(Path(root) / PARTS_DIR / name)
    return incomplete


# ---------------------------------------------------------------- reading


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
        table = index_file.read(columns=_SMALL_COLUMNS)
        sizes = [index_file.metadata.row_group(i).num_rows
                 for i in range(index_file.metadata.num_row_groups)]
        self.row_group_starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.columns = {key: table[key].to_numpy() for key in _SMALL_COLUMNS if key != "doc_id"}
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
            raise StoreError(f"no {MANIFEST_FILE} in {self.root}: run data.store.consolidate()")
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
        from data.windows import split_of

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

    def windows(self, T: int, **kwargs: Any) -> Any:
        """A ``data.windows.WindowLoader`` over this store."""
        from data.windows import WindowLoader

        return WindowLoader(self, T, **kwargs)

    # -- checks

    def verify(self) -> None:
        """Recompute every part's checksums against the manifest; raise StoreCorruptError."""
        verify_store(self.root)

    def verify_part(self, part_id: int | str) -> dict:
        name = part_name(part_id)
        return verify_part(self.root, name, expected=self.manifest["parts"].get(name))
