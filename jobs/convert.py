"""Convert a corpus into a visual-token store with Ray: read -> render -> encode -> write.

Laptop (no RAY_ADDRESS: starts a private local Ray on 127.0.0.1 and stops it at the end):

    python -m jobs.convert --corpus corpus.jsonl.zst --out runs/store --codec mini

Cluster (the job server sets RAY_ADDRESS for the job, and `ray.init()` follows it):

    RAY_AUTH_MODE=disabled ray start --head --node-ip-address=127.0.0.1 --disable-usage-stats
    RAY_ADDRESS=http://127.0.0.1:8265 RAY_AUTH_MODE=disabled ray job submit --working-dir . -- \\
        python -m jobs.convert --corpus /abs/corpus --out /abs/store --codec mini \\
        --render-preset mini --num-actors 4 --gpus-per-actor 1

With `ray job submit`, give `--corpus` and `--out` as absolute paths on storage every node
sees: the job runs inside an unpacked copy of the working dir.

Work split (this is what makes the job resumable and idempotent): corpus shard i
(`read_corpus(shard_index=i, num_shards=--num-parts)`: whole files, or slices of big ones, so
a part never reads the whole corpus) becomes store part i. A worker is an encoder actor
holding the frozen codec (CPU or GPU) and, when the encoder has a GPU (or with
`--render-actors`), a render actor beside it: the encoder actor then pulls page images from
its render actor's streaming generator through Ray's object store (rendering runs ahead of
encoding, with bounded read-ahead), so the GPU does not wait for pages. A CPU encoder renders
its parts itself by default (`--render-in-encoder`): on the worker's core the two would only
take turns, and one process without the hand-off gives ~25% more pages/s with the mini codec
and scales better. Either way it encodes fixed batches counted from the start of the part, and writes
the part with `data.store.StoreWriter`, which renames it into place only when complete. A
part is done when its store part verifies and the job's record `_convert/part-NNNNN.json`
exists (written last). A re-run skips done parts and redoes the others from scratch, so an
interrupted run ends with the same store (same checksums) as an uninterrupted one. Bad
documents become entries of `skips.jsonl`; `summary.json` has the totals.

Python: `run_conversion(corpus, out, codec="mini", ...) -> summary dict`; typer: `convert`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

PLAN_VERSION = 2  # 2: corpus shards are files or slices of files (data.corpus.shard_plan)
STATE_DIR = "_convert"  # the job's own bookkeeping, beside the store's files
SKIPS_FILE = "skips.jsonl"
SUMMARY_FILE = "summary.json"
READ_AHEAD_CHUNKS = 4  # rendered chunks a part may have waiting for its encoder


# ------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class ConvertConfig:
    """One conversion. `_plan()` lists the fields that fix the output bytes."""

    corpus: str
    out: str
    codec: str = "mini"  # a registered codec name, or "package.module:factory"
    codec_path: Optional[str] = None
    codec_mode: Optional[str] = None
    trust_remote_code: bool = False
    codec_options: tuple[tuple[str, Any], ...] = ()  # extra factory kwargs (--codec-option k=v)
    render_preset: Optional[str] = None  # default: the page the codec expects
    num_parts: int = 8
    num_actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    render_cpus: float = 1.0
    # No render actors: each encoder actor renders its own parts. None: so when the encoder
    # actors have no GPU (one process a worker, no hand-off); a GPU wants render actors.
    render_in_encoder: Optional[bool] = None
    batch_size: int = 16
    layout: str = "zarr"  # "zarr" or "npy" (a numpy memmap)
    dtype: str = "float16"  # "float16" or "bfloat16"
    text_field: str = "text"
    max_chars: Optional[int] = None  # None: read_corpus's default limit
    max_retries: int = 2
    progress_every: float = 5.0
    overwrite: bool = False
    num_cpus: Optional[int] = None  # logical CPUs of a local Ray; ignored on a cluster

    def __post_init__(self) -> None:
        if self.render_in_encoder is None:
            object.__setattr__(self, "render_in_encoder", self.gpus_per_actor == 0)

    @property
    def render_actor_cpus(self) -> float:
        return 0.0 if self.render_in_encoder else self.render_cpus

    def codec_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(self.codec_options)
        if self.codec_path is not None:
            kw["path"] = self.codec_path
        if self.codec_mode is not None:
            kw["mode"] = self.codec_mode
        if self.trust_remote_code:  # only when asked: most factories do not take it
            kw["trust_remote_code"] = True
        return kw

    def read_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"text_field": self.text_field}
        if self.max_chars is not None:
            kw["max_chars"] = self.max_chars
        return kw


@dataclass
class PartResult:
    """What one part contributed; saved as `_convert/part-NNNNN.json`."""

    part: int
    docs_read: int = 0
    docs: int = 0
    pages: int = 0
    visual_tokens: int = 0
    chars: int = 0
    text_tokens: int = 0
    text_bytes: int = 0
    skips: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    encode_seconds: float = 0.0
    wait_seconds: float = 0.0  # the encoder waiting for rendered pages
    write_seconds: float = 0.0  # closing the store part (tokens, index, checksums) + verifying
    peak_rss_mb: float = 0.0  # the encoder actor's process
    render_peak_rss_mb: float = 0.0  # the render actor's process
    cpu_seconds: float = 0.0  # CPU time of the encoder actor's process during the part
    render_cpu_seconds: float = 0.0  # and of the render actor's


def parse_codec_options(items: list[str]) -> tuple[tuple[str, Any], ...]:
    """["k=v", ...] -> ((k, v), ...); values are JSON when they parse (true, 3, "x"), else text."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--codec-option needs KEY=VALUE, got {item!r}")
        try:
            out.append((key, json.loads(value)))
        except ValueError:
            out.append((key, value))
    return tuple(out)


