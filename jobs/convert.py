"""Convert a corpus into a visual-token store with Ray: read -> render -> encode -> write.

Laptop (starts a local Ray on 127.0.0.1 when RAY_ADDRESS is unset):

    python -m jobs.convert --corpus corpus.jsonl.zst --out runs/store --codec mini

Cluster (the job connects to the cluster named by the RAY_ADDRESS the job server sets):

    RAY_AUTH_MODE=disabled ray start --head --node-ip-address=127.0.0.1 --disable-usage-stats
    RAY_AUTH_MODE=disabled ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.convert --corpus /abs/corpus --out /abs/store --codec mini \\
        --render-preset mini --num-actors 4 --gpus-per-actor 1

(`--corpus` and `--out` must be absolute paths on storage every node sees when the job is
submitted: a submitted job runs inside an unpacked copy of the working dir.)

How the work is split (why it is resumable): corpus shard i (`read_corpus(shard_index=i,
num_shards=--num-parts)`) becomes store part i. Each part is converted by one encoder actor,
which holds the frozen codec, streams rendered pages from a CPU render task started for that
part (rendering of later pages overlaps encoding of earlier ones), encodes fixed batches
counted from the start of the part, and writes the part. A part is done when its store part
verifies and its record `_convert/part-NNNNN.json` exists (written last). A re-run skips
done parts and redoes the others from scratch, so an interrupted run finishes with the same
store (same checksums) as an uninterrupted one. Bad documents become entries of
`skips.jsonl`; `summary.json` has the totals.

Also importable: `run_conversion(corpus, out, ...) -> summary dict`, and `convert`, the
typer command mounted as `vst convert`.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

PLAN_VERSION = 1
STATE_DIR = "_convert"  # the job's own bookkeeping, next to the store's files
SKIPS_FILE = "skips.jsonl"
SUMMARY_FILE = "summary.json"


# --------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ConvertConfig:
    """Everything that defines a conversion. Fields in `plan_fields()` fix the output bytes."""

    corpus: str
    out: str
    codec: str = "mini"  # a registered name, or "package.module:factory" for other codecs
    codec_path: Optional[str] = None
    codec_mode: Optional[str] = None
    trust_remote_code: bool = False
    render_preset: Optional[str] = None  # default: the page geometry the codec expects
    num_parts: int = 8
    num_actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    render_cpus: float = 1.0
    batch_size: int = 16
    layout: str = "zarr"
    text_field: str = "text"
    max_chars: Optional[int] = None  # None: read_corpus's default limit
    max_retries: int = 2
    progress_every: float = 5.0
    overwrite: bool = False
    num_cpus: Optional[int] = None  # logical CPUs of a *local* Ray; ignored on a cluster

    def codec_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.codec_path is not None:
            kw["path"] = self.codec_path
        if self.codec_mode is not None:
            kw["mode"] = self.codec_mode
        if self.trust_remote_code:
            kw["trust_remote_code"] = True
        return kw

    def read_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"text_field": self.text_field}
        if self.max_chars is not None:
            kw["max_chars"] = self.max_chars
        return kw


@dataclass
class PartResult:
    """What one converted part contributed; stored as `_convert/part-NNNNN.json`."""

    part: int
    docs: int = 0
    pages: int = 0
    visual_tokens: int = 0
    chars: int = 0
    text_tokens: int = 0
    text_bytes: int = 0
    skips: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    encode_seconds: float = 0.0
    peak_rss_mb: float = 0.0  # encoder actor process
    render_peak_rss_mb: float = 0.0  # render task process


# --------------------------------------------------------------------------------------
# Small helpers


def part_record_path(out: Path, part: int) -> Path:
    return out / STATE_DIR / f"part-{part:05d}.json"


def _atomic_write_text(path: Path, text: str) -> None:
    # Write-then-rename so a kill never leaves a half-written record that looks complete.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def build_codec(spec: str, **kwargs: Any):
    """`load_codec(spec, **kwargs)`, or `module:factory` for a codec outside the registry."""
    if ":" in spec:
        import importlib

        module, _, attr = spec.partition(":")
        return getattr(importlib.import_module(module), attr)(**kwargs)
    from codec import load_codec

    return load_codec(spec, **kwargs)


def _fmt_eta(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------------------
# Stage 1: read + render (a CPU task per part, streaming its pages)


def render_part_stream(corpus: str, part: int, num_parts: int, read_kwargs: dict,
                       render_config, chunk_pages: int) -> Iterator[tuple]:
    """Messages for one part, in corpus order:

    ("pages", doc_id, records, images, last)  records: page dicts; images uint8 [k, H, W, 3]
    ("drop", doc_id, reason)                  a document that failed after pages were sent
    ("done", docs_read, skips, peak_rss_mb)   skips: dicts of data.corpus.Skip
    """
    import numpy as np

    from data.corpus import SkipLog, read_corpus
    from render import paginate, rasterize

    from codec.base import cl100k

    tokenizer = cl100k()
    skips = SkipLog()
    docs_read = 0
    for doc in read_corpus(corpus, shard_index=part, num_shards=num_parts, skips=skips,
                           **read_kwargs):
        docs_read += 1
        source = doc.id.rsplit(":", 1)[0]
        try:
            # Lay out the whole document first: a document that cannot be typeset is
            # skipped before any of its pages leave this task.
            pages = list(paginate(doc.text, render_config))
            if not pages:
                skips.add(source, doc.id, "render: no pages")
                continue
        except Exception as err:  # noqa: BLE001 - any failure of one document is a skip
            skips.add(source, doc.id, f"render failed: {type(err).__name__}: {err}")
            continue
        missing = sorted({g for p in pages for g in (getattr(p, "missing_glyphs", None) or ())})
        if missing:
            # Not dropped: the page is kept, and the characters without a glyph are reported.
            skips.add(source, doc.id, f"missing glyphs: {''.join(missing)[:200]!r}", "report")
        sent = 0
        try:
            for start in range(0, len(pages), chunk_pages):
                chunk = pages[start:start + chunk_pages]
                images = np.stack([rasterize(p, render_config) for p in chunk])
                records = [_page_record(doc, p, tokenizer) for p in chunk]
                last = start + chunk_pages >= len(pages)
                yield ("pages", doc.id, records, images, last)
                sent += len(chunk)
        except Exception as err:  # noqa: BLE001
            reason = f"render failed: {type(err).__name__}: {err}"
            skips.add(source, doc.id, reason)
            if sent:
                yield ("drop", doc.id, reason)
    yield ("done", docs_read, [asdict(s) for s in skips], _peak_rss_mb())


def _page_record(doc, page, tokenizer) -> dict:
    text = page.text
    return {
        "doc_id": doc.id,
        "page": int(page.index),
        "start": int(page.start),
        "end": int(page.end),
        "text": text,
        "text_tokens": len(tokenizer.encode(text, disallowed_special=())),
    }


# --------------------------------------------------------------------------------------
# Stage 2 + 3: encode (an actor holding the frozen codec) and write the part


class CodecWorker:
    """Holds one frozen codec; converts whole parts. Wrapped with ray.remote at run time."""

    def __init__(self, codec_spec: str, codec_kwargs: dict, torch_threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, torch_threads))
        self.codec = build_codec(codec_spec, **codec_kwargs)

    def info(self) -> dict:
        c = self.codec
        return {"name": c.name, "mode": getattr(c, "mode", None), "D": int(c.D),
                "n": None if c.n is None else int(c.n), "version": str(c.version),
                "render_config": c.render_config, "device": str(c.device)}

    def convert_part(self, cfg: ConvertConfig, part: int, render_config,
                     store_meta: dict) -> Iterator[Any]:
        """Yields ("progress", pages, docs) now and then, and finally ("result", PartResult)."""
        import ray

        import numpy as np

        t0 = time.perf_counter()
        out = Path(cfg.out)
        render = ray.remote(_render_task).options(
            num_cpus=cfg.render_cpus, num_returns="streaming",
            # Bounded read-ahead: at most a few chunks of images wait in the object store.
            _generator_backpressure_num_objects=4,
        ).remote(cfg.corpus, part, cfg.num_parts, cfg.read_kwargs(), render_config,
                 cfg.batch_size)
        writer = _open_part_writer(out, part, cfg, store_meta)
        result = PartResult(part=part)
        buf_records: list[dict] = []
        buf_images: list = []
        # Tokens of the document being assembled: a document reaches the store whole or not
        # at all, so a late render failure can still drop it.
        doc_tokens: dict[str, list] = {}
        doc_records: dict[str, list] = {}
        doc_complete: set[str] = set()
        dropped: set[str] = set()
        last_progress = time.perf_counter()

        def encode_batch(records: list[dict], images: list) -> None:
            t = time.perf_counter()
            tokens = self.codec.encode(np.concatenate(images) if len(images) > 1 else images[0])
            result.encode_seconds += time.perf_counter() - t
            tokens = tokens.detach().to("cpu").float().numpy()
            for i, rec in enumerate(records):
                doc = rec["doc_id"]
                if doc in dropped:
                    continue
                doc_tokens.setdefault(doc, []).append(tokens[i])
                doc_records.setdefault(doc, []).append(rec)
            flush_docs()

        def flush_docs() -> None:
            # Documents are written in corpus order once their last page is encoded.
            for doc in list(doc_records):
                if doc not in doc_complete or len(doc_records[doc]) != expected[doc]:
                    break
                recs, toks = doc_records.pop(doc), doc_tokens.pop(doc)
                _write_document(writer, doc, recs, np.stack(toks))
                result.docs += 1
                result.pages += len(recs)
                result.visual_tokens += sum(int(t.shape[0]) for t in toks)
                result.chars += sum(r["end"] - r["start"] for r in recs)
                result.text_tokens += sum(r["text_tokens"] for r in recs)
                result.text_bytes += sum(len(r["text"].encode("utf-8")) for r in recs)
                doc_complete.discard(doc)
                expected.pop(doc)

        expected: dict[str, int] = {}
        pending_batch: list[tuple[dict, Any]] = []  # (record, image) not yet encoded
        for ref in render:
            msg = ray.get(ref)
            kind = msg[0]
            if kind == "pages":
                _, doc, records, images, last = msg
                expected[doc] = expected.get(doc, 0) + len(records)
                if last:
                    doc_complete.add(doc)
                for i, rec in enumerate(records):
                    pending_batch.append((rec, images[i:i + 1]))
                # Fixed batches counted from the part's start: the same pages always meet
                # the codec in the same batches, so a redone part has identical tokens.
                while len(pending_batch) >= cfg.batch_size:
                    batch, pending_batch = (pending_batch[:cfg.batch_size],
                                            pending_batch[cfg.batch_size:])
                    encode_batch([r for r, _ in batch], [im for _, im in batch])
            elif kind == "drop":
                _, doc, _reason = msg
                dropped.add(doc)
                doc_tokens.pop(doc, None)
                doc_records.pop(doc, None)
                expected.pop(doc, None)
                doc_complete.discard(doc)
                pending_batch = [(r, im) for r, im in pending_batch if r["doc_id"] != doc]
            elif kind == "done":
                _, docs_read, skips, render_rss = msg
                result.skips = skips
                result.render_peak_rss_mb = render_rss
            now = time.perf_counter()
            if now - last_progress >= cfg.progress_every / 2:
                last_progress = now
                yield ("progress", result.pages, result.docs)
        if pending_batch:
            encode_batch([r for r, _ in pending_batch], [im for _, im in pending_batch])
        flush_docs()
        if doc_records:
            raise RuntimeError(f"part {part}: documents left incomplete: {list(doc_records)[:3]}")
        _close_part_writer(writer, out, part)
        result.seconds = time.perf_counter() - t0
        result.peak_rss_mb = _peak_rss_mb()
        # The job's record is written last: its presence (plus a verified store part) is
        # what marks the part done.
        _atomic_write_text(part_record_path(out, part), json.dumps(asdict(result)))
        yield ("result", result)


def _render_task(*args) -> Iterator[tuple]:
    yield from render_part_stream(*args)


# --------------------------------------------------------------------------------------
# The store (data.store); kept in one place so the job's logic does not depend on its API


def _open_part_writer(out: Path, part: int, cfg: ConvertConfig, store_meta: dict):
    raise NotImplementedError("data.store not available yet")


def _write_document(writer, doc_id: str, records: list[dict], tokens) -> None:
    raise NotImplementedError


def _close_part_writer(writer, out: Path, part: int) -> None:
    raise NotImplementedError


def _part_is_done(out: Path, part: int) -> bool:
    raise NotImplementedError


def _finalize_store(out: Path, cfg: ConvertConfig, store_meta: dict) -> dict:
    raise NotImplementedError


# --------------------------------------------------------------------------------------
# Driver


def _connect_ray(cfg: ConvertConfig) -> bool:
    """Connect to RAY_ADDRESS's cluster, or start a local one; True when we started it."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return True
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Logical CPUs: enough for the actors plus one render task each, or the stage that gets
    # no CPU would wait forever. The OS shares the physical cores.
    need = cfg.num_actors * (cfg.cpus_per_actor + cfg.render_cpus)
    num_cpus = cfg.num_cpus or max(os.cpu_count() or 1, int(-(-need // 1)))
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=True)
    return True


def _check_resources(cfg: ConvertConfig) -> None:
    import ray

    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    need_cpu = cfg.cpus_per_actor + cfg.render_cpus
    if cpus + 1e-9 < need_cpu or gpus + 1e-9 < cfg.gpus_per_actor:
        raise RuntimeError(
            f"the cluster has {cpus:g} CPU / {gpus:g} GPU; one encoder actor and its render "
            f"task need {need_cpu:g} CPU / {cfg.gpus_per_actor:g} GPU "
            "(lower --cpus-per-actor/--render-cpus/--gpus-per-actor)")
    if cpus + 1e-9 < cfg.num_actors * need_cpu:
        print(f"[convert] warning: {cpus:g} CPUs fit fewer than {cfg.num_actors} actors with "
              "their render tasks; some actors will wait for CPUs", flush=True)


def _plan(cfg: ConvertConfig, codec_info: dict, render_config) -> dict:
    """The fields that fix the output; a resumed run must match them."""
    rc = render_config
    return {
        "version": PLAN_VERSION,
        "corpus": cfg.corpus,
        "num_parts": cfg.num_parts,
        "text_field": cfg.text_field,
        "max_chars": cfg.max_chars,
        "batch_size": cfg.batch_size,
        "layout": cfg.layout,
        "codec": {k: codec_info[k] for k in ("name", "mode", "D", "n", "version")},
        "render_config": getattr(rc, "id", repr(rc)),
    }


def _check_or_write_plan(out: Path, plan: dict, overwrite: bool) -> None:
    path = out / STATE_DIR / "plan.json"
    if path.exists() and not overwrite:
        old = json.loads(path.read_text())
        if old != plan:
            diff = {k: (old.get(k), plan.get(k)) for k in plan if old.get(k) != plan.get(k)}
            raise RuntimeError(
                f"{out} holds a conversion with different settings {diff}; use another --out "
                "or --overwrite to start over")
        return
    if overwrite and out.exists():
        import shutil

        shutil.rmtree(out)
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path, json.dumps(plan, indent=1, sort_keys=True))


def _load_part(out: Path, part: int) -> Optional[PartResult]:
    path = part_record_path(out, part)
    if not path.exists():
        return None
    try:
        return PartResult(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


class _Progress:
    """Console progress: pages/s, documents done, ETA (printed lines work in job logs too)."""

    def __init__(self, total_parts: int, every: float) -> None:
        self.total_parts, self.every = total_parts, every
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.done: dict[int, PartResult] = {}
        self.resumed = 0
        self.live: dict[int, tuple[int, int]] = {}  # part -> (pages, docs) so far
        self.new_pages = 0  # pages converted by this run in finished parts
        self.converted: set[int] = set()  # parts converted (not resumed) by this run

    def finish(self, r: PartResult, resumed: bool = False) -> None:
        self.done[r.part] = r
        self.live.pop(r.part, None)
        if resumed:
            self.resumed += 1
        else:
            self.new_pages += r.pages
            self.converted.add(r.part)

    def line(self) -> str:
        live_pages = sum(p for p, _ in self.live.values())
        run_pages = self.new_pages + live_pages
        elapsed = time.perf_counter() - self.t0
        rate = run_pages / elapsed if elapsed > 0 else 0.0
        docs = sum(r.docs for r in self.done.values()) + sum(d for _, d in self.live.values())
        pages = sum(r.pages for r in self.done.values()) + live_pages
        eta = None
        if self.done and rate > 0:
            per_part = sum(r.pages for r in self.done.values()) / len(self.done)
            remaining = per_part * (self.total_parts - len(self.done)) - live_pages
            eta = max(0.0, remaining) / rate
        elif len(self.done) == self.total_parts:
            eta = 0.0
        return (f"[convert] parts {len(self.done)}/{self.total_parts}"
                f" ({self.resumed} resumed) | docs {docs} | pages {pages}"
                f" | {rate:.2f} pages/s | ETA {_fmt_eta(eta)}")

    def maybe_print(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= self.every:
            self.last = now
            print(self.line(), flush=True)


def run_conversion(corpus: str | Path, out: str | Path, codec: str = "mini",
                   **options: Any) -> dict:
    """Convert `corpus` into the store at `out`; returns the summary (also summary.json).

    `options` are the other fields of ConvertConfig (num_parts, num_actors, batch_size, ...).
    Uses the Ray session already initialised in this process, else connects to RAY_ADDRESS,
    else starts a local Ray (and shuts it down again at the end).
    """
    import ray

    cfg = ConvertConfig(corpus=str(Path(corpus).resolve()), out=str(Path(out).resolve()),
                        codec=codec, **options)
    if cfg.num_parts < 1 or cfg.num_actors < 1 or cfg.batch_size < 1:
        raise ValueError("num_parts, num_actors and batch_size must be positive")
    if not Path(cfg.corpus).exists():
        raise FileNotFoundError(f"corpus path does not exist: {cfg.corpus}")
    out_dir = Path(cfg.out)
    t_start = time.perf_counter()
    started = _connect_ray(cfg)
    try:
        return _drive(cfg, out_dir, t_start)
    finally:
        if started:
            ray.shutdown()


def _drive(cfg: ConvertConfig, out: Path, t_start: float) -> dict:
    import ray
    from ray.exceptions import RayActorError

    _check_resources(cfg)
    torch_threads = max(1, int(cfg.cpus_per_actor))
    actor_cls = ray.remote(CodecWorker).options(
        num_cpus=cfg.cpus_per_actor, num_gpus=cfg.gpus_per_actor, max_concurrency=1)

    def new_actor():
        return actor_cls.remote(cfg.codec, cfg.codec_kwargs(), torch_threads)

    actors = [new_actor() for _ in range(cfg.num_actors)]
    everyone = list(actors)  # every actor started, replacements included, to kill at the end
    codec_info = ray.get(actors[0].info.remote())
    render_config = codec_info["render_config"]
    if cfg.render_preset:
        from render import get_preset

        render_config = get_preset(cfg.render_preset)
        if getattr(render_config, "id", None) != getattr(codec_info["render_config"], "id", None):
            print(f"[convert] warning: --render-preset {cfg.render_preset} differs from the "
                  f"page geometry codec {codec_info['name']} expects", flush=True)
    plan = _plan(cfg, codec_info, render_config)
    _check_or_write_plan(out, plan, cfg.overwrite)
    store_meta = {"codec": plan["codec"], "render_config": plan["render_config"],
                  "corpus": cfg.corpus}

    progress = _Progress(cfg.num_parts, cfg.progress_every)
    todo: list[int] = []
    for part in range(cfg.num_parts):
        rec = _load_part(out, part)
        if rec is not None and _part_is_done(out, part):
            progress.finish(rec, resumed=True)
        else:
            todo.append(part)
    print(f"[convert] {cfg.num_parts} parts: {progress.resumed} already done, {len(todo)} to "
          f"convert with {cfg.num_actors} actor(s), codec {codec_info['name']} "
          f"(n={codec_info['n']}, D={codec_info['D']})", flush=True)

    attempts: Counter = Counter()
    failed: dict[int, str] = {}
    idle = list(actors)
    running: dict[Any, tuple[Any, int]] = {}  # generator -> (actor, part)
    queue = list(todo)
    while queue or running:
        while queue and idle:
            actor, part = idle.pop(), queue.pop(0)
            gen = actor.convert_part.options(num_returns="streaming").remote(
                cfg, part, render_config, store_meta)
            running[gen] = (actor, part)
            progress.live[part] = (0, 0)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=cfg.progress_every)
        for gen in ready:
            actor, part = running[gen]
            try:
                msg = ray.get(next(gen))
            except StopIteration:
                running.pop(gen)
                idle.append(actor)
                continue
            except Exception as err:  # noqa: BLE001 - retry the part, then give up on it
                running.pop(gen)
                progress.live.pop(part, None)
                if isinstance(err, RayActorError):
                    actor = new_actor()  # the process died: replace it
                    everyone.append(actor)
                idle.append(actor)
                attempts[part] += 1
                if attempts[part] <= cfg.max_retries:
                    print(f"[convert] part {part} failed ({type(err).__name__}); retrying",
                          flush=True)
                    queue.append(part)
                else:
                    failed[part] = f"{type(err).__name__}: {err}"
                    print(f"[convert] part {part} failed for good: {failed[part]}", flush=True)
                continue
            if msg[0] == "progress":
                progress.live[part] = (msg[1], msg[2])
            elif msg[0] == "result":
                progress.finish(msg[1])
                progress.maybe_print(force=True)
        progress.maybe_print()
    for a in everyone:
        ray.kill(a)

    processing = time.perf_counter() - progress.t0
    results = [progress.done[p] for p in sorted(progress.done)]
    _write_skips(out, results)
    store_info: dict = {}
    if not failed:
        store_info = _finalize_store(out, cfg, store_meta)
    summary = _summary(cfg, codec_info, plan, results, progress, failed, store_info,
                       wall=time.perf_counter() - t_start, processing=processing)
    _atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1))
    _print_summary(summary)
    if failed:
        raise RuntimeError(f"{len(failed)} part(s) failed: {failed}; re-run to retry them")
    return summary


