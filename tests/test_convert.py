"""The Ray conversion job (jobs/convert/) end to end on a tiny corpus and a tiny codec.

One local Ray session serves the whole module (Ray starts slowly on a small machine). The
job runs in-process against that session, and once as a real `python -m jobs.convert`
subprocess that joins it through RAY_ADDRESS and gets SIGKILLed partway.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import zstandard

from data.errors import BadInput, BadStore, UserError

try:
    from test_convert_fakes import SPEC, make_text, write_jsonl
except ImportError:  # pytest --import-mode=importlib
    from tests.test_convert_fakes import SPEC, make_text, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
N_PARTS = 4
# The reference run has a render actor beside the encoder actor (the GPU layout);
# test_render_in_encoder_gives_the_same_store checks the CPU default against it.
RUN = dict(num_parts=N_PARTS, batch_size=4, num_actors=1, progress_every=1.0,
           render_in_encoder=False)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # a session leaked by another module: ours needs PYTHONPATH
        ray.shutdown()
    # Workers (and drivers started by the tests) must import the tiny codec from tests/.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(ROOT), old) if p)
    # 4 logical CPUs on any machine: a worker (encoder + render actor), plus room for the
    # actors of a killed job that Ray has not reaped yet.
    ray.init(address="local", num_cpus=4, include_dashboard=False,
             _node_ip_address="127.0.0.1", object_store_memory=256 << 20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    texts = [make_text(i, 40 + 30 * i) for i in range(16)]
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", texts)


@pytest.fixture(scope="module")
def reference(ray_session, corpus, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted conversion of `corpus`."""
    from jobs.convert.driver import run_conversion

    out = tmp_path_factory.mktemp("ref") / "store"
    summary = run_conversion(corpus, out, codec=SPEC, **RUN)
    return out, summary


def source_docs(corpus: Path, **kw) -> dict[str, str]:
    from data.corpus import read_corpus

    return {d.id: d.text for d in read_corpus(corpus, **kw)}


def check_round_trip(out: Path, expected: dict[str, str]) -> None:
    """The store verifies and each document's page texts concatenate back to its source."""
    from data.store import Store

    store = Store(out)
    store.verify()
    assert sorted(store.doc_ids) == sorted(expected)
    for doc_id in store.doc_ids:
        records = store.page_records(doc_id)
        assert "".join(r.text for r in records) == expected[doc_id], doc_id
        assert [r.page for r in records] == list(range(len(records)))
        tokens = store.read_pages(doc_id, 0, len(records))
        assert tokens.shape == (store.meta.n * len(records), store.meta.D)