# ------------------------------------------------------------------------------ helpers


def part_record_path(out: Path, part: int) -> Path:
    return out / STATE_DIR / f"part-{part:05d}.json"


def _atomic_write_text(path: Path, text: str) -> None:
    # Write-then-rename: a kill never leaves a half-written file that looks complete.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def build_codec(spec: str, **kwargs: Any):
    """`codec.load_codec(spec, **kwargs)`, or `module:factory` for a codec outside the registry."""
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


# ------------------------------------------------------------------------------ stage 1: render


def render_part_stream(corpus: str, part: int, num_parts: int, read_kwargs: dict,
                       render_config: Any, chunk_pages: int) -> Iterator[tuple]:
    """The messages of one part, in corpus order:

    ("pages", doc_id, records, images, last)  page dicts and uint8 images [k, H, W, 3]
    ("drop", doc_id, reason)                  a document that failed after pages went out
    ("done", docs_read, skips, peak_rss_mb, cpu_seconds)   skips: dicts of data.corpus.Skip
    """
    import numpy as np

    from codec.base import cl100k
    from data.corpus import SkipLog, read_corpus
    from render import paginate, rasterize

    cpu0 = time.process_time()
    tokenizer = cl100k()
    skips = SkipLog()
    docs_read = 0
    for doc in read_corpus(corpus, shard_index=part, num_shards=num_parts, skips=skips,
                           **read_kwargs):
        docs_read += 1
        source = doc.id.rsplit(":", 1)[0]
        missing: dict[str, None] = {}
        sent = 0
        records: list[dict] = []
        images: list = []
        try:
            # Pages are laid out lazily, so a huge document never sits in memory whole.
            for page in paginate(doc.text, render_config):
                missing.update(dict.fromkeys(page.missing_glyphs))
                images.append(rasterize(page, render_config))
                records.append({"doc_id": doc.id, "page": page.index, "start": page.start,
                                "end": page.end, "text": page.text,
                                "text_tokens": len(tokenizer.encode(page.text,
                                                                    disallowed_special=()))})
                if len(records) == chunk_pages:
                    yield ("pages", doc.id, records, np.stack(images), False)
                    sent += len(records)
                    records, images = [], []
            if sent + len(records) == 0:
                skips.add(source, doc.id, "render: the document gives no pages")
                continue
            yield ("pages", doc.id, records, np.stack(images) if images else None, True)
        except Exception as err:  # noqa: BLE001 - one bad document must not stop the part
            reason = f"render failed: {type(err).__name__}: {err}"
            skips.add(source, doc.id, reason)
            if sent:
                yield ("drop", doc.id, reason)
            continue
        if missing:
            # The pages are kept (boxes are drawn); the characters are reported, not dropped.
            shown = "".join(missing)[:100]
            skips.add(source, doc.id, f"missing glyphs: {shown!r}", "report")
    yield ("done", docs_read, [asdict(s) for s in skips], _peak_rss_mb(),
           time.process_time() - cpu0)


def keep_freed_memory(trim_mib: int = 256, mmap_mib: int = 32) -> bool:
    """Have glibc keep freed memory for reuse instead of giving it back after every batch.

    A long-lived worker frees and reallocates the same large buffers batch after batch. By
    default glibc returns them to the OS (trimming the heap, unmapping big blocks), so each
    batch page-faults them in again: ~1,500 minor faults a page in an encoder actor, about a
    quarter of its CPU, and more when the other cores are busy. Returns False where there is
    no glibc `mallopt` (macOS, musl): nothing changes there.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_trim_threshold, trim_mib << 20)
                and mallopt(m_mmap_threshold, mmap_mib << 20))  # 32 MiB: glibc's maximum


def warm_rendering() -> None:
    """Load what rendering a part needs (fonts, cl100k) before the job's clock starts."""
    from codec.base import cl100k
    from render import paginate  # noqa: F401

    cl100k()


class RenderWorker:
    """A long-lived CPU process that renders parts (a Ray actor made by the driver).

    An actor rather than a task per part: a new Ray worker process costs seconds (Python,
    fonts, tokenizer), which on a small machine dwarfs rendering a part.
    """

    def __init__(self) -> None:
        keep_freed_memory()

    def ready(self) -> bool:
        warm_rendering()
        return True

    def render_part(self, *args: Any) -> Iterator[tuple]:
        yield from render_part_stream(*args)


# ------------------------------------------------------------------------------ stages 2-3