def _write_skips(out: Path, results: list[PartResult]) -> None:
    # Merged in part order, so the file is the same whether or not the run was resumed.
    lines = [json.dumps({"part": r.part, **s}, ensure_ascii=False)
             for r in results for s in r.skips]
    _atomic_write_text(out / SKIPS_FILE, "".join(line + "\n" for line in lines))


def _summary(cfg: ConvertConfig, codec_info: dict, plan: dict, results: list[PartResult],
             progress: _Progress, failed: dict, store_info: dict, wall: float,
             processing: float) -> dict:
    tot = Counter()
    for r in results:
        tot.update(docs=r.docs, pages=r.pages, visual_tokens=r.visual_tokens, chars=r.chars,
                   text_tokens=r.text_tokens, text_bytes=r.text_bytes)
    all_skips = [s for r in results for s in r.skips]
    kinds = Counter(f"{s.get('action', 'skip')}: {s['reason'].split(':', 1)[0]}"
                    for s in all_skips)
    converted = [r for r in results if r.part in progress.converted]
    pages_new = progress.new_pages
    return {
        "corpus": cfg.corpus,
        "out": cfg.out,
        "codec": plan["codec"],
        "render_config": plan["render_config"],
        "parts": cfg.num_parts,
        "parts_done": len(results),
        "parts_resumed": progress.resumed,
        "parts_failed": {str(k): v for k, v in failed.items()},
        "docs": tot["docs"],
        "pages": tot["pages"],
        "visual_tokens": tot["visual_tokens"],
        "text_tokens": tot["text_tokens"],
        "chars": tot["chars"],
        "skips": sum(1 for s in all_skips if s.get("action", "skip") == "skip"),
        "repairs": sum(1 for s in all_skips if s.get("action") == "repair"),
        "reports": sum(1 for s in all_skips if s.get("action") == "report"),
        "skip_kinds": dict(sorted(kinds.items())),
        "wall_time_s": round(wall, 3),
        "pages_this_run": pages_new,
        "pages_per_s": round(pages_new / processing, 3) if processing > 0 else 0.0,
        "compression": {
            "text_tokens_per_page": _ratio(tot["text_tokens"], tot["pages"]),
            "visual_tokens_per_page": _ratio(tot["visual_tokens"], tot["pages"]),
            "text_to_visual_tokens": _ratio(tot["text_tokens"], tot["visual_tokens"]),
            "chars_per_page": _ratio(tot["chars"], tot["pages"]),
            "chars_per_visual_token": _ratio(tot["chars"], tot["visual_tokens"]),
            "text_bytes": tot["text_bytes"],
        },
        "workers": {"num_actors": cfg.num_actors, "cpus_per_actor": cfg.cpus_per_actor,
                    "gpus_per_actor": cfg.gpus_per_actor, "render_cpus": cfg.render_cpus,
                    "batch_size": cfg.batch_size},
        "peak_rss_mb": {
            "encoder_actor": max((r.peak_rss_mb for r in converted), default=None),
            "render_task": max((r.render_peak_rss_mb for r in converted), default=None),
        },
        "encode_seconds": round(sum(r.encode_seconds for r in converted), 3),
        "store": store_info,
    }