def manifest_parts(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["parts"]


def test_small_conversion(reference, corpus):
    out, summary = reference
    docs = source_docs(corpus)
    check_round_trip(out, docs)
    assert summary["docs"] == len(docs) == 16
    assert summary["pages"] == summary["manifest_totals"]["pages"] > 16
    assert summary["tokens"] == 16 * summary["pages"]
    assert summary["skips"] == 0 and (out / "skips.jsonl").read_text() == ""
    assert summary["parts_done"] == N_PARTS and summary["parts_resumed"] == 0
    assert summary["pages_per_s"] > 0 and summary["compression"]["text_to_visual_tokens"] > 0
    assert json.loads((out / "summary.json").read_text())["pages"] == summary["pages"]
    assert len(manifest_parts(out)) == N_PARTS


def test_rerun_resumes_everything(reference, corpus, tmp_path):
    from jobs.convert.driver import run_conversion

    ref_out, _ = reference
    out = tmp_path / "store"
    shutil.copytree(ref_out, out)
    summary = run_conversion(corpus, out, codec=SPEC, **RUN)
    assert summary["parts_resumed"] == N_PARTS and summary["pages_this_run"] == 0
    assert manifest_parts(out) == manifest_parts(ref_out)


def test_damaged_parts_are_redone(reference, corpus, tmp_path):
    """A part without its job record, a corrupt part and a crashed writer's leftovers."""
    from jobs.convert.driver import run_conversion
    from jobs.convert.pipeline import part_record_path

    ref_out, ref_summary = reference
    out = tmp_path / "store"
    shutil.copytree(ref_out, out)
    part_record_path(out, 1).unlink()
    index = out / "parts" / "part-00002" / "index.parquet"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    shutil.rmtree(out / "parts" / "part-00003")
    (out / "parts" / ".tmp-part-00003-deadbeef").mkdir()
    (out / "parts" / ".tmp-part-00003-deadbeef" / "junk").write_text("half a part")

    summary = run_conversion(corpus, out, codec=SPEC, **RUN)
    assert summary["parts_resumed"] == 1  # only part 0 was intact
    assert not list((out / "parts").glob(".tmp-*"))
    assert manifest_parts(out) == manifest_parts(ref_out)
    assert summary["pages"] == ref_summary["pages"]
    check_round_trip(out, source_docs(corpus))


def test_crashed_worker_is_replaced_and_its_part_redone(reference, corpus, tmp_path):
    from jobs.convert.driver import run_conversion

    marker = tmp_path / "crashed"
    out = tmp_path / "store"
    summary = run_conversion(corpus, out, codec=SPEC, **RUN,
                             codec_options=[f"crash_marker={marker}"])
    assert marker.exists()  # an encoder process did die
    assert summary["parts_done"] == N_PARTS and not summary["parts_failed"]
    assert manifest_parts(out) == manifest_parts(reference[0])


def test_worker_errors_reach_the_driver_as_themselves(ray_session, corpus, tmp_path):
    """A codec that cannot load in its actor, and a part that stops on a user's mistake,
    end the job with the worker's own error (one line at the command line), naming the part
    and the document it had reached; a bug keeps the worker's traceback."""
    from jobs.convert.driver import run_conversion

    with pytest.raises(BadInput, match="unknown codec 'nope'"):
        run_conversion(corpus, tmp_path / "a", codec="nope", num_parts=1)
    with pytest.raises(UserError, match=r"part 0 at document 'docs.jsonl:\d+': refused here"):
        run_conversion(corpus, tmp_path / "b", codec=SPEC, num_parts=1, batch_size=4,
                       codec_options=["refuse=refused here"])
    failed = json.loads((tmp_path / "b" / "summary.json").read_text())["parts_failed"]
    assert failed["0"]["doc"].startswith("docs.jsonl:") and "refused here" in failed["0"]["reason"]
    with pytest.raises(RuntimeError, match="ZeroDivisionError") as bug:
        run_conversion(corpus, tmp_path / "c", codec=SPEC, num_parts=1, batch_size=4,
                       max_retries=0, codec_options=["bug=true"])
    assert not isinstance(bug.value, UserError) and "Traceback" in str(bug.value)


def test_render_in_encoder_gives_the_same_store(reference, corpus, tmp_path):
    """One process a worker (--render-in-encoder): the same bytes; a crash is survived too."""
    from jobs.convert.driver import run_conversion

    marker = tmp_path / "crashed"
    out = tmp_path / "store"
    summary = run_conversion(corpus, out, codec=SPEC, **{**RUN, "render_in_encoder": None},
                             codec_options=[f"crash_marker={marker}"])
    assert marker.exists()
    assert summary["workers"]["render_in_encoder"] and summary["workers"]["render_cpus"] == 0
    assert summary["render_cpu_seconds"] is None and summary["encoder_cpu_seconds"] > 0
    assert summary["parts_done"] == N_PARTS and not summary["parts_failed"]
    assert manifest_parts(out) == manifest_parts(reference[0])


def test_changed_settings_are_refused(reference, corpus, tmp_path):
    from jobs.convert.driver import run_conversion

    out = tmp_path / "store"
    shutil.copytree(reference[0], out)
    with pytest.raises(BadStore, match="other settings"):
        run_conversion(corpus, out, codec=SPEC, **{**RUN, "batch_size": 3})
    # The corpus changed since: its documents would go to other parts.
    grown = tmp_path / "grown"
    grown.mkdir()
    shutil.copy(corpus, grown / corpus.name)
    with (grown / corpus.name).open("a") as fh:
        fh.write(json.dumps({"text": "one more document"}) + "\n")
    (out / "_convert" / "plan.json").write_text(
        (out / "_convert" / "plan.json").read_text().replace(str(corpus), str(grown / corpus.name)))
    with pytest.raises(BadStore, match="corpus_files"):
        run_conversion(grown / corpus.name, out, codec=SPEC, **RUN)


def test_kill_and_resume(ray_session, reference, corpus, tmp_path):
    """SIGKILL a `python -m jobs.convert` partway; the resumed store equals the reference."""
    from jobs.convert.driver import run_conversion
    from jobs.convert.pipeline import part_record_path

    out = tmp_path / "store"
    log = tmp_path / "job.log"
    env = dict(os.environ, RAY_ADDRESS=ray_session)
    cmd = [sys.executable, "-m", "jobs.convert", "--corpus", str(corpus), "--out", str(out),
           "--codec", SPEC, "--codec-option", "delay=0.3", "--num-parts", str(N_PARTS),
           "--batch-size", "4", "--progress-every", "0.5"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not part_record_path(out, 0).exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no part finished in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # a hard kill: no cleanup code runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    import ray

    # Ray reaps the dead driver's actors on its own; give it a moment to free their CPUs.
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    done_before = [p for p in range(N_PARTS) if part_record_path(out, p).exists()]
    assert 1 <= len(done_before) < N_PARTS, "the kill did not land partway"
    assert not (out / "summary.json").exists() and not (out / "manifest.json").exists()
    text = log.read_text()
    assert "pages/s" in text and "ETA" in text

    summary = run_conversion(corpus, out, codec=SPEC, **RUN)
    assert summary["parts_resumed"] == len(done_before)
    assert manifest_parts(out) == manifest_parts(reference[0])
    assert (out / "skips.jsonl").read_text() == (reference[0] / "skips.jsonl").read_text()
    check_round_trip(out, source_docs(corpus))


TOKEN_AUTH_WARNING = "Token authentication is"  # "... enabled/disabled for this Ray cluster"


def test_local_ray_starts_without_the_token_auth_warning(corpus, tmp_path):
    """The job's own local Ray (no RAY_ADDRESS, RAY_AUTH_MODE unset) is quiet about auth.

    Ray 2.60 turns token authentication on for a new local cluster when RAY_AUTH_MODE is
    unset, and says so in a WARNING on every run.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT)])
    cmd = [sys.executable, "-m", "jobs.convert", "--corpus", str(corpus), "--out",
           str(tmp_path / "store"), "--codec", SPEC, "--num-parts", "1", "--num-cpus", "1"]
    job = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-3000:]
    assert "[convert] done" in output
    assert TOKEN_AUTH_WARNING not in output, output[-3000:]


# ------------------------------------------------------------------------------ hostile input


def hostile_corpus(root: Path) -> tuple[Path, set[str], set[str]]:
    """A corpus directory full of bad records; returns it, ids that must be skipped, and
    ids that must be repaired."""
    root.mkdir(parents=True)
    good = [make_text(100 + i, 60) for i in range(3)]
    long_ok = make_text(7, 2000)  # ~14k chars: many pages, within max_chars
    lines: list[bytes] = [
        json.dumps({"text": good[0]}).encode(),
        b'{"text": "caf\xc3 invalid utf-8"}',  # 1 invalid UTF-8
        b'{"text": "unterminated',  # 2 invalid JSON
        json.dumps({"text": ""}).encode(),  # 3 empty
        json.dumps({"text": " \n\t "}).encode(),  # 4 whitespace only
        b'{"text": "\\ud800 lone surrogate"}',  # 5 lone surrogate
        b"[1, 2, 3]",  # 6 not an object
        json.dumps({"meta": {"x": 1}}).encode(),  # 7 no text field
        json.dumps({"text": 12345}).encode(),  # 8 text not a string
        json.dumps({"text": "bell\x07 nul\x00 esc\x1b and more " + good[1]}).encode(),  # 9 repaired
        json.dumps({"text": "x" * 50_000}).encode(),  # 10 huge: over max_chars, split
        json.dumps({"text": long_ok}).encode(),  # 11 long but fine
        b"",  # 12 blank line
        # 13: CJK is drawn (the shipped CJK font); no font has the emoji U+1F389
        json.dumps({"text": "CJK \u4e2d\u6587 and emoji \U0001F389 " + good[2]}).encode(),
    ]
    (root / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    skipped = {f"mixed.jsonl:{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 12)}
    repaired = {"mixed.jsonl:9"}
    (root / "bad.txt").write_bytes(b"plain text \xff\xfe not utf-8")
    skipped.add("bad.txt")
    (root / "blob.bin").write_bytes(bytes(range(256)))
    skipped.add("blob.bin")
    whole = zstandard.ZstdCompressor().compress(
        b"\n".join(json.dumps({"text": make_text(200 + i, 50)}).encode() for i in range(40)))
    (root / "broken.jsonl.zst").write_bytes(whole[: len(whole) // 2])  # truncated stream
    return root, skipped, repaired


def test_hostile_corpus(ray_session, tmp_path):
    from data.corpus import document_id
    from jobs.convert.driver import run_conversion

    corpus, skipped, repaired = hostile_corpus(tmp_path / "hostile")
    out = tmp_path / "store"
    summary = run_conversion(corpus, out, codec=SPEC, num_parts=2, batch_size=8,
                             max_chars=20_000, progress_every=1.0)
    records = [json.loads(line) for line in (out / "skips.jsonl").read_text().splitlines()]
    assert all(r["reason"] for r in records)
    skip_ids = {r["item"] for r in records if r["action"] == "skip"}
    # Every bad record is recorded (the truncated stream by its file and line).
    assert skipped <= skip_ids
    assert any(r["source"] == "broken.jsonl.zst" and "corrupt" in r["reason"] for r in records)
    assert repaired <= {r["item"] for r in records if r["action"] == "repair"}
    # Glyphs no font has are reported, and their pages kept.
    assert any(r["item"] == "mixed.jsonl:13" and r["action"] == "report" for r in records)
    docs = source_docs(corpus, max_chars=20_000)
    assert {"mixed.jsonl:0", "mixed.jsonl:9", "mixed.jsonl:11", "mixed.jsonl:13"} <= set(docs)
    assert not skip_ids & set(docs)
    # The oversized record is split into parts (recorded), not lost.
    assert any(r["item"] == "mixed.jsonl:10" and r["action"] == "split" for r in records)
    assert "".join(docs[f"mixed.jsonl:10#part-00{k}"] for k in range(3)) == "x" * 50_000
    # Nothing vanished silently: every record is either in the store or a recorded skip.
    assert {f"mixed.jsonl:{i}" for i in range(14)} <= {document_id(d) for d in docs} | skip_ids
    check_round_trip(out, docs)
    assert summary["docs"] == len(docs)
    assert summary["skips"] == len([r for r in records if r["action"] == "skip"])


def test_registered_codec_by_name(ray_session, tmp_path):
    """The registry path (`--codec mini` + a factory option) on the codec's own page."""
    from jobs.convert.driver import run_conversion

    corpus = write_jsonl(tmp_path / "c.jsonl", [make_text(i, 150) for i in range(3)])
    out = tmp_path / "store"
    summary = run_conversion(corpus, out, codec="mini", codec_options=["random_init=true"],
                             num_parts=1, batch_size=4, layout="npy", dtype="bfloat16")
    check_round_trip(out, source_docs(corpus))
    meta = json.loads((out / "store.json").read_text())
    assert (meta["codec_name"], meta["layout"], meta["dtype"]) == ("mini", "npy", "bfloat16")
    assert summary["tokens"] == summary["pages"] * meta["n"]


def test_render_failure_drops_the_whole_document(monkeypatch, tmp_path):
    """A document whose rendering fails after some pages were sent is dropped and recorded."""
    import render

    from jobs.convert.pipeline import render_part_stream

    try:
        from test_convert_fakes import TINY_PAGE
    except ImportError:
        from tests.test_convert_fakes import TINY_PAGE

    texts = [make_text(1, 300), make_text(2, 40)]
    corpus = write_jsonl(tmp_path / "c.jsonl", texts)
    real = render.rasterize
    calls = {"n": 0}

    def flaky(page, config):
        calls["n"] += 1
        if calls["n"] == 5:  # inside the first document, after its first chunk went out
            raise MemoryError("simulated")
        return real(page, config)

    monkeypatch.setattr(render, "rasterize", flaky)
    msgs = list(render_part_stream(str(corpus), 0, 1, {}, TINY_PAGE, 2))
    kinds = [(m[0], m[1]) for m in msgs[:-1]]
    assert ("drop", "c.jsonl:0") in kinds
    assert kinds[-1] == ("pages", "c.jsonl:1")
    done = msgs[-1]
    assert done[0] == "done" and done[1] == 2
    assert [s["item"] for s in done[2]] == ["c.jsonl:0"]
    assert "MemoryError" in done[2][0]["reason"]


def test_one_part_without_ray(corpus, tmp_path, monkeypatch):
    """The per-part pipeline converts a part in this process, with Ray unimportable."""
    from codec import load_codec
    from data.store import StoreMeta, consolidate, create_store, verify_part
    from jobs.convert.config import ConvertConfig
    from jobs.convert.pipeline import (codec_info, convert_part, part_record_path,
                                       store_meta)

    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now raises ImportError
    cfg = ConvertConfig(str(corpus), str(tmp_path / "store"), codec=SPEC, num_parts=N_PARTS,
                        batch_size=4)
    codec = load_codec(cfg.codec, options=cfg.codec_options)
    meta = store_meta(cfg, codec_info(codec), codec.render_config)
    create_store(cfg.out, StoreMeta.from_json(meta))
    result = convert_part(cfg, 1, codec, codec.render_config, meta)

    expected = source_docs(corpus, shard_index=1, num_shards=N_PARTS)
    assert verify_part(cfg.out, 1)["docs"] == result.docs == len(expected) > 0
    assert result.pages > result.docs and result.skips == []
    assert json.loads(part_record_path(Path(cfg.out), 1).read_text())["pages"] == result.pages
    consolidate(cfg.out)
    check_round_trip(Path(cfg.out), expected)


def test_render_mode_follows_the_encoders_device():
    from jobs.convert.config import ConvertConfig

    assert ConvertConfig("c", "o").render_in_encoder  # CPU encoders render their own parts
    assert ConvertConfig("c", "o").render_actor_cpus == 0
    assert not ConvertConfig("c", "o", gpus_per_actor=0.5).render_in_encoder
    assert ConvertConfig("c", "o", gpus_per_actor=0.5).render_actor_cpus == 1.0
    assert not ConvertConfig("c", "o", render_in_encoder=False).render_in_encoder
    assert ConvertConfig("c", "o", gpus_per_actor=1, render_in_encoder=True).render_in_encoder


def test_oversized_reaches_the_reader():
    """--oversized goes to read_corpus on every run, and only known values are taken."""
    from jobs.convert.config import ConvertConfig

    assert ConvertConfig("c", "o").read_kwargs()["oversized"] == "split"
    assert ConvertConfig("c", "o", oversized="drop").read_kwargs()["oversized"] == "drop"
    with pytest.raises(ValueError, match="oversized"):
        ConvertConfig("c", "o", oversized="truncate")


def test_codec_options_parse():
    from codec import parse_codec_options

    assert parse_codec_options(["delay=0.5", "random_init=true", "name=x"]) == {
        "delay": 0.5, "random_init": True, "name": "x"}
    with pytest.raises(ValueError):
        parse_codec_options(["novalue"])


def test_shards_cover_the_corpus(corpus):
    """Parts are corpus shards: together they hold every document exactly once."""
    from data.corpus import read_corpus

    ids = [d.id for p in range(N_PARTS) for d in read_corpus(corpus, shard_index=p,
                                                               num_shards=N_PARTS)]
    assert sorted(ids) == sorted(source_docs(corpus))
    assert len({zlib.crc32(i.encode()) % N_PARTS for i in ids}) > 1  # really split
    assert all(zlib.crc32(d.id.encode()) % N_PARTS == p  # one file: a slice of it per part
               for p in range(N_PARTS) for d in read_corpus(corpus, shard_index=p,
                                                            num_shards=N_PARTS))


def test_one_job_per_store(corpus, tmp_path):
    import fcntl

    from jobs.convert.driver import run_conversion
    from jobs.convert.pipeline import STATE_DIR

    out = tmp_path / "store"
    (out / STATE_DIR).mkdir(parents=True)
    with (out / STATE_DIR / "lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running job would
        with pytest.raises(BadStore, match="another conversion"):
            run_conversion(corpus, out, codec=SPEC, **RUN)


def test_cli_mounts_and_lists_the_flags():
    import typer
    from typer.testing import CliRunner

    from jobs.convert.cli import convert

    app = typer.Typer()
    app.command("convert")(convert)
    app.command("noop")(lambda: None)  # two commands: `convert` is a subcommand, as in `vst`
    result = CliRunner().invoke(app, ["convert", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for flag in ("--corpus", "--out", "--codec", "--codec-path", "--codec-mode",
                 "--trust-remote-code", "--render-preset", "--num-actors", "--cpus-per-actor",
                 "--gpus-per-actor", "--batch-size", "--num-parts", "--render-in-encoder",
                 "--render-actors", "--codec-option", "--oversized"):
        assert flag in result.output


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_ray_job_submit(corpus, tmp_path):
    """The cluster path: `ray start --head` on 127.0.0.1, then `ray job submit` of the job."""
    import tempfile
    import urllib.request

    ray_bin = Path(sys.executable).with_name("ray")
    gcs, dash, client, agent, metrics = _free_ports(5)
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    # As in an activated venv: the job's `python` entrypoint is this interpreter, not /usr/bin's.
    env["PATH"] = os.pathsep.join([str(ray_bin.parent), env.get("PATH", "")])
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
         f"--metrics-export-port={metrics}", "--num-cpus=2", "--disable-usage-stats",
         "--include-dashboard=true", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 120
        while True:  # the job server answers once the dashboard is up
            assert head.poll() is None, "ray start exited"
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray dashboard did not come up"
                time.sleep(1)
        out = tmp_path / "store"
        job = subprocess.run(
            [str(ray_bin), "job", "submit", "--working-dir", str(ROOT), "--runtime-env-json",
             json.dumps({"env_vars": {"PYTHONPATH": "tests"}}), "--",
             "python", "-m", "jobs.convert", "--corpus", str(corpus), "--out", str(out),
             "--codec", SPEC, "--num-parts", "2", "--batch-size", "4",
             "--cpus-per-actor", "0.5", "--render-cpus", "0.5"],
            env=dict(env, RAY_ADDRESS=address), cwd=ROOT, capture_output=True, text=True,
            timeout=300)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "[convert] done" in job.stdout
        check_round_trip(out, source_docs(corpus))
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


_ENCODE_FAULTS = """
import resource, sys, threading
import numpy as np, torch
from codec import load_codec
from jobs.convert.pipeline import keep_freed_memory
from render import paginate, rasterize
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.set_num_threads(1)
codec = load_codec("mini", random_init=True)
cfg = codec.render_config
pages = np.stack([rasterize(p, cfg) for p in list(paginate("Pages of text. " * 2000, cfg))[:8]])
result = {}
def encode():  # on a thread other than the main one, as in a Ray actor
    codec.encode(pages)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        codec.encode(pages)
    result["faults"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 80
thread = threading.Thread(target=encode)
thread.start(); thread.join()
print(kept, result["faults"])
"""


def test_workers_keep_freed_memory():
    """An encoder batch after batch should not page-fault its buffers in again each time."""
    def faults_a_page(mode: str) -> tuple[str, float]:
        out = subprocess.run([sys.executable, "-c", _ENCODE_FAULTS, mode], cwd=ROOT,
                             capture_output=True, text=True, timeout=300, check=True)
        kept, faults = out.stdout.split()[-2:]
        return kept, float(faults)

    kept, kept_faults = faults_a_page("keep")
    if kept == "False":
        pytest.skip("no glibc mallopt here")
    _, default_faults = faults_a_page("default")
    if default_faults < 50:
        pytest.skip(f"this libc does not fault freed buffers in again ({default_faults:.0f}/page)")
    assert kept == "True" and kept_faults < default_faults / 3, (kept_faults, default_faults)
