"""Corpus readers on small files written here, hostile inputs, sharding and the demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from data.corpus import (Document, SkipLog, build_demo_corpus, clean_text, heldout_texts,
                         read_corpus, shard_plan, split_of)
from data.corpus.demo import DEMO_FILE_NAME, PILE_SET_NAME, split_text


def pile_line(text: str, set_name: str = "Pile-CC") -> bytes:
    return (json.dumps({"text": text, "meta": {"pile_set_name": set_name}}) + "\n").encode()


def write_zst(path: Path, payload: bytes) -> Path:
    path.write_bytes(zstandard.ZstdCompressor().compress(payload))
    return path


def reasons(skips: SkipLog) -> list[str]:
    return [entry.reason for entry in skips.skipped]


def test_pile_jsonl_zst(tmp_path: Path) -> None:
    path = write_zst(tmp_path / "00.jsonl.zst",
                     pile_line("first doc") + pile_line("second doc", "ArXiv"))
    skips = SkipLog()
    docs = list(read_corpus(path, skips=skips))
    assert [d.text for d in docs] == ["first doc", "second doc"]
    assert [d.id for d in docs] == ["00.jsonl.zst:0", "00.jsonl.zst:1"]
    assert docs[1].meta["pile_set_name"] == "ArXiv"
    assert len(skips) == 0


def test_zst_multi_frame_and_truncated(tmp_path: Path) -> None:
    cctx = zstandard.ZstdCompressor()
    frames = cctx.compress(pile_line("a")) + cctx.compress(pile_line("b"))
    docs = list(read_corpus(write_zst_raw(tmp_path / "multi.jsonl.zst", frames)))
    assert [d.text for d in docs] == ["a", "b"]

    big = b"".join(pile_line(f"doc {i} " + "x" * 200) for i in range(2000))
    blob = cctx.compress(big)
    truncated = write_zst_raw(tmp_path / "cut.jsonl.zst", blob[: len(blob) // 2])
    skips = SkipLog()
    docs = list(read_corpus(truncated, skips=skips))
    assert 0 < len(docs) < 2000
    assert any("corrupt compressed stream" in r for r in reasons(skips))

    damaged = bytearray(blob)
    damaged[len(blob) // 2: len(blob) // 2 + 64] = bytes(64)  # zeroed block mid-stream
    skips = SkipLog()
    docs = list(read_corpus(write_zst_raw(tmp_path / "bad.jsonl.zst", bytes(damaged)),
                            skips=skips))
    assert len(docs) < 2000 and len(skips) > 0  # recorded, whatever the decoder made of it


def test_a_reader_left_open_exits_quietly(tmp_path: Path) -> None:
    """A generator suspended mid-file (the caller took what it needed) is closed at exit,
    when module globals may already be gone: no 'Exception ignored' noise on stderr."""
    import subprocess
    import sys

    path = write_zst(tmp_path / "00.jsonl.zst",
                     b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n"
                              for i in range(50)))
    # torch and a codec imported beside it change the teardown order enough to show it
    code = ("import sys, torch; from codec import load_codec; "
            "from data.corpus import read_corpus; "
            f"it = read_corpus({str(path)!r}); next(it); load_codec('toy'); "
            "sys.stdout.write('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0 and out.stdout == "ok"
    assert "Exception ignored" not in out.stderr, out.stderr


def write_zst_raw(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


def test_plain_jsonl_custom_field_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"content": "hello", "url": "u1"}) + "\n"
                    + json.dumps({"content": "bye", "meta": {"lang": "en"}}) + "\n")
    docs = list(read_corpus(path, text_field="content"))
    assert [d.text for d in docs] == ["hello", "bye"]
    assert docs[0].meta == {"url": "u1"} and docs[1].meta == {"lang": "en"}


def test_hostile_jsonl(tmp_path: Path) -> None:
    lines = [
        pile_line("good one"),                                   # 0
        b'{"text": "bad \xff\xfe bytes", "meta": {}}\n',         # 1 invalid UTF-8
        b'{"text": "unterminated\n',                             # 2 invalid JSON
        pile_line(""),                                           # 3 empty
        pile_line("   \n\t "),                                   # 4 whitespace only
        pile_line("y" * 101),                                    # 5 oversized
        json.dumps({"meta": {}}).encode() + b"\n",               # 6 missing text
        json.dumps({"text": 5}).encode() + b"\n",                # 7 text not a string
        b"[1, 2, 3]\n",                                          # 8 not an object
        b'{"text": "lone \\ud800 surrogate"}\n',                 # 9 invalid unicode
        pile_line("nul\x00 and \x07bell\x1b kept\ttab\nnl\x0cff"),  # 10 repaired
        b"\n",                                                   # 11 blank line
        pile_line("last good"),                                  # 12
    ]
    path = write_zst(tmp_path / "h.jsonl.zst", b"".join(lines))
    skips = SkipLog()
    docs = list(read_corpus(path, max_chars=100, oversized="drop", skips=skips))
    assert [d.id for d in docs] == ["h.jsonl.zst:0", "h.jsonl.zst:10", "h.jsonl.zst:12"]
    assert docs[1].text == "nul and bell kept\ttab\nnl\x0cff"
    by_item = {e.item: e.reason for e in skips.skipped}
    assert by_item["h.jsonl.zst:1"].startswith("invalid UTF-8")
    assert by_item["h.jsonl.zst:2"].startswith("invalid JSON")
    assert by_item["h.jsonl.zst:3"] == "empty document"
    assert by_item["h.jsonl.zst:4"] == "empty document"
    assert by_item["h.jsonl.zst:5"].startswith("oversized")
    assert by_item["h.jsonl.zst:6"].startswith("missing text field")
    assert "not a string" in by_item["h.jsonl.zst:7"]
    assert "not an object" in by_item["h.jsonl.zst:8"]
    assert by_item["h.jsonl.zst:9"].startswith("invalid Unicode")
    assert by_item["h.jsonl.zst:11"] == "blank line"
    assert len(skips.skipped) == 10
    [repair] = skips.repaired
    assert repair.item == "h.jsonl.zst:10" and "removed 3" in repair.reason

    log = skips.write_jsonl(tmp_path / "skips.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 11 and {"source", "item", "reason", "action"} <= set(rows[0])


def test_oversized_line_is_not_buffered(tmp_path: Path) -> None:
    # A line far beyond max_chars * 12 bytes is drained, not parsed; the next line still reads.
    path = tmp_path / "big.jsonl"
    path.write_bytes(pile_line("z" * (3 << 20)) + pile_line("small"))
    skips = SkipLog()
    docs = list(read_corpus(path, max_chars=10, oversized="drop", skips=skips))
    assert [d.text for d in docs] == ["small"]
    assert reasons(skips) == [reasons(skips)[0]] and "line longer than" in reasons(skips)[0]


def test_split_mode_still_bounds_a_line(tmp_path: Path, monkeypatch) -> None:
    # Splitting holds a document whole while cutting it: past MAX_SPLIT_BYTES it is skipped.
    import data.corpus.reader as reader

    monkeypatch.setattr(reader, "MAX_SPLIT_BYTES", 1 << 20)
    path = tmp_path / "big.jsonl"
    path.write_bytes(pile_line("z" * (3 << 20)) + pile_line("w " * 400))
    skips = SkipLog()
    docs = list(read_corpus(path, max_chars=100, skips=skips))
    assert "".join(d.text for d in docs) == "w " * 400 and len(docs) == 8
    assert "line longer than" in reasons(skips)[0] and len(skips.split) == 1


def test_txt_directory_and_hostile_txt(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfalpha text")  # with a byte-order mark
    (tmp_path / "sub" / "b.txt").write_text("beta text")
    (tmp_path / "bad.txt").write_bytes(b"caf\xc3")  # truncated UTF-8 sequence
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "notes.md").write_text("not a corpus file")
    skips = SkipLog()
    docs = list(read_corpus(tmp_path, skips=skips))
    assert [(d.id, d.text) for d in docs] == [("a.txt", "alpha text"), ("sub/b.txt", "beta text")]
    by_item = {e.item: e.reason for e in skips.skipped}
    assert by_item["bad.txt"].startswith("invalid UTF-8")
    assert by_item["empty.txt"] == "empty document"
    assert by_item["notes.md"] == "unsupported file type"


def test_single_txt_file_oversized(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("w" * 500)
    skips = SkipLog()
    assert list(read_corpus(path, max_chars=100, oversized="drop", skips=skips)) == []
    assert reasons(skips)[0].startswith("oversized")


def test_oversized_document_is_split_into_ordered_parts(tmp_path: Path) -> None:
    # Regression: a document over max_chars used to be skipped and lost.
    words = " ".join(f"word{i:04d}" for i in range(400))  # 3,599 chars, no line breaks
    lines = "\n".join(f"line {i:03d} " + "x" * 40 for i in range(80))  # cut at line breaks
    path = tmp_path / "o.jsonl"
    path.write_bytes(pile_line("before") + pile_line(words, "ArXiv") + pile_line(lines)
                     + pile_line("after"))
    skips = SkipLog()
    docs = list(read_corpus(path, max_chars=1000, skips=skips))
    ids = [d.id for d in docs]
    assert ids[0] == "o.jsonl:0" and ids[-1] == "o.jsonl:3"
    for line_no, original in ((1, words), (2, lines)):
        parts = [d for d in docs if d.meta.get("part_of") == f"o.jsonl:{line_no}"]
        assert len(parts) > 1 and "".join(p.text for p in parts) == original
        assert [p.meta["part_index"] for p in parts] == list(range(len(parts)))
        assert all(p.meta["part_count"] == len(parts) for p in parts)
        assert all(len(p.text) <= 1000 for p in parts)
        assert len({p.id for p in parts}) == len(parts)  # unique ids for the store
        # consecutive, in order, right after the previous record
        assert ids.index(parts[0].id) == ids.index(parts[-1].id) - len(parts) + 1
        # the train/val split is the document's, for every part and any fraction
        for fraction in (0.3, 0.5, 0.7):
            assert {split_of(p.id, fraction) for p in parts} == {
                split_of(f"o.jsonl:{line_no}", fraction)}
    word_parts = [d for d in docs if d.meta.get("part_of") == "o.jsonl:1"]
    assert word_parts[0].meta["pile_set_name"] == "ArXiv"
    assert all(p.text.endswith(" ") for p in word_parts[:-1])  # never cut mid-word
    line_parts = [d for d in docs if d.meta.get("part_of") == "o.jsonl:2"]
    assert all(p.text.endswith("\n") for p in line_parts[:-1])  # cut at line breaks
    assert skips.skipped == []
    assert [(e.item, e.action) for e in skips] == [("o.jsonl:1", "split"), ("o.jsonl:2", "split")]
    assert all(e.reason.startswith("oversized") for e in skips)

    drop = SkipLog()
    kept = list(read_corpus(path, max_chars=1000, oversized="drop", skips=drop))
    assert [d.id for d in kept] == ["o.jsonl:0", "o.jsonl:3"]
    assert [(e.item, e.action) for e in drop] == [("o.jsonl:1", "skip"), ("o.jsonl:2", "skip")]
    assert all(r.startswith("oversized") for r in reasons(drop))
    with pytest.raises(ValueError, match="oversized"):
        list(read_corpus(path, oversized="truncate"))


def test_oversized_txt_and_parquet_are_split(tmp_path: Path) -> None:
    (tmp_path / "long.txt").write_text("para\n" * 300)
    pq.write_table(pa.table({"text": ["short", "p" * 2500]}), tmp_path / "t.parquet")
    skips = SkipLog()
    docs = list(read_corpus(tmp_path, max_chars=1000, skips=skips))
    txt = [d for d in docs if d.meta.get("part_of") == "long.txt"]
    assert "".join(d.text for d in txt) == "para\n" * 300 and len(txt) == 2
    rows = [d for d in docs if d.meta.get("part_of") == "t.parquet:1"]
    assert [len(d.text) for d in rows] == [1000, 1000, 500]  # no whitespace: hard cuts
    assert len(skips.skipped) == 0 and len(skips) == 2


def test_parquet_batches_and_hostile_rows(tmp_path: Path) -> None:
    texts = [f"row {i}" for i in range(2500)] + [None, "", "ok \x00 nul"]
    table = pa.table({"text": texts, "lang": ["en"] * len(texts)})
    path = tmp_path / "p.parquet"
    pq.write_table(table, path, row_group_size=700)
    skips = SkipLog()
    docs = list(read_corpus(path, skips=skips))
    assert len(docs) == 2501
    assert docs[1234].id == "p.parquet:1234" and docs[1234].text == "row 1234"
    assert docs[0].meta == {"lang": "en"}
    assert docs[-1].text == "ok  nul"
    assert sorted(e.item for e in skips.skipped) == ["p.parquet:2500", "p.parquet:2501"]

    binary = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"text": pa.array([b"fine", b"\xff bad"], pa.binary())}), binary)
    skips = SkipLog()
    assert [d.text for d in read_corpus(binary, skips=skips)] == ["fine"]
    assert reasons(skips)[0].startswith("invalid UTF-8")

    nocol = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"body": ["x"]}), nocol)
    skips = SkipLog()
    assert list(read_corpus(nocol, skips=skips)) == []
    assert "no such column" in reasons(skips)[0]

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"definitely not parquet")
    skips = SkipLog()
    assert list(read_corpus(garbage, skips=skips)) == []
    assert reasons(skips)[0].startswith("unreadable parquet")


def test_mixed_directory(tmp_path: Path) -> None:
    write_zst(tmp_path / "a.jsonl.zst", pile_line("zst doc"))
    (tmp_path / "b.jsonl").write_bytes(pile_line("jsonl doc"))
    pq.write_table(pa.table({"text": ["parquet doc"]}), tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("txt doc")
    docs = list(read_corpus(tmp_path))
    assert [d.text for d in docs] == ["zst doc", "jsonl doc", "parquet doc", "txt doc"]
    assert len({d.id for d in docs}) == 4


def test_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(read_corpus(tmp_path / "missing.jsonl"))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported"):
        list(read_corpus(tmp_path / "x.csv"))
    with pytest.raises(ValueError, match="shard"):
        list(read_corpus(tmp_path, shard_index=2, num_shards=2))


@settings(max_examples=25, deadline=None)
@given(docs_per_file=st.lists(st.integers(0, 40), min_size=1, max_size=5),
       num_shards=st.integers(1, 7))
def test_sharding_is_a_partition(tmp_path_factory: pytest.TempPathFactory,
                                 docs_per_file: list[int], num_shards: int) -> None:
    root = tmp_path_factory.mktemp("shards")
    for f, n_docs in enumerate(docs_per_file):  # files of different sizes, some bad lines
        payload = b"".join(pile_line(f"doc {f}.{i}") if i % 9 else b"not json\n"
                           for i in range(n_docs))
        write_zst(root / f"s{f}.jsonl.zst", payload)
    (root / "t.txt").write_text("a text file")
    (root / "notes.csv").write_text("unsupported")
    full_skips = SkipLog()
    everything = [d.id for d in read_corpus(root, skips=full_skips)]
    shards, shard_skips = [], []
    for index in range(num_shards):
        skips = SkipLog()
        shards.append([d.id for d in read_corpus(root, shard_index=index,
                                                 num_shards=num_shards, skips=skips)])
        shard_skips.extend(e.item for e in skips)
    merged = [doc_id for shard in shards for doc_id in shard]
    assert sorted(merged) == sorted(everything)
    assert len(merged) == len(set(merged))
    assert sorted(shard_skips) == sorted(e.item for e in full_skips)
    again = [d.id for d in read_corpus(root, shard_index=0, num_shards=num_shards)]
    assert again == shards[0]


def test_shard_plan_gives_shards_files_not_the_whole_corpus() -> None:
    def held(plan):  # every (file, slice) -> the shards that read it
        out: dict = {}
        for shard, files in enumerate(plan):
            for source, (k, slices) in files.items():
                for j in slices:
                    out.setdefault((source, j, k), []).append(shard)
        return out

    # Many similar files: whole files, spread evenly, each read by one shard.
    files = [(f"{i:02d}.jsonl.zst", 1000 + i, True) for i in range(10)]
    plan = shard_plan(files, 4)
    assert all(k == 1 for p in plan for k, _ in p.values())
    assert sorted(len(p) for p in plan) == [2, 2, 3, 3]
    assert all(len(shards) == 1 for shards in held(plan).values())
    # One big file: a slice of it for every shard (the old line-hash sharding).
    plan = shard_plan([("pile.jsonl.zst", 10**9, True)], 5)
    assert [p["pile.jsonl.zst"] for p in plan] == [(5, frozenset({j})) for j in range(5)]
    # Fewer files than shards: the big file is cut into more slices; text files never are.
    plan = shard_plan([("big.jsonl", 900, True), ("small.jsonl", 100, True),
                       ("one.txt", 500, False)], 6)
    slices = held(plan)
    assert {s[2] for s in slices if s[0] == "big.jsonl"} == {4}  # ceil(6 * 900 / 1500)
    assert {(s[1], s[2]) for s in slices if s[0] == "one.txt"} == {(0, 1)}
    assert all(len(shards) == 1 for shards in slices.values())
    assert all(plan), "every shard gets some work"
    with pytest.raises(ValueError):
        shard_plan(files, 0)


def test_a_shard_opens_only_its_own_files(tmp_path: Path, monkeypatch) -> None:
    import data.corpus.reader as corpus

    for f in range(6):
        write_zst(tmp_path / f"{f}.jsonl.zst", b"".join(pile_line(f"d{f}.{i}") for i in range(5)))
    opened: list[str] = []
    real = corpus._READERS[".jsonl.zst"]
    monkeypatch.setitem(corpus._READERS, ".jsonl.zst",
                        lambda path, source, ctx: (opened.append(source), (yield from real(
                            path, source, ctx)))[1])
    docs = list(read_corpus(tmp_path, shard_index=1, num_shards=3))
    assert len(opened) == 2  # 6 files, 3 shards: two whole files each
    assert {d.id.split(":")[0] for d in docs} == set(opened) and len(docs) == 10


def test_clean_text_keeps_layout_characters() -> None:
    assert clean_text("a\tb\nc\rd\x0ce") == ("a\tb\nc\rd\x0ce", 0)
    assert clean_text("\x00x\x85y\x7f") == ("xy", 3)


def test_demo_corpus_deterministic_and_readable(tmp_path: Path) -> None:
    first = build_demo_corpus(tmp_path / "one", n_docs=12, max_chars_per_doc=3000)
    second = build_demo_corpus(tmp_path / "two", n_docs=12, max_chars_per_doc=3000)
    assert first.name == DEMO_FILE_NAME
    assert first.read_bytes() == second.read_bytes()
    other_seed = build_demo_corpus(tmp_path / "three", n_docs=12, max_chars_per_doc=3000, seed=1)
    assert other_seed.read_bytes() != first.read_bytes()

    skips = SkipLog()
    docs = list(read_corpus(first, skips=skips))
    assert len(docs) == 12 and len(skips) == 0
    for doc in docs:
        assert isinstance(doc, Document)
        assert doc.meta["pile_set_name"] == PILE_SET_NAME and doc.meta["module"]
        assert 0 < len(doc.text) <= 3000
        assert "\b" not in doc.text and " at 0x" not in doc.text
        assert "/site-packages/" not in doc.text and "FILE\n" not in doc.text


def test_demo_corpus_refuses_impossible_request(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only"):
        build_demo_corpus(tmp_path, n_docs=10**6)


def test_heldout_is_a_different_source(tmp_path: Path) -> None:
    held = heldout_texts(n=8, max_chars=1500)
    assert held == heldout_texts(n=8, max_chars=1500)
    assert len(held) == 8 and all(0 < len(t) <= 1500 for t in held)
    demo = build_demo_corpus(tmp_path, n_docs=20)
    demo_text = "\n".join(d.text for d in read_corpus(demo))
    assert not any(t[:200] in demo_text for t in held)


def test_split_text_bounds() -> None:
    pieces = split_text("line\n" * 100 + "x" * 50, 23)
    assert all(len(p) <= 23 for p in pieces)
    assert "".join(pieces) == "line\n" * 100 + "x" * 50


def test_cli_read_writes_skip_log(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    path = tmp_path / "c.jsonl"
    path.write_bytes(pile_line("fine") + b"{broken\n")
    res = CliRunner().invoke(app, ["corpus", "read", str(path), "--skips",
                                   str(tmp_path / "skips.jsonl")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["documents"] == 1
    assert "invalid JSON" in (tmp_path / "skips.jsonl").read_text()
    res = CliRunner().invoke(app, ["corpus", "demo", "--out", str(tmp_path / "demo"),
                                   "--n-docs", "3"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "demo" / DEMO_FILE_NAME).exists()


def test_typer_demo_command(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from data.cli import demo_corpus_command

    app = typer.Typer()
    app.command("demo")(demo_corpus_command)
    app.command("other")(lambda: None)  # two commands, so typer keeps the subcommand name
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--n-docs", "2"])
    assert result.exit_code == 0, result.output
    assert len(list(read_corpus(tmp_path / DEMO_FILE_NAME))) == 2


def test_id_field_names_documents_and_falls_back_to_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        (json.dumps({"text": "first", "id": "s1#instruction"}) + "\n"
         + json.dumps({"text": "second", "meta": {"id": "s1#context"}}) + "\n"
         + json.dumps({"text": "third"}) + "\n").encode())
    named = [d.id for d in read_corpus(path, id_field="id")]
    assert named[:2] == ["s1#instruction", "s1#context"]
    positional = [d.id for d in read_corpus(path)]
    assert named[2] == positional[2] and positional[0] != "s1#instruction"