def _ratio(a: float, b: float) -> Optional[float]:
    return round(a / b, 4) if b else None


def _print_summary(summary: dict) -> None:
    c = summary["compression"]
    print(f"[convert] done: {summary['docs']} docs, {summary['pages']} pages, "
          f"{summary['visual_tokens']} visual tokens, {summary['skips']} skipped "
          f"({summary['repairs']} repaired) | {summary['wall_time_s']:.1f}s wall, "
          f"{summary['pages_per_s']:.2f} pages/s | text/visual tokens "
          f"{c['text_to_visual_tokens']} | {summary['out']}", flush=True)


# --------------------------------------------------------------------------------------
# Command line


def convert(
    corpus: Path = typer.Option(..., help="Corpus file or directory (.jsonl.zst/.jsonl/.parquet/.txt)."),
    out: Path = typer.Option(..., help="Store directory (absolute on a cluster); re-run to resume."),
    codec: str = typer.Option("mini", help="Codec name, or module:factory."),
    codec_path: Optional[str] = typer.Option(None, help="Codec checkpoint directory."),
    codec_mode: Optional[str] = typer.Option(None, help="Codec resolution mode."),
    trust_remote_code: bool = typer.Option(False, help="Allow remote code (deepseek-ocr v1)."),
    render_preset: Optional[str] = typer.Option(None, help="Render preset; default: the codec's own page."),
    num_parts: int = typer.Option(8, help="Corpus shards = store parts (fixed for a store)."),
    num_actors: int = typer.Option(1, help="Encoder actors, each holding the frozen codec."),
    cpus_per_actor: float = typer.Option(1.0, help="CPUs per encoder actor (its torch threads)."),
    gpus_per_actor: float = typer.Option(0.0, help="GPUs per encoder actor."),
    render_cpus: float = typer.Option(1.0, help="CPUs per render task (one per running part)."),
    batch_size: int = typer.Option(16, help="Pages per encode call."),
    layout: str = typer.Option("zarr", help="Store layout: zarr or memmap."),
    text_field: str = typer.Option("text", help="Text field of JSONL/parquet records."),
    max_chars: Optional[int] = typer.Option(None, help="Skip longer documents (default: the reader's)."),
    max_retries: int = typer.Option(2, help="Retries of a failed part before giving up on it."),
    progress_every: float = typer.Option(5.0, help="Seconds between progress lines."),
    overwrite: bool = typer.Option(False, help="Delete --out and start over."),
    num_cpus: Optional[int] = typer.Option(None, help="Logical CPUs of a local Ray (no RAY_ADDRESS)."),
) -> None:
    """Render, encode and store a corpus as visual tokens (Ray; resumable)."""
    run_conversion(corpus, out, codec=codec, codec_path=codec_path, codec_mode=codec_mode,
                   trust_remote_code=trust_remote_code, render_preset=render_preset,
                   num_parts=num_parts, num_actors=num_actors, cpus_per_actor=cpus_per_actor,
                   gpus_per_actor=gpus_per_actor, render_cpus=render_cpus,
                   batch_size=batch_size, layout=layout, text_field=text_field,
                   max_chars=max_chars, max_retries=max_retries,
                   progress_every=progress_every, overwrite=overwrite, num_cpus=num_cpus)


def main(argv: Optional[list[str]] = None) -> None:
    app = typer.Typer(add_completion=False)
    app.command()(convert)
    app(args=argv if argv is not None else sys.argv[1:], prog_name="python -m jobs.convert")


if __name__ == "__main__":
    main()
