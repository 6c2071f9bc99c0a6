"""Visual-token store: round trips, checksums, crash safety, random access and windows."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from data.corpus import split_of
from data.store import (PartExistsError, Store, StoreCorruptError, StoreError, StoreMeta,
                        StoreWriter, WindowLoader, bf16_bits_to_f32, consolidate, create_store,
                        f32_to_bf16_bits, page_row_col, part_status, plan_windows,
                        remove_incomplete, verify_part, verify_store)

D = 8


def make_meta(layout: str = "zarr", dtype: str = "float16", n: int | None = 4) -> StoreMeta:
    return StoreMeta(D=D, n=n, grid=(2, 2) if n == 4 else None, codec_name="test",
                     codec_mode="tiny", codec_version="0.1", render_config={"width": 64},
                     render_config_id="cfg-1", dtype=dtype, layout=layout)


def exact_tokens(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Random float32 tokens that the store's dtype represents exactly."""
    values = rng.standard_normal(shape).astype(np.float32)
    if dtype == "bfloat16":
        return bf16_bits_to_f32(f32_to_bf16_bits(values))
    return values.astype(np.float16).astype(np.float32)


def page_texts(doc_id: str, num_pages: int) -> list[tuple[int, int, str]]:
    """(start, end, text) spans that tile a made-up document."""
    spans, start = [], 0
    for page in range(num_pages):
        text = f"<{doc_id} p{page}>" + "x" * page
        spans.append((start, start + len(text), text))
        start += len(text)
    return spans


def write_store(root: Path, meta: StoreMeta, docs_per_part: list[int], seed: int = 0,
                chunk_rows: int = 3, max_pages: int = 5) -> dict[str, list[np.ndarray]]:
    """Write parts of random documents; returns doc id -> per-page float32 tokens."""
    rng = np.random.default_rng(seed)
    truth: dict[str, list[np.ndarray]] = {}
    for part, num_docs in enumerate(docs_per_part):
        with StoreWriter(root, part, meta, chunk_rows=chunk_rows) as writer:
            for doc in range(num_docs):
                doc_id = f"corpus.jsonl:{part * 100 + doc}"
                num_pages = int(rng.integers(1, max_pages + 1))
                counts = ([meta.n] * num_pages if meta.fixed_n
                          else rng.integers(1, 7, num_pages).tolist())
                tokens = [exact_tokens(rng, (c, D), meta.dtype) for c in counts]
                writer.add_document(doc_id, page_texts(doc_id, num_pages), tokens)
                truth[doc_id] = tokens
    consolidate(root)
    return truth


LAYOUT_CASES = [(layout, dtype, n) for layout in ("zarr", "npy")
                for dtype in ("float16", "bfloat16") for n in (4, None)]


@pytest.mark.parametrize("layout,dtype,n", LAYOUT_CASES)
def test_round_trip(tmp_path: Path, layout: str, dtype: str, n: int | None) -> None:
    meta = make_meta(layout, dtype, n)
    truth = write_store(tmp_path, meta, [4, 0, 3])
    store = Store(tmp_path)
    assert store.meta == meta
    assert store.num_docs == len(truth) == 7
    assert store.num_pages == sum(len(p) for p in truth.values())
    assert store.num_tokens == sum(len(t) for p in truth.values() for t in p)
    assert store.doc_ids == list(truth)
    for doc_id, pages in truth.items():
        document = store.get_document(doc_id)
        np.testing.assert_array_equal(document.tokens, np.concatenate(pages))
        assert [p.page for p in document.pages] == list(range(len(pages)))
        assert [(p.char_start, p.char_end, p.text) for p in document.pages] == \
            page_texts(doc_id, len(pages))
        assert document.page_offsets[-1] == len(document.tokens)
    store.verify()
    assert [d.doc_id for d in store.iter_documents()] == list(truth)


@pytest.mark.parametrize("n", [4, None])
def test_reads_in_random_order_through_a_small_chunk_cache(tmp_path: Path, n: int | None) -> None:
    truth = write_store(tmp_path, make_meta("zarr", "float16", n), [6, 5], max_pages=5)
    row_bytes = (n or 1) * D * 2
    store = Store(tmp_path, cache_bytes=2 * 3 * row_bytes)  # two chunks of 3 rows: evictions
    rng = np.random.default_rng(1)
    for _ in range(60):
        doc_id = list(truth)[rng.integers(len(truth))]
        pages = truth[doc_id]
        first = int(rng.integers(len(pages)))
        count = int(rng.integers(1, len(pages) - first + 1))
        np.testing.assert_array_equal(store.read_pages(doc_id, first, count),
                                      np.concatenate(pages[first:first + count]))
    info = store.cache_info
    assert info["misses"] > 2 and 1 <= info["entries"] <= 3 and info["bytes"] <= info["max_bytes"]