class CodecWorker:
    """Holds one frozen codec and converts whole parts. Made a Ray actor by the driver."""

    def __init__(self, codec_spec: str, codec_kwargs: dict, torch_threads: int,
                 renders: bool = False) -> None:
        import torch

        keep_freed_memory()
        torch.set_num_threads(max(1, torch_threads))
        self.codec = build_codec(codec_spec, **codec_kwargs)
        if renders:  # --render-in-encoder: this actor renders its own parts
            warm_rendering()

    def info(self) -> dict:
        c = self.codec
        return {"name": c.name, "mode": getattr(c, "mode", None) or "default", "D": int(c.D),
                "n": None if c.n is None else int(c.n),
                "grid": None if c.grid is None else list(c.grid), "version": str(c.version),
                "render_config": c.render_config, "device": str(c.device)}

    def convert_part(self, cfg: ConvertConfig, part: int, render_config: Any, meta: dict,
                     renderer: Any) -> Iterator[tuple]:
        """Yields ("progress", pages, docs) now and then, then ("result", PartResult).

        `renderer`: the worker's render actor, or None to render here (--render-in-encoder).
        """
        import numpy as np
        import ray

        from data.store import StoreMeta, StoreWriter, to_storage, verify_part

        t0, cpu0 = time.perf_counter(), time.process_time()
        out = Path(cfg.out)
        store_meta = StoreMeta.from_json(meta)
        part_record_path(out, part).unlink(missing_ok=True)
        render_args = (cfg.corpus, part, cfg.num_parts, cfg.read_kwargs(), render_config,
                       cfg.batch_size)
        stream = None if renderer is None else renderer.render_part.options(
            num_returns="streaming", _generator_backpressure_num_objects=READ_AHEAD_CHUNKS,
        ).remote(*render_args)
        result = PartResult(part=part)
        bad_pages: list[dict] = []  # documents the codec could not encode (skips)
        dropped: set[str] = set()
        queue: list[tuple[dict, Any]] = []  # (page record, image [1, H, W, 3]) to encode
        # Pages of documents not yet complete. A document reaches the store whole or not at
        # all, so a render failure late in a long document can still drop it.
        open_docs: dict[str, dict] = {}  # doc -> {"recs": [], "toks": [], "n": int, "last": bool}
        last_yield = time.perf_counter()

        with StoreWriter(out, part, store_meta, overwrite=True) as writer:

            def flush_complete() -> None:
                # Documents enter the store in corpus order, once all their pages are encoded.
                while open_docs:
                    doc, st = next(iter(open_docs.items()))
                    if not (st["last"] and len(st["toks"]) == st["n"]):
                        return
                    del open_docs[doc]
                    recs = st["recs"]
                    writer.add_document(doc, [(r["start"], r["end"], r["text"]) for r in recs],
                                        st["toks"])
                    result.docs += 1
                    result.pages += len(recs)
                    result.visual_tokens += sum(int(t.shape[0]) for t in st["toks"])
                    result.chars += sum(r["end"] - r["start"] for r in recs)
                    result.text_tokens += sum(r["text_tokens"] for r in recs)
                    result.text_bytes += sum(len(r["text"].encode("utf-8")) for r in recs)

            def encode(batch: list[tuple[dict, Any]]) -> None:
                t = time.perf_counter()
                images = np.concatenate([im for _, im in batch])
                if store_meta.n is None and hasattr(self.codec, "encode_with_mask"):
                    # A variable-n codec pads to the longest page: keep the real tokens only.
                    padded, mask = self.codec.encode_with_mask(images)
                    tokens = [row[m] for row, m in zip(padded.detach().float().cpu().numpy(),
                                                       mask.cpu().numpy())]
                else:
                    tokens = list(self.codec.encode(images).detach().float().cpu().numpy())
                result.encode_seconds += time.perf_counter() - t
                for (rec, _), tok in zip(batch, tokens):
                    doc = rec["doc_id"]
                    if doc not in open_docs:  # dropped while its pages were queued
                        continue
                    try:  # held in the store's dtype: half the memory of float32
                        open_docs[doc]["toks"].append(to_storage(tok, store_meta.dtype))
                    except (ValueError, TypeError) as err:  # NaN/inf, float16 overflow
                        del open_docs[doc]
                        dropped.add(doc)
                        bad_pages.append({"source": doc.rsplit(":", 1)[0], "item": doc,
                                          "reason": f"encode failed: page {rec['page']}: {err}",
                                          "action": "skip"})
                flush_complete()

            def messages() -> Iterator[tuple]:
                # Rendered here, the wait is the rendering itself.
                msgs = render_part_stream(*render_args) if stream is None else map(ray.get, stream)
                while True:
                    t = time.perf_counter()
                    msg = next(msgs, None)
                    if msg is None:
                        return
                    result.wait_seconds += time.perf_counter() - t
                    yield msg

            for msg in messages():
                if msg[0] == "pages":
                    _, doc, records, images, last = msg
                    if doc in dropped:
                        continue
                    st = open_docs.setdefault(doc, {"recs": [], "toks": [], "n": 0,
                                                    "last": False})
                    st["recs"].extend(records)
                    st["n"] += len(records)
                    st["last"] = last
                    queue.extend((rec, images[i:i + 1]) for i, rec in enumerate(records))
                    # Fixed batches counted from the part's start: the same pages always meet
                    # the codec in the same batches, so a redone part has identical tokens.
                    while len(queue) >= cfg.batch_size:
                        encode(queue[:cfg.batch_size])
                        del queue[:cfg.batch_size]
                    flush_complete()  # a document with no pages left to encode
                elif msg[0] == "drop":
                    open_docs.pop(msg[1], None)
                    dropped.add(msg[1])
                    queue = [(r, im) for r, im in queue if r["doc_id"] != msg[1]]
                    flush_complete()
                elif msg[0] == "done":
                    _, result.docs_read, result.skips, render_rss, render_cpu = msg
                    if stream is not None:  # else it is this process, counted already
                        result.render_peak_rss_mb = render_rss
                        result.render_cpu_seconds = render_cpu
                if time.perf_counter() - last_yield >= 1.0:
                    last_yield = time.perf_counter()
                    yield ("progress", result.pages, result.docs)
            if queue:
                encode(queue)
            result.skips = result.skips + bad_pages
            if open_docs:
                raise RuntimeError(f"part {part}: documents left incomplete: {list(open_docs)[:3]}")
            t_write = time.perf_counter()
        verify_part(out, part)  # re-read from disk: "done" means complete and verified
        result.write_seconds = time.perf_counter() - t_write
        result.seconds = time.perf_counter() - t0
        result.cpu_seconds = time.process_time() - cpu0
        result.peak_rss_mb = _peak_rss_mb()
        # The job's record goes last: with a verified store part it marks the part done.
        _atomic_write_text(part_record_path(out, part), json.dumps(asdict(result)))
        yield ("result", result)


