"""Writing one part of the token store (``StoreWriter``); the layout is in ``data.store.format``.

    with StoreWriter(root, part_id=7, meta=meta) as writer:
        writer.add_document(doc_id, pages, tokens)
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.store.format import (INDEX_FILE, PART_MARKER, PARTS_DIR, TMP_PREFIX, PartExistsError,
                               StoreError, StoreMeta, create_store, part_name, read_store_meta,
                               sha256_file, write_json_atomic)
from data.store.token_arrays import TokenArrayWriter, storage_dtype, to_storage

TARGET_CHUNK_BYTES = 8 << 20  # about this many bytes a stored chunk
# Small index row groups let a reader fetch a few page texts without decoding a whole part.
INDEX_ROW_GROUP = 256


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
                "index_sha256": sha256_file(index_path),
            }
            write_json_atomic(self.tmp_dir / PART_MARKER, info)
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