def test_random_access(tmp_path: Path) -> None:
    truth = write_store(tmp_path, make_meta(), [3, 3])
    store = Store(tmp_path)
    doc_id = "corpus.jsonl:101"
    last = len(truth[doc_id]) - 1
    tokens, record = store.get_page(doc_id, last)
    assert tokens.shape == (4, D) and tokens.dtype == np.float32
    np.testing.assert_array_equal(tokens, truth[doc_id][last])
    assert (record.doc_id, record.page, record.part) == (doc_id, last, "part-00001")
    assert (record.codec_name, record.codec_mode, record.codec_version) == ("test", "tiny", "0.1")
    assert record.render_config_id == "cfg-1" and record.token_count == 4
    with pytest.raises(KeyError, match="not in the store"):
        store.get_page("nope:1", 0)
    with pytest.raises(IndexError, match="out of range"):
        store.get_page(doc_id, last + 1)


def test_page_texts_across_index_row_groups(tmp_path: Path) -> None:
    texts = {f"t:{i}": f"page text number {i}" for i in range(700)}  # > 2 row groups of 256
    with StoreWriter(tmp_path, 0, make_meta("npy")) as writer:
        for doc_id, text in texts.items():
            writer.add_page(doc_id, 0, 0, len(text), text, np.zeros((4, D), np.float32))
    consolidate(tmp_path)
    store = Store(tmp_path, text_cache_groups=2)
    for doc_id in ["t:699", "t:0", "t:300", "t:511", "t:512", "t:0"]:
        assert store.get_page(doc_id, 0)[1].text == texts[doc_id]


def test_bfloat16_conversion_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(1).standard_normal(10_000).astype(np.float32) * 100
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy()
    np.testing.assert_array_equal(f32_to_bf16_bits(values), expected.view(np.uint16))


def test_torch_bfloat16_tensor_stored_bit_for_bit(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tokens = torch.randn(2, 4, D).to(torch.bfloat16)
    with StoreWriter(tmp_path, 0, make_meta(dtype="bfloat16")) as writer:
        writer.add_document("doc:0", page_texts("doc:0", 2), tokens)
    consolidate(tmp_path)
    read = Store(tmp_path).get_document("doc:0").tokens
    np.testing.assert_array_equal(read, tokens.float().reshape(-1, D).numpy())


# ---------------------------------------------------------------- integrity


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_detects_corrupt_zarr_chunk(tmp_path: Path) -> None:
    write_store(tmp_path, make_meta("zarr"), [6, 6], max_pages=4)
    Store(tmp_path).verify()
    chunk = tmp_path / "parts/part-00001/tokens.zarr/c/1/0/0"
    flip_byte(chunk, chunk.stat().st_size // 2)
    with pytest.raises(StoreCorruptError, match=r"part-00001.*chunk 1 \(rows 3\.\.5\)"):
        Store(tmp_path).verify()
    verify_part(tmp_path, 0)  # the other part is fine


def test_verify_detects_missing_zarr_chunk(tmp_path: Path) -> None:
    write_store(tmp_path, make_meta("zarr"), [6])
    (tmp_path / "parts/part-00000/tokens.zarr/c/0/0/0").unlink()
    with pytest.raises(StoreCorruptError, match=r"part-00000.*chunk 0"):
        Store(tmp_path).verify()


def test_verify_detects_corrupt_npy_bytes_and_truncation(tmp_path: Path) -> None:
    write_store(tmp_path, make_meta("npy"), [6], max_pages=4)
    path = tmp_path / "parts/part-00000/tokens.npy"
    row_bytes = 4 * D * 2
    flip_byte(path, 256 + 4 * row_bytes + 5)  # row 4 lies in chunk 1 (rows 3..5)
    with pytest.raises(StoreCorruptError, match=r"part-00000.*chunk 1 \(rows 3\.\.5\)"):
        Store(tmp_path).verify()
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(StoreCorruptError, match="part-00000"):
        verify_part(tmp_path, 0)


def test_verify_detects_index_and_manifest_tampering(tmp_path: Path) -> None:
    write_store(tmp_path, make_meta(), [2, 2])
    flip_byte(tmp_path / "parts/part-00000/index.parquet", 40)
    with pytest.raises(StoreCorruptError, match="part-00000.*index.parquet"):
        verify_store(tmp_path)
    with pytest.raises(StoreCorruptError, match="part-00000"):
        Store(tmp_path).verify()  # may already fail while opening: still a clear error

    other = tmp_path / "other"
    write_store(other, make_meta(), [2])
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["parts"]["part-00000"]["pages"] += 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreCorruptError, match="differs from the manifest"):
        Store(other).verify()


# ---------------------------------------------------------------- crash safety and concurrency


def test_half_written_part_is_not_counted(tmp_path: Path) -> None:
    meta = make_meta()
    write_store(tmp_path, meta, [2])
    crashed = StoreWriter(tmp_path, 1)  # pages added, never closed: a crashed task
    crashed.add_document("late:0", page_texts("late:0", 2), np.zeros((2, 4, D), np.float32))
    assert part_status(tmp_path, 1) == "incomplete"
    assert part_status(tmp_path, 0) == "complete"
    assert part_status(tmp_path, 2) == "missing"
    markerless = tmp_path / "parts/part-00005"
    markerless.mkdir()
    manifest = consolidate(tmp_path)
    assert list(manifest["parts"]) == ["part-00000"]
    assert len(manifest["incomplete"]) == 2
    store = Store(tmp_path)
    assert "late:0" not in store and store.num_docs == 2
    store.verify()
    assert len(remove_incomplete(tmp_path)) == 2
    assert part_status(tmp_path, 1) == "missing"


def test_exception_inside_writer_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path, 3, make_meta()) as writer:
            writer.add_document("a:0", page_texts("a:0", 1), np.zeros((1, 4, D), np.float32))
            raise RuntimeError("task died")
    assert part_status(tmp_path, 3) == "missing"
    assert os.listdir(tmp_path / "parts") == []