# ------------------------------------------------------------------------------ driver


def _connect_ray(cfg: ConvertConfig) -> bool:
    """Join RAY_ADDRESS's cluster, or start a private local one; True when we connected."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) set Ray up already
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return True
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Logical CPUs: room for every encoder plus its renderer, else the stage that gets no
    # CPU waits forever. The OS shares the physical cores between them.
    need = cfg.num_actors * (cfg.cpus_per_actor + cfg.render_actor_cpus)
    num_cpus = cfg.num_cpus or max(os.cpu_count() or 1, int(-(-need // 1)))
    # address="local": a private instance, never a cluster someone else started on this host.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             _node_ip_address="127.0.0.1")
    return True


def _check_resources(cfg: ConvertConfig) -> bool:
    """Raise if not even one worker fits the cluster; True when all of them fit."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    need = cfg.cpus_per_actor + cfg.render_actor_cpus
    if cpus + 1e-9 < need or gpus + 1e-9 < cfg.gpus_per_actor:
        raise RuntimeError(
            f"the cluster has {cpus:g} CPU / {gpus:g} GPU, but one encoder actor and its render "
            f"task need {need:g} CPU / {cfg.gpus_per_actor:g} GPU "
            "(lower --cpus-per-actor, --render-cpus or --gpus-per-actor)")
    if cpus + 1e-9 < cfg.num_actors * need or gpus + 1e-9 < cfg.num_actors * cfg.gpus_per_actor:
        print(f"[convert] note: the cluster holds fewer than {cfg.num_actors} workers now; the "
              "others join when resources appear (e.g. from the autoscaler)", flush=True)
        return False
    return True


def _plan(cfg: ConvertConfig, meta: Optional[dict]) -> dict:
    """What fixes the output bytes; a resumed run must agree with the stored plan.

    The corpus's file names and sizes are part of it: they decide which part reads which
    documents, so a resumed run on a corpus that changed in between is refused.
    """
    import hashlib

    from data.corpus import corpus_files

    listing = json.dumps(corpus_files(cfg.corpus)).encode("utf-8")
    return {"version": PLAN_VERSION, "corpus": cfg.corpus,
            "corpus_files": hashlib.sha256(listing).hexdigest(), "num_parts": cfg.num_parts,
            "text_field": cfg.text_field, "max_chars": cfg.max_chars,
            "batch_size": cfg.batch_size, "store": meta}


def _check_or_write_plan(out: Path, plan: dict) -> None:
    """Refuse to mix settings in one store; `plan["store"]` None: check the rest only."""
    path = out / STATE_DIR / "plan.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if plan["store"] is None:
            old["store"] = None
        if old != plan:
            diff = {k: (old.get(k), plan.get(k)) for k in plan if old.get(k) != plan.get(k)}
            raise RuntimeError(f"{out} holds a conversion with other settings (stored, given): "
                               f"{diff}; choose another --out, or --overwrite to start over")
        return
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    if plan["store"] is not None:
        _atomic_write_text(path, json.dumps(plan, indent=1, sort_keys=True))


def _done_part(out: Path, part: int) -> Optional[PartResult]:
    """The part's record if the part is complete and verifies, else None."""
    from data.store import StoreError, part_status, verify_part

    path = part_record_path(out, part)
    if not path.exists() or part_status(out, part) != "complete":
        return None
    try:
        record = PartResult(**json.loads(path.read_text(encoding="utf-8")))
        verify_part(out, part)
    except (ValueError, TypeError, OSError, StoreError) as err:
        print(f"[convert] part {part} fails verification ({err}); redoing it", flush=True)
        return None
    return record


