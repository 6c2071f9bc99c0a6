"""The local corpus builder (`vst corpus build`), on a fake tree of documentation packages."""

import gzip
import hashlib
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data.corpus import read_corpus, split_of
from data.corpus.build import HELDOUT_FILE, TRAIN_FILE, build_corpus
from data.corpus.text import html_to_text, is_translation, normalise, pod_to_text, split_parts

WORDS = ("the kernel schedules every task on a runqueue and the scheduler picks which one "
         "runs next while interrupts and timers keep the clock moving forward ").split()


def prose(seed: int, n_chars: int = 1500) -> str:
    """Distinct English-looking text (seeded word order), about n_chars long, in lines."""
    words, i = [], seed
    while sum(len(w) + 1 for w in words) < n_chars:
        i = (i * 1103515245 + 12345) % 2**31
        words.append(WORDS[i % len(WORDS)])
    lines = [" ".join(words[k:k + 12]) for k in range(0, len(words), 12)]
    return f"Title {seed}\n========\n\n" + "\n".join(lines) + "\n"


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def fake_tree(root: Path) -> dict:
    py = root / "python"
    write(py / "library/os.rst.txt", prose(1))
    write(py / "library/os_again.rst.txt", prose(1) + "\n\n\n\n   \n")  # dup once normalised
    write(py / "library/json.rst.txt", prose(2))
    write(py / "genindex.rst.txt", prose(3))                             # generated index
    write(py / "contents.rst.txt", "Contents\n========\n\n.. toctree::\n\n"
          + "".join(f"   library/mod{i}.rst\n" for i in range(80)))     # toctree only
    write(py / "_images/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(600))     # non-text
    write(py / "tiny.rst.txt", "Too short.\n")
    write(py / "library/gnu.rst.txt", "Chapter\xa01.\xa0GNU\n\n" + prose(13))  # = held-out text
    lx = root / "linux"
    write(lx / "admin-guide/intro.rst.gz", prose(4))
    write(lx / "big.txt", prose(5, 9000))                                 # becomes parts
    write(lx / "translations/it_IT/intro.rst", prose(6))
    write(lx / "zh_CN/howto.rst", prose(7))
    write(lx / "cjk.rst", "内核文档" * 300)                               # not English
    write(lx / "bindings/foo.yaml", prose(8))                             # not prose
    write(lx / "ABI/testing/sysfs-class-foo", prose(9))
    write(lx / "dup-of-json.rst", prose(2))                               # = python's json
    pl = root / "perl"
    write(pl / "pod/perlintro.pod", "=head1 NAME\n\nperlintro - B<a> I<brief> intro\n\n"
          "=head1 DESCRIPTION\n\n" + prose(10) + "\n=cut\n")
    write(pl / "Foo.pm", "package Foo;\nsub x { 1 }\n1;\n__END__\n\n=head1 NAME\n\nFoo - "
          "C<< $a <=> $b >> and L<perlfunc/sort>\n\n=head1 DESCRIPTION\n\n" + prose(11))
    dr = root / "debref"
    write(dr / "debian-reference.en.txt.gz", "Debian Reference\n\nTable of Contents\n\n"
          "Preface\n1. GNU\n\nPreface\n\n" + prose(12) + "\nChapter\xa01.\xa0GNU\n\n"
          + prose(13) + "\nAppendix\xa0A.\xa0Appendix\n\n" + prose(16))
    write(dr / "debian-reference.ja.txt.gz", prose(14))
    write(dr / "ch01.en.html", "<html><body><p>" + prose(15) + "</p></body></html>")
    return {"python-docs": py, "linux-docs": lx, "perl-docs": pl, "debian-reference": dr,
            "postgresql-docs": root / "not-installed", "pydoc": "json,platform"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    roots = fake_tree(tmp / "src")
    manifest = build_corpus(tmp / "out", roots=roots, val_fraction=0.4, max_part_chars=2500,
                            log=lambda m: None)
    train = list(read_corpus(tmp / "out" / TRAIN_FILE))
    held = list(read_corpus(tmp / "out" / HELDOUT_FILE))
    return tmp, roots, manifest, train, held


def test_every_record_has_pile_fields_and_the_store_reads_them(built):
    _, _, manifest, train, held = built
    licences = {n: s["licence"] for n, s in manifest["sources"].items()}
    assert len(train) == manifest["files"][TRAIN_FILE]["records"] > 8
    for doc in train + held:
        assert doc.meta["licence"] == licences[doc.meta["pile_set_name"]]
        assert doc.meta["id"].startswith(doc.meta["pile_set_name"] + "/")
    ids = [d.meta["id"] for d in train + held]
    assert len(set(ids)) == len(ids)
    assert {d.meta["pile_set_name"] for d in train} == {"python-docs", "linux-docs",
                                                        "perl-docs", "pydoc"}


def test_heldout_source_and_heldout_documents_are_disjoint_and_follow_split_of(built):
    _, _, manifest, train, held = built
    assert {d.meta["pile_set_name"] for d in held} == {"debian-reference"}
    assert not {d.text for d in held} & {d.text for d in train}
    val = [d for d in train if split_of(d.id, 0.4) == "val"]
    assert all(d.meta["split"] == split_of(d.id, 0.4) for d in train)
    assert 0 < len(val) < len(train)
    assert len(val) == manifest["totals"]["val_records"]
    assert sum(len(d.text) for d in val) == manifest["totals"]["val_characters"]
    # the chapters of the book, front matter without its table of contents
    assert [d.meta["id"] for d in held] == [
        "debian-reference/debian-reference.en.txt.gz#chapter-00",
        "debian-reference/debian-reference.en.txt.gz#chapter-01",
        "debian-reference/debian-reference.en.txt.gz#chapter-02"]
    assert "Table of Contents" not in held[0].text and "Title 12" in held[0].text


def test_duplicates_removed_and_counted(built):
    _, _, manifest, train, held = built
    src = manifest["sources"]
    assert src["python-docs"]["duplicates_removed"] == 2  # os_again, and gnu: held out first
    assert src["linux-docs"]["duplicates_removed"] == 1   # across sources
    assert src["debian-reference"]["duplicates_removed"] == 0
    assert manifest["totals"]["duplicates_removed"] == 3
    texts = [d.text for d in train + held]
    assert len(set(texts)) == len(texts)
    assert sum(normalise(prose(1)) == t for t in texts) == 1


def test_translations_indexes_and_non_text_are_filtered(built):
    _, _, manifest, train, _ = built
    src = manifest["sources"]
    assert src["python-docs"]["filtered"] == {"index": 2, "non-text": 1, "tiny": 1}
    assert src["linux-docs"]["filtered"] == {"non-english": 1, "other-format": 1,
                                             "translation": 2}
    assert src["debian-reference"]["filtered"] == {"other-format": 1, "translation": 1}
    paths = {d.meta["path"] for d in train}
    assert "ABI/testing/sysfs-class-foo" in paths and "admin-guide/intro.rst.gz" in paths
    assert not any("translations" in p or "zh_CN" in p or "genindex" in p or ".png" in p
                   for p in paths)


def test_long_documents_become_ordered_parts_losing_nothing(built):
    _, _, manifest, train, _ = built
    parts = [d for d in train if d.meta["path"] == "big.txt"]
    assert len(parts) >= 4 and all(len(p.text) <= 2500 for p in parts)
    assert [p.meta["id"] for p in parts] == [f"linux-docs/big.txt#part-{k:03d}"
                                             for k in range(len(parts))]
    assert "".join(p.text for p in parts) == normalise(prose(5, 9000))
    assert manifest["sources"]["linux-docs"]["split_documents"] == 1


def test_pod_and_pydoc_sources_give_text(built):
    _, _, _, train, _ = built
    by_path: dict[str, str] = {}
    for d in train:  # parts of one document are consecutive records
        by_path[d.meta["path"]] = by_path.get(d.meta["path"], "") + d.text
    assert by_path["pod/perlintro.pod"].startswith("NAME\n\nperlintro - a brief intro")
    assert "$a <=> $b and sort in perlfunc" in by_path["Foo.pm"]
    assert "sub x" not in by_path["Foo.pm"]
    assert "JSON (JavaScript Object Notation)" in by_path["json"]
    # machine-specific default values are scrubbed (platform.architecture(executable=...))
    assert "architecture(executable='<python>'" in by_path["platform"]
    assert sys.executable not in by_path["platform"]


def test_missing_source_is_reported_not_fatal(built):
    _, _, manifest, _, _ = built
    pg = manifest["sources"]["postgresql-docs"]
    assert pg["found"] is False and pg["documents"] == 0
    assert "apt-get install postgresql-doc-15" in pg["reason"]


def test_output_is_deterministic(built, tmp_path):
    tmp, roots, manifest, _, _ = built
    again = build_corpus(tmp_path, roots=roots, val_fraction=0.4, max_part_chars=2500,
                         log=lambda m: None)
    for name in (TRAIN_FILE, HELDOUT_FILE):
        assert again["files"][name]["sha256"] == manifest["files"][name]["sha256"]
        digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert digest == manifest["files"][name]["sha256"]


def test_caps_and_source_choice(built, tmp_path):
    _, roots, _, _, _ = built
    m = build_corpus(tmp_path, roots=roots, sources=["python-docs", "linux-docs"],
                     max_docs=1, log=lambda m: None)
    assert list(m["sources"]) == ["python-docs", "linux-docs"] and m["heldout_source"] is None
    assert [s["documents"] for s in m["sources"].values()] == [1, 1]
    assert all(s["capped"] for s in m["sources"].values())
    with pytest.raises(ValueError, match="unknown corpus source"):
        build_corpus(tmp_path, roots=roots, sources=["nope"], log=lambda m: None)


def test_cli_prints_the_table_and_the_apt_name_of_a_missing_package(built, tmp_path):
    from jobs.cli import app

    _, roots, _, _, _ = built
    args = ["corpus", "build", "--out", str(tmp_path), "--sources",
            "python-docs,postgresql-docs,debian-reference"]
    for name in ("python-docs", "postgresql-docs", "debian-reference"):
        args += ["--root", f"{name}={roots[name]}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "NO: apt-get install postgresql-doc-15" in result.output
    assert "held-out" in result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["sources"]["python-docs"]["documents"] == 2


def test_text_helpers():
    text, link_share = html_to_text(
        "<html><head><title>t</title><script>var x=1;</script></head><body>"
        "<div class='navheader'><a href='a'>Prev</a></div><p>Hello <b>world</b>.</p>"
        "<pre>  code\n    kept</pre><ul><li><a href='x'>link</a></li></ul></body></html>")
    assert "var x" not in text and "Prev" not in text and "Hello world." in text
    assert "  code\n    kept" in text and 0 < link_share < 0.5
    assert is_translation("translations/ja_JP/a.rst") and is_translation("x/ko_KR/a.rst")
    assert is_translation("ch01.ja.html") and not is_translation("mm/io/page.rst")
    assert pod_to_text("=over\n\n=item *\n\nE<lt>tagE<gt> X<idx>here\n\n=back\n") == \
        "* <tag> here\n"
    assert pod_to_text("=head1 A\n\n=over 4\n\n=item B<opt>\n\nSets it.\n\n=back\n") == \
        "A\n\nopt\n\n    Sets it.\n"
    text = "a\n\nb" * 50_000
    assert "".join(split_parts(text, 1000)) == text