def test_existing_part_and_overwrite(tmp_path: Path) -> None:
    write_store(tmp_path, make_meta(), [2])
    with pytest.raises(PartExistsError):
        StoreWriter(tmp_path, 0)
    with StoreWriter(tmp_path, 0, overwrite=True) as writer:
        writer.add_document("new:0", page_texts("new:0", 1), np.ones((1, 4, D), np.float32))
    consolidate(tmp_path)
    assert Store(tmp_path).doc_ids == ["new:0"]
    Store(tmp_path).verify()


def test_store_meta_must_agree(tmp_path: Path) -> None:
    create_store(tmp_path, make_meta())
    create_store(tmp_path, make_meta())  # same meta: fine
    with pytest.raises(StoreError, match="different metadata"):
        create_store(tmp_path, make_meta(dtype="bfloat16"))
    with pytest.raises(ValueError, match="grid"):
        StoreMeta(D=8, n=5, grid=(2, 2), codec_name="x", codec_mode="m", codec_version="1",
                  render_config={}, render_config_id="c")


def test_store_requires_manifest(tmp_path: Path) -> None:
    with StoreWriter(tmp_path, 0, make_meta()) as writer:
        writer.add_document("a:0", page_texts("a:0", 1), np.zeros((1, 4, D), np.float32))
    with pytest.raises(StoreError, match="consolidate"):
        Store(tmp_path)