class _Progress:
    """Progress lines (pages/s, documents, ETA); plain lines also read well in job logs."""

    def __init__(self, total_parts: int, every: float) -> None:
        self.total_parts, self.every = total_parts, every
        self.t0 = self.last = time.perf_counter()
        self.done: dict[int, PartResult] = {}
        self.resumed: set[int] = set()
        self.live: dict[int, tuple[int, int]] = {}  # running part -> (pages, docs) so far
        self.new_pages = 0  # pages of parts finished by this run
        self.tail_idle = 0.0  # worker-seconds idle at the end for want of parts

    def finish(self, r: PartResult, resumed: bool = False) -> None:
        self.done[r.part] = r
        self.live.pop(r.part, None)
        if resumed:
            self.resumed.add(r.part)
        else:
            self.new_pages += r.pages

    def start_clock(self) -> None:
        self.t0 = self.last = time.perf_counter()

    def rate(self) -> float:
        pages = self.new_pages + sum(p for p, _ in self.live.values())
        elapsed = time.perf_counter() - self.t0
        return pages / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        live_pages = sum(p for p, _ in self.live.values())
        docs = sum(r.docs for r in self.done.values()) + sum(d for _, d in self.live.values())
        pages = sum(r.pages for r in self.done.values()) + live_pages
        rate, eta = self.rate(), None
        if len(self.done) == self.total_parts:
            eta = 0.0
        elif self.done and rate > 0:  # parts so far predict the size of the rest
            per_part = sum(r.pages for r in self.done.values()) / len(self.done)
            eta = max(0.0, per_part * (self.total_parts - len(self.done)) - live_pages) / rate
        return (f"[convert] parts {len(self.done)}/{self.total_parts} "
                f"({len(self.resumed)} resumed) | docs {docs} | pages {pages} | "
                f"{rate:.2f} pages/s | ETA {_fmt_eta(eta)}")

    def tick(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= self.every:
            self.last = now
            print(self.line(), flush=True)


def run_conversion(corpus: str | Path, out: str | Path, codec: str = "mini",
                   **options: Any) -> dict:
    """Convert `corpus` into the token store at `out`; returns the summary (= summary.json).

    `options` are ConvertConfig's other fields (num_parts, num_actors, batch_size, ...).
    Ray: uses the session already initialised in this process, else RAY_ADDRESS's cluster,
    else a private local Ray that is shut down at the end. Raises if a part still fails after
    its retries (the finished parts stay; a re-run does the rest).
    """
    import ray

    if os.environ.get("RAY_ADDRESS") and not (Path(corpus).is_absolute()
                                              and Path(out).is_absolute()):
        # Under `ray job submit` the working dir is a temporary copy: relative paths land there.
        print("[convert] warning: relative --corpus/--out on a cluster resolve inside the job's "
              f"working dir ({os.getcwd()}); pass absolute paths", flush=True)
    if isinstance(options.get("codec_options"), dict):  # a dict is fine from Python
        options["codec_options"] = tuple(options["codec_options"].items())
    cfg = ConvertConfig(corpus=str(Path(corpus).resolve()), out=str(Path(out).resolve()),
                        codec=codec, **options)
    if min(cfg.num_parts, cfg.num_actors, cfg.batch_size) < 1:
        raise ValueError("num_parts, num_actors and batch_size must be at least 1")
    if not Path(cfg.corpus).exists():
        raise FileNotFoundError(f"corpus path does not exist: {cfg.corpus}")
    out_dir = Path(cfg.out)
    t_start = time.perf_counter()
    lock = _lock(out_dir)  # held until we return; the kernel drops it if we are killed
    try:
        if cfg.overwrite:
            _clear(out_dir)
        _check_or_write_plan(out_dir, _plan(cfg, None))  # fail fast: before Ray and the codec
        connected = _connect_ray(cfg)
        try:
            return _drive(cfg, out_dir, t_start)
        finally:
            if connected:
                ray.shutdown()
    finally:
        lock.close()


def _lock(out: Path) -> Any:
    """An exclusive lock on `out`: two jobs must not write (or clean up) the same store."""
    import fcntl

    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    fh = (out / STATE_DIR / "lock").open("w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise RuntimeError(f"another conversion is writing {out}") from None
    return fh


def _clear(out: Path) -> None:
    """--overwrite: delete everything in `out` but the lock we hold."""
    for child in out.iterdir():
        if child.name == STATE_DIR:
            for item in child.iterdir():
                if item.name != "lock":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        elif child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _drive(cfg: ConvertConfig, out: Path, t_start: float) -> dict:
    import ray

    from data.store import (MANIFEST_FILE, StoreMeta, consolidate, create_store,
                            remove_incomplete)

    fits_all = _check_resources(cfg)
    if cfg.render_in_encoder and cfg.gpus_per_actor > 0:
        print("[convert] note: --render-in-encoder with GPUs leaves each GPU idle while its "
              "actor renders; separate render actors keep it fed", flush=True)
    codec_cls = ray.remote(CodecWorker).options(
        num_cpus=cfg.cpus_per_actor, num_gpus=cfg.gpus_per_actor, max_concurrency=1)
    render_cls = ray.remote(RenderWorker).options(num_cpus=cfg.render_actor_cpus,
                                                  max_concurrency=1)
    threads = max(1, int(cfg.cpus_per_actor))  # torch threads follow the CPUs asked for
    started: list = []  # every actor, replacements too, to kill at the end

    def new_codec() -> Any:
        started.append(codec_cls.remote(cfg.codec, cfg.codec_kwargs(), threads,
                                        cfg.render_in_encoder))
        return started[-1]

    def new_renderer() -> Any:
        if cfg.render_in_encoder:
            return None
        started.append(render_cls.remote())
        return started[-1]

    # Worker i = (encoder actor, its render actor or None).
    workers = [(new_codec(), new_renderer()) for _ in range(cfg.num_actors)]
    # Readiness of each worker: the codec is loaded and the renderer's imports are warm.
    starting = {w: [w[0].info.remote()] + ([w[1].ready.remote()] if w[1] else [])
                for w in workers}
    try:
        # Wait for every worker when all fit (start-up then stays out of pages/s), else for
        # the first; the others are put to work as they come up.
        for w in workers if fits_all else workers[:1]:
            info = ray.get(starting.pop(w))[0]
        print(f"[convert] Ray ready and {cfg.num_actors - len(starting)} worker(s) loaded in "
              f"{time.perf_counter() - t_start:.1f}s", flush=True)
        render_config = info["render_config"]
        if cfg.render_preset:
            from render import get_preset

            render_config = get_preset(cfg.render_preset)
            if render_config.id != info["render_config"].id:
                print(f"[convert] warning: preset {cfg.render_preset!r} is not the page codec "
                      f"{info['name']!r} expects ({info['render_config'].id})", flush=True)
        meta = StoreMeta(D=info["D"], n=info["n"], grid=info["grid"], codec_name=info["name"],
                         codec_mode=info["mode"], codec_version=info["version"],
                         render_config=json.loads(render_config.to_json()),
                         render_config_id=render_config.id, dtype=cfg.dtype,
                         layout=cfg.layout).to_json()
        plan = _plan(cfg, meta)
        _check_or_write_plan(out, plan)
        create_store(out, StoreMeta.from_json(meta))
        removed = remove_incomplete(out)  # leftovers of a killed run (no writer runs yet)
        # Readers open a store through its manifest: none until this run has finished.
        (out / MANIFEST_FILE).unlink(missing_ok=True)

        progress = _Progress(cfg.num_parts, cfg.progress_every)
        todo = []
        for part in range(cfg.num_parts):
            record = _done_part(out, part)
            if record is None:
                todo.append(part)
            else:
                progress.finish(record, resumed=True)
        print(f"[convert] {cfg.num_parts} parts: {len(progress.resumed)} done before, "
              f"{len(todo)} to convert ({len(removed)} partial part(s) removed) | codec "
              f"{info['name']}/{info['mode']} n={info['n']} D={info['D']} on {info['device']} | "
              f"{cfg.num_actors} actor(s) x {cfg.cpus_per_actor:g} CPU "
              f"{cfg.gpus_per_actor:g} GPU, batch {cfg.batch_size}", flush=True)
        ready = [w for w in workers if w not in starting]
        failed = _schedule(cfg, todo, ready, starting, new_codec, new_renderer, render_config,
                           meta, progress)
    finally:
        for actor in started:
            ray.kill(actor)

    processing = time.perf_counter() - progress.t0
    results = [progress.done[p] for p in sorted(progress.done)]
    _write_skips(out, results)
    manifest = consolidate(out) if not failed else {}
    summary = _summary(cfg, plan, info, results, progress, failed, manifest,
                       wall=time.perf_counter() - t_start, processing=processing)
    _atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1))
    _print_summary(summary)
    if failed:
        raise RuntimeError(f"{len(failed)} part(s) failed: {failed}; re-run to retry them")
    return summary


