"""The corpus layer: raw documents at the head of the data flow (nothing here imports the
render, codec or store layers).

    from data.corpus import read_corpus, SkipLog, split_of
    vst corpus read PATH --skips skips.jsonl

Modules: ``reader`` (streaming readers, skips, sharding), ``splits`` (train/val split of a
document id), ``demo`` (the pydoc demo corpus), ``build`` (``vst corpus build`` from Debian
documentation packages, with ``sources`` and ``text``).
"""

from data.corpus.demo import build_demo_corpus, demo_documents, heldout_texts
from data.corpus.reader import (DEFAULT_MAX_CHARS, MAX_SPLIT_BYTES, OVERSIZED, SUFFIXES, Document,
                                Skip, SkipLog, clean_text, corpus_files, corpus_suffix,
                                read_corpus, shard_of, shard_plan, split_oversized)
from data.corpus.splits import DEFAULT_VAL_FRACTION, document_id, part_id, split_of

__all__ = [
    "DEFAULT_MAX_CHARS", "DEFAULT_VAL_FRACTION", "MAX_SPLIT_BYTES", "OVERSIZED", "SUFFIXES",
    "Document", "Skip", "SkipLog", "build_demo_corpus", "clean_text", "corpus_files",
    "corpus_suffix", "demo_documents", "document_id", "heldout_texts", "part_id", "read_corpus",
    "shard_of", "shard_plan", "split_of", "split_oversized",
]