def test_writer_rejects_bad_pages(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, 0, make_meta())
    good = np.zeros((4, D), np.float32)
    writer.add_page("a:0", 0, 0, 3, "abc", good)
    with pytest.raises(ValueError, match="expected page 1"):
        writer.add_page("a:0", 2, 3, 4, "d", good)
    with pytest.raises(ValueError, match="char span"):
        writer.add_page("a:0", 1, 5, 6, "d", good)
    writer.add_page("b:0", 0, 0, 1, "z", good)
    with pytest.raises(ValueError, match="contiguous"):
        writer.add_page("a:0", 1, 3, 4, "d", good)
    with pytest.raises(ValueError, match="n=4"):
        writer.add_page("c:0", 0, 0, 1, "z", np.zeros((3, D), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        writer.add_page("d:0", 0, 0, 1, "z", np.full((4, D), np.nan, np.float32))
    with pytest.raises(ValueError, match="overflow float16"):
        writer.add_page("e:0", 0, 0, 1, "z", np.full((4, D), 1e6, np.float32))
    with pytest.raises(ValueError, match="not valid Unicode"):
        writer.add_page("f:0", 0, 0, 1, "\ud800", good)
    writer.add_page("c:0", 0, 0, 1, "z", good)  # rejected pages left no trace
    writer.add_page("c:0", 1, 1, 2, "y", good)
    info = writer.close()
    assert (info["pages"], info["docs"]) == (4, 3)
    consolidate(tmp_path)
    assert Store(tmp_path).doc_ids == ["a:0", "b:0", "c:0"]


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, 0, make_meta())
    writer.add_page("a:0", 0, 0, 1, "a", np.zeros((4, D), np.float32))
    writer.abort()
    assert part_status(tmp_path, 0) == "missing"


def _write_part_in_subprocess(args: tuple[str, int]) -> int:
    root, part = args
    with StoreWriter(root, part, make_meta("npy")) as writer:
        for doc in range(3):
            doc_id = f"p{part}:{doc}"
            writer.add_document(doc_id, page_texts(doc_id, 2),
                                np.full((2, 4, D), part + doc, np.float32))
    return part


def test_parts_written_by_separate_processes(tmp_path: Path) -> None:
    # spawn: a forked child of a process that has loaded torch's thread pools can hang
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        done = list(pool.map(_write_part_in_subprocess, [(str(tmp_path), p) for p in range(4)]))
    assert done == [0, 1, 2, 3]
    manifest = consolidate(tmp_path, verify=True)
    assert manifest["totals"] == {"pages": 24, "tokens": 96, "docs": 12}
    store = Store(tmp_path)
    store.verify()
    assert store.get_page("p3:2", 1)[0][0, 0] == 5


def test_empty_part(tmp_path: Path) -> None:
    for layout in ("zarr", "npy"):
        root = tmp_path / layout
        with StoreWriter(root, 0, make_meta(layout)):
            pass
        consolidate(root)
        store = Store(root)
        store.verify()
        assert store.num_docs == 0 and len(WindowLoader(store, 8, split="all")) == 0


# ---------------------------------------------------------------- windows


def window_store(tmp_path: Path, n: int | None = 4) -> tuple[Store, dict[str, list[np.ndarray]]]:
    truth = write_store(tmp_path, make_meta(n=n), [5, 4, 6], seed=3, max_pages=7)
    return Store(tmp_path), truth


@pytest.mark.parametrize("n,T,shuffle", [(4, 12, "blocks"), (4, 10, "full"), (None, 9, "blocks"),
                                         (None, 9, "none")])
def test_windows_respect_documents_and_pages(tmp_path: Path, n: int | None, T: int,
                                             shuffle: str) -> None:
    store, truth = window_store(tmp_path, n)
    loader = WindowLoader(store, T, split="all", seed=0, shuffle=shuffle, shuffle_buffer=2)
    seen_pages = []
    for window in loader:
        pages = truth[window.doc_id]
        assert window.tokens.shape == (T, D) and window.tokens.dtype == np.float32
        used = int(window.valid.sum())
        assert window.valid[:used].all() and not window.valid[used:].any()
        assert (window.page_index[used:] == -1).all() and not window.tokens[used:].any()
        # whole consecutive pages of one document, starting at a page start
        numbers = sorted(set(window.page_index[:used].tolist()))
        assert numbers == list(range(window.first_page, window.first_page + len(numbers)))
        assert window.token_in_page[0] == 0
        expected = np.concatenate([pages[p] for p in numbers])
        if window.truncated:
            assert len(numbers) == 1 and len(expected) > T and used == T
        else:
            assert used == len(expected) <= T
        np.testing.assert_array_equal(window.tokens[:used], expected[:used])
        for p in numbers:
            positions = np.flatnonzero(window.page_index == p)
            assert (window.token_in_page[positions] == np.arange(len(positions))).all()
        assert window.doc_start[0] == (window.first_page == 0) and not window.doc_start[1:].any()
        assert window.page_texts == [page_texts(window.doc_id, len(pages))[p][2] for p in numbers]
        seen_pages += [(window.doc_id, p) for p in numbers]
    every_page = [(d, p) for d, pages in truth.items() for p in range(len(pages))]
    assert sorted(seen_pages) == sorted(every_page)  # each page exactly once an epoch


def test_window_truncates_an_over_long_page(tmp_path: Path) -> None:
    with StoreWriter(tmp_path, 0, make_meta(n=None)) as writer:
        writer.add_document("long:0", page_texts("long:0", 2),
                            [np.ones((9, D), np.float32), np.ones((2, D), np.float32)])
    consolidate(tmp_path)
    windows = list(WindowLoader(Store(tmp_path), 5, split="all", shuffle=False))
    assert [w.truncated for w in windows] == [True, False]
    assert windows[0].valid.all() and windows[1].valid.sum() == 2


@pytest.mark.parametrize("shuffle", ["blocks", "full"])
def test_window_order_is_deterministic_per_seed(tmp_path: Path, shuffle: str) -> None:
    store, _ = window_store(tmp_path)
    def order(seed: int, start: int = 0) -> list[tuple[str, int]]:
        loader = WindowLoader(store, 8, split="all", seed=seed, shuffle=shuffle, shuffle_buffer=2)
        return [(w.doc_id, w.first_page) for w in loader.iterate(start, start + len(loader))]
    assert order(7) == order(7)
    assert order(7) != order(8)
    epoch0, epoch1 = order(7), order(7, len(WindowLoader(store, 8, split="all")))
    assert epoch0 != epoch1 and sorted(epoch0) == sorted(epoch1)
    unshuffled = WindowLoader(store, 8, split="all", shuffle=False)
    assert [w.doc_id for w in unshuffled][0] == store.doc_ids[0]


@pytest.mark.parametrize("shuffle", ["blocks", "full"])
def test_resume_from_cursor(tmp_path: Path, shuffle: str) -> None:
    store, _ = window_store(tmp_path)
    kwargs = dict(split="all", seed=5, shuffle=shuffle, shuffle_buffer=3)
    loader = WindowLoader(store, 8, **kwargs)
    stream = loader.batches(batch_size=3, stop=2 * len(loader))
    straight = [next(stream) for _ in range(6)]
    resumed_loader = WindowLoader(Store(tmp_path), 8, **kwargs)  # a fresh process
    cursor = straight[2]["next_cursor"]
    resumed = resumed_loader.batches(batch_size=3, start=cursor)
    for expected in straight[3:]:
        batch = next(resumed)
        assert batch["doc_ids"] == expected["doc_ids"]
        assert batch["first_pages"] == expected["first_pages"]
        np.testing.assert_array_equal(batch["tokens"], expected["tokens"])
        assert batch["next_cursor"] == expected["next_cursor"]
    assert straight[0]["tokens"].shape == (3, 8, D)
    assert straight[0]["page_texts"][0]


def _epoch_blocks(loader: WindowLoader, epoch: int) -> np.ndarray:
    """The stored chunk of each window, in the order the epoch visits them."""
    order = loader.epoch_order(epoch)
    docs = [loader.doc_ids[d] for d in loader._win_doc]
    return loader.store.locate_pages(docs, loader._win_first)["chunk"][order]


@pytest.mark.parametrize("n,buffer", [(4, 1), (4, 3), (None, 2)])
def test_block_shuffle_visits_chunks_a_buffer_at_a_time(tmp_path: Path, n: int | None,
                                                        buffer: int) -> None:
    store, _ = window_store(tmp_path, n)  # chunks of 3 rows: many chunks, windows across them
    loader = WindowLoader(store, 8, split="all", seed=1, shuffle_buffer=buffer)
    for epoch in range(3):
        order = loader.epoch_order(epoch)
        assert sorted(order.tolist()) == list(range(len(loader)))  # each window once
        blocks = _epoch_blocks(loader, epoch)
        # chunks by first visit; the k-th `buffer` of them own one contiguous run of windows
        firsts = list(dict.fromkeys(blocks.tolist()))
        position = 0
        for k in range(0, len(firsts), buffer):
            group = set(firsts[k:k + buffer])
            size = int(np.isin(blocks, list(group)).sum())
            assert set(blocks[position:position + size].tolist()) == group
            position += size
        assert position == len(blocks)
    assert not np.array_equal(loader.epoch_order(0), loader.epoch_order(1))
    # a buffer as large as the store is a full shuffle of it, in an order of its own
    everything = WindowLoader(store, 8, split="all", seed=1, shuffle_buffer=10**6)
    assert len(set(_epoch_blocks(everything, 0)[:len(loader) // 2].tolist())) > buffer


def test_block_shuffle_decodes_each_chunk_about_once(tmp_path: Path) -> None:
    write_store(tmp_path, make_meta("zarr", "float16", 4), [40, 30], seed=2, chunk_rows=8,
                max_pages=6)
    chunk_bytes = 8 * 4 * D * 2

    def misses(shuffle: str) -> tuple[int, int]:
        store = Store(tmp_path, cache_bytes=chunk_bytes)  # the loader raises what it needs
        loader = WindowLoader(store, 8, split="all", seed=0, shuffle=shuffle, shuffle_buffer=2)
        for _ in loader:
            pass
        chunks = len(set(_epoch_blocks(loader, 0).tolist()))
        return store.cache_info["misses"], chunks

    blocks, chunks = misses("blocks")
    full, _ = misses("full")  # no buffer to make room for: the cache stays at one chunk
    # every chunk once, plus at most one more read per chunk for windows crossing its end
    assert chunks <= blocks <= 2 * chunks
    assert full > 2 * blocks  # a global shuffle through the same cache keeps re-decoding


def test_block_shuffle_is_a_pure_function() -> None:
    from data.store import block_shuffle

    blocks = np.repeat([7, 3, 9, 1], [5, 1, 4, 6])
    first = block_shuffle(blocks, 2, np.random.default_rng([4, 0]))
    assert first.tolist() == block_shuffle(blocks, 2, np.random.default_rng([4, 0])).tolist()
    assert sorted(first.tolist()) == list(range(len(blocks)))
    assert len(block_shuffle(np.zeros(0, np.int64), 2, np.random.default_rng(0))) == 0
    with pytest.raises(ValueError, match="at least one"):
        block_shuffle(blocks, 0, np.random.default_rng(0))


def test_shuffle_modes_are_checked(tmp_path: Path) -> None:
    store, _ = window_store(tmp_path)
    assert WindowLoader(store, 8, split="all").shuffle == "blocks"
    assert WindowLoader(store, 8, split="all", shuffle=False).epoch_order(3).tolist() == \
        list(range(len(WindowLoader(store, 8, split="all"))))
    with pytest.raises(ValueError, match="shuffle"):
        WindowLoader(store, 8, split="all", shuffle="sometimes")
    with pytest.raises(ValueError, match="shuffle_buffer"):
        WindowLoader(store, 8, split="all", shuffle_buffer=0)


def test_split_by_document(tmp_path: Path) -> None:
    store, truth = window_store(tmp_path)
    train = WindowLoader(store, 8, split="train", val_fraction=0.3)
    val = WindowLoader(store, 8, split="val", val_fraction=0.3)
    assert set(train.doc_ids).isdisjoint(val.doc_ids)
    assert sorted(train.doc_ids + val.doc_ids) == sorted(truth)
    assert {w.doc_id for w in val} <= set(val.doc_ids)
    ids = [f"doc:{i}" for i in range(4000)]
    share = sum(split_of(i, 0.1) == "val" for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    with pytest.raises(ValueError, match="split"):
        WindowLoader(store, 8, split="test")


def test_page_row_col() -> None:
    page = np.array([0, 0, 0, 0, 1, -1])
    token = np.array([0, 1, 2, 3, 0, -1])
    positions = page_row_col(page, token, (2, 2))
    assert positions.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0],
                                  [-1, -1, -1]]


def test_cli_verify_and_info(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    def vst(*args: str):
        return CliRunner().invoke(app, ["store", *args])

    write_store(tmp_path, make_meta("npy"), [3, 3])
    assert vst("consolidate", str(tmp_path), "--verify").exit_code == 0
    assert vst("verify", str(tmp_path)).exit_code == 0
    info = vst("info", str(tmp_path))
    assert info.exit_code == 0 and '"docs": 6' in info.stdout
    flip_byte(tmp_path / "parts/part-00001/tokens.npy", 300)
    assert vst("verify", str(tmp_path), "--part", "0").exit_code == 0
    bad = vst("verify", str(tmp_path), "--part", "1")
    assert bad.exit_code == 1 and "CORRUPT: part-00001" in bad.stderr


@given(counts=st.lists(st.integers(1, 20), max_size=30), T=st.integers(1, 40))
def test_plan_windows_covers_each_page_once(counts: list[int], T: int) -> None:
    plan = plan_windows(counts, T)
    covered = [p for first, count in plan for p in range(first, first + count)]
    assert covered == list(range(len(counts)))
    for first, count in plan:
        size = sum(counts[first:first + count])
        assert size <= T or count == 1
        nxt = first + count
        if size <= T and nxt < len(counts):
            assert size + counts[nxt] > T  # greedy: the next page did not fit