def _schedule(cfg: ConvertConfig, todo: list[int], workers: list, starting: dict,
              new_codec: Any, new_renderer: Any, render_config: Any, meta: dict,
              progress: _Progress) -> dict[int, str]:
    """Feed parts to idle workers; retry failed parts; returns {part: error} of parts given up.

    `starting`: workers still coming up -> their readiness refs.
    """
    import ray

    attempts: Counter = Counter()
    failed: dict[int, str] = {}
    idle, queue = list(workers), list(todo)
    running: dict[Any, tuple[tuple, int]] = {}  # part generator -> (worker, part)
    idle_since: list[float] = []  # when each worker ran out of parts
    progress.start_clock()
    while queue or running:
        for w, refs in list(starting.items()):
            if queue and len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) == len(refs):
                del starting[w]
                idle.append(w)
        if not running and not idle:
            time.sleep(0.5)  # only workers still starting
            continue
        while queue and idle:
            worker, part = idle.pop(), queue.pop(0)
            gen = worker[0].convert_part.options(num_returns="streaming").remote(
                cfg, part, render_config, meta, worker[1])
            running[gen] = (worker, part)
            progress.live[part] = (0, 0)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=min(1.0, cfg.progress_every))
        for gen in ready:
            worker, part = running[gen]
            try:
                msg = ray.get(next(gen))
            except StopIteration:
                del running[gen]
                idle.append(worker)
                if not queue:  # no part left for it: idle until the job ends (the tail)
                    idle_since.append(time.perf_counter())
                continue
            except Exception as err:  # noqa: BLE001 - retry the part, later give up on it
                del running[gen]
                progress.live.pop(part, None)
                # Either actor may be dead, or stuck in the abandoned stream (and a dead
                # renderer surfaces as an error of the encoder): replace both, freeing their
                # resources first.
                for actor in filter(None, worker):
                    ray.kill(actor)
                idle.append((new_codec(), new_renderer()))
                attempts[part] += 1
                if attempts[part] <= cfg.max_retries:
                    print(f"[convert] part {part} failed ({type(err).__name__}: "
                          f"{str(err)[:300]}); retrying", flush=True)
                    queue.append(part)
                else:
                    failed[part] = f"{type(err).__name__}: {str(err)[:2000]}"
                    print(f"[convert] part {part} failed for good: {failed[part]}", flush=True)
                continue
            if msg[0] == "progress":
                progress.live[part] = (msg[1], msg[2])
            elif msg[0] == "result":
                progress.finish(msg[1])
                progress.tick(force=True)
        progress.tick()
    end = time.perf_counter()
    progress.tail_idle = sum(end - t for t in idle_since)
    return failed


