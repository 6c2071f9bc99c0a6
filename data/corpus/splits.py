"""The train/validation split of a corpus: a property of a document id, decided by a hash.

It lives in the corpus layer because every later stage (corpus build's ``meta.split``, the
store's ``doc_ids_in_split``, the window loader) must agree on it without importing upward.

    python -c "from data.corpus import split_of; print(split_of('train.jsonl.zst:7'))"
"""

from __future__ import annotations

import hashlib
import re

DEFAULT_VAL_FRACTION = 0.05
PART_SEPARATOR = "#part-"
# Only a trailing "#part-<digits>" marks a part: the reader's own ids ("<source>:<record>", or
# a .txt source ending in ".txt") never end that way, so no whole document is mistaken for one.
_PART_SUFFIX = re.compile(re.escape(PART_SEPARATOR) + r"\d+$")


def part_id(doc_id: str, index: int) -> str:
    """Id of part ``index`` of an oversized document cut into parts (see data.corpus.reader)."""
    return f"{doc_id}{PART_SEPARATOR}{index:03d}"


def document_id(doc_id: str) -> str:
    """The id of the whole document a (part) id belongs to."""
    return _PART_SUFFIX.sub("", doc_id)


def split_of(doc_id: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> str:
    """"val" for a stable ``val_fraction`` of documents (by a hash of the id), else "train".

    The parts of one document share its split (the hash is of ``document_id``), so text of a
    validation document never leaks into training through a sibling part."""
    digest = hashlib.sha256(document_id(doc_id).encode("utf-8", "surrogatepass")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"