def _write_skips(out: Path, results: list[PartResult]) -> None:
    # In part order, so the file is the same whether or not the run was interrupted.
    lines = [json.dumps({"part": r.part, **s}, ensure_ascii=False)
             for r in results for s in r.skips]
    _atomic_write_text(out / SKIPS_FILE, "".join(line + "\n" for line in lines))


def _ratio(a: float, b: float) -> Optional[float]:
    return round(a / b, 4) if b else None


def _summary(cfg: ConvertConfig, plan: dict, info: dict, results: list[PartResult],
             progress: _Progress, failed: dict, manifest: dict, wall: float,
             processing: float) -> dict:
    tot: Counter = Counter()
    for r in results:
        tot.update(docs_read=r.docs_read, docs=r.docs, pages=r.pages,
                   visual_tokens=r.visual_tokens, chars=r.chars, text_tokens=r.text_tokens,
                   text_bytes=r.text_bytes)
    skips = [s for r in results for s in r.skips]
    kinds = Counter(f"{s.get('action', 'skip')}: {s['reason'].split(':', 1)[0]}" for s in skips)
    ran = [r for r in results if r.part not in progress.resumed]
    store_bytes = sum(f.stat().st_size for f in (Path(cfg.out) / "parts").rglob("*")
                      if f.is_file())
    return {
        "corpus": cfg.corpus,
        "out": cfg.out,
        "codec": {k: info[k] for k in ("name", "mode", "version", "n", "D", "device")},
        "render_config_id": plan["store"]["render_config_id"],
        "parts": cfg.num_parts,
        "parts_done": len(results),
        "parts_resumed": len(progress.resumed),
        "parts_failed": {str(k): v for k, v in sorted(failed.items())},
        "docs_read": tot["docs_read"],
        "docs": tot["docs"],
        "pages": tot["pages"],
        "tokens": tot["visual_tokens"],  # visual tokens in the store
        "text_tokens": tot["text_tokens"],
        "chars": tot["chars"],
        "skips": sum(1 for s in skips if s.get("action", "skip") == "skip"),
        "repairs": sum(1 for s in skips if s.get("action") == "repair"),
        "reports": sum(1 for s in skips if s.get("action") == "report"),
        "skip_kinds": dict(sorted(kinds.items())),
        "wall_time_s": round(wall, 3),
        "pages_this_run": progress.new_pages,
        "pages_per_s": round(progress.new_pages / processing, 3) if processing > 0 else 0.0,
        "compression": {
            # text tokens are cl100k_base tokens, as in DeepSeek-OCR's compression ratios
            "text_tokens_per_page": _ratio(tot["text_tokens"], tot["pages"]),
            "visual_tokens_per_page": _ratio(tot["visual_tokens"], tot["pages"]),
            "text_to_visual_tokens": _ratio(tot["text_tokens"], tot["visual_tokens"]),
            "chars_per_page": _ratio(tot["chars"], tot["pages"]),
            "chars_per_visual_token": _ratio(tot["chars"], tot["visual_tokens"]),
            "text_bytes": tot["text_bytes"],
            "store_bytes": store_bytes,
            "store_bytes_per_text_byte": _ratio(store_bytes, tot["text_bytes"]),
        },
        "workers": {"num_actors": cfg.num_actors, "cpus_per_actor": cfg.cpus_per_actor,
                    "gpus_per_actor": cfg.gpus_per_actor, "render_cpus": cfg.render_actor_cpus,
                    "render_in_encoder": cfg.render_in_encoder,
                    "batch_size": cfg.batch_size},
        "peak_rss_mb": {"encoder_actor": max((r.peak_rss_mb for r in ran), default=None),
                        "render_actor": None if cfg.render_in_encoder else
                        max((r.render_peak_rss_mb for r in ran), default=None)},
        "encode_seconds": round(sum(r.encode_seconds for r in ran), 3),
        "encoder_wait_seconds": round(sum(r.wait_seconds for r in ran), 3),
        "write_seconds": round(sum(r.write_seconds for r in ran), 3),
        "part_seconds": round(sum(r.seconds for r in ran), 3),
        "tail_idle_worker_seconds": round(progress.tail_idle, 3),
        # CPU time against part_seconds: a worker short of CPU shows CPU << wall
        "encoder_cpu_seconds": round(sum(r.cpu_seconds for r in ran), 3),
        "render_cpu_seconds": None if cfg.render_in_encoder else
        round(sum(r.render_cpu_seconds for r in ran), 3),
        "manifest_totals": manifest.get("totals"),
    }


def _print_summary(s: dict) -> None:
    c = s["compression"]
    print(f"[convert] done: {s['docs']} docs, {s['pages']} pages, {s['tokens']} visual "
          f"tokens | {s['skips']} skipped, {s['repairs']} repaired, {s['reports']} reported "
          f"(skips.jsonl) | {s['wall_time_s']:.1f}s wall, {s['pages_per_s']:.2f} pages/s | "
          f"{c['text_to_visual_tokens']} text tokens per visual token | {s['out']}",
          flush=True)


# ------------------------------------------------------------------------------ command line


def convert(
    corpus: Path = typer.Option(..., help="Corpus file or directory (.jsonl.zst/.jsonl/"
                                ".parquet/.txt)."),
    out: Path = typer.Option(..., help="Store directory (absolute on a cluster). Re-run to "
                             "resume."),
    codec: str = typer.Option("mini", help="Codec name, or module:factory."),
    codec_path: Optional[str] = typer.Option(None, help="Codec checkpoint directory."),
    codec_mode: Optional[str] = typer.Option(None, help="Codec mode (e.g. mini: tiny/small/base)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Allow a checkpoint's own code "
                                           "(deepseek-ocr)."),
    codec_option: list[str] = typer.Option([], help="Extra codec factory argument KEY=VALUE "
                                           "(repeatable; VALUE parsed as JSON if it can be)."),
    render_preset: Optional[str] = typer.Option(None, help="Render preset (default: the "
                                                "codec's own page)."),
    num_parts: int = typer.Option(8, help="Corpus shards = store parts; fixed for a store."),
    num_actors: int = typer.Option(1, help="Encoder actors, each holding the frozen codec."),
    cpus_per_actor: float = typer.Option(1.0, help="CPUs per encoder actor (= its torch threads)."),
    gpus_per_actor: float = typer.Option(0.0, help="GPUs per encoder actor."),
    render_cpus: float = typer.Option(1.0, help="CPUs per render actor (one per encoder)."),
    render_in_encoder: Optional[bool] = typer.Option(
        None, "--render-in-encoder/--render-actors",
        help="Who renders: each encoder actor its own parts, or a render actor beside each "
        "encoder actor. Default: the encoder when it has no GPU (one process a worker, no "
        "object-store hand-off: faster on CPU), render actors when it has one (they keep "
        "the GPU fed)."),
    batch_size: int = typer.Option(16, help="Pages per encode call."),
    layout: str = typer.Option("zarr", help="Store layout: zarr or npy (numpy memmap)."),
    dtype: str = typer.Option("float16", help="Stored token dtype: float16 or bfloat16."),
    text_field: str = typer.Option("text", help="Text field of JSONL / parquet records."),
    max_chars: Optional[int] = typer.Option(None, help="Cut longer documents into parts "
                                            "(default: the reader's limit)."),
    max_retries: int = typer.Option(2, help="Retries of a failed part before giving up on it."),
    progress_every: float = typer.Option(5.0, help="Seconds between progress lines."),
    overwrite: bool = typer.Option(False, help="Delete --out first and start over."),
    num_cpus: Optional[int] = typer.Option(None, help="Logical CPUs of a local Ray (only "
                                           "without RAY_ADDRESS)."),
) -> None:
    """Render, encode and store a corpus as visual tokens on Ray (resumable: just re-run)."""
    run_conversion(corpus, out, codec=codec, codec_path=codec_path, codec_mode=codec_mode,
                   trust_remote_code=trust_remote_code,
                   codec_options=parse_codec_options(codec_option), render_preset=render_preset,
                   num_parts=num_parts, num_actors=num_actors, cpus_per_actor=cpus_per_actor,
                   gpus_per_actor=gpus_per_actor, render_cpus=render_cpus,
                   render_in_encoder=render_in_encoder,
                   batch_size=batch_size, layout=layout, dtype=dtype, text_field=text_field,
                   max_chars=max_chars, max_retries=max_retries, progress_every=progress_every,
                   overwrite=overwrite, num_cpus=num_cpus)


def main(argv: Optional[list[str]] = None) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(convert)
    app(args=argv if argv is not None else sys.argv[1:], prog_name="python -m jobs.convert")


if __name__ == "__main__":
    main()
