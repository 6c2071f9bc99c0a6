"""One part of a conversion, in plain Python (no Ray): read -> render -> encode -> write.

Corpus shard i (`read_corpus(shard_index=i, num_shards=num_parts)`) becomes store part i. The
Ray actors of `jobs.convert.driver` are thin wrappers around these functions, so one part
can be converted (and tested) without a cluster:

    python - <<'EOF'
    from codec import load_codec
    from data.store import StoreMeta, create_store
    from jobs.convert.config import ConvertConfig
    from jobs.convert.pipeline import codec_info, convert_part, store_meta
    cfg = ConvertConfig("corpus.jsonl", "/tmp/store", num_parts=1)
    codec = load_codec(cfg.codec, options=cfg.codec_options)
    meta = store_meta(cfg, codec_info(codec), codec.render_config)
    create_store(cfg.out, StoreMeta.from_json(meta))
    print(convert_part(cfg, 0, codec, codec.render_config, meta))
    EOF

A part is written with `data.store.StoreWriter` (renamed into place only when complete),
verified from disk, and only then gets its record `_convert/part-NNNNN.json`: with a
verified store part, the record is what marks the part done.
"""

from __future__ import annotations

import json
import os
import resource
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from data.errors import UserError
from jobs.convert.config import ConvertConfig, PartResult

STATE_DIR = "_convert"  # the job's own bookkeeping, beside the store's files


class PartFailed(Exception):
    """A part stopped: which part, the document it had reached, and the error itself.

    It crosses from a Ray worker to the driver whole (pickled with its fields), so the
    driver can tell a user's mistake (`expected`) from a bug, whose traceback it keeps as
    text (a traceback does not survive pickling).
    """

    def __init__(self, part: int, doc: Optional[str], error: BaseException,
                 trace: Optional[str] = None) -> None:
        super().__init__(part, doc, error, trace)
        self.part, self.doc, self.error, self.trace = part, doc, error, trace

    @classmethod
    def of(cls, part: int, doc: Optional[str], error: BaseException) -> PartFailed:
        trace = None if isinstance(error, UserError) else "".join(
            traceback.format_exception(error))
        return cls(part, doc, error, trace)

    @property
    def expected(self) -> bool:
        return isinstance(self.error, UserError)

    def __str__(self) -> str:
        where = f"part {self.part}" + (f" at document {self.doc!r}" if self.doc else "")
        reason = str(self.error) if self.expected else f"{type(self.error).__name__}: {self.error}"
        return f"{where}: {reason}"


def part_record_path(out: Path, part: int) -> Path:
    return Path(out) / STATE_DIR / f"part-{part:05d}.json"


def atomic_write_text(path: Path, text: str) -> None:
    # Write-then-rename: a kill never leaves a half-written file that looks complete.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


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


# ------------------------------------------------------------------------------ the codec


def codec_info(codec: Any) -> dict:
    """What the driver needs to know of a loaded codec (plain values: it crosses processes)."""
    return {"name": codec.name, "mode": getattr(codec, "mode", None) or "default",
            "D": int(codec.D), "n": None if codec.n is None else int(codec.n),
            "grid": None if codec.grid is None else list(codec.grid),
            "version": str(codec.version), "render_config": codec.render_config,
            "device": str(codec.device)}


def page_config(cfg: ConvertConfig, info: dict) -> Any:
    """The render config of the job: --render-preset, else the page the codec expects."""
    if not cfg.render_preset:
        return info["render_config"]
    from render import get_preset

    config = get_preset(cfg.render_preset)
    if config.id != info["render_config"].id:
        print(f"[convert] warning: preset {cfg.render_preset!r} is not the page codec "
              f"{info['name']!r} expects ({info['render_config'].id})", flush=True)
    return config


def store_meta(cfg: ConvertConfig, info: dict, render_config: Any) -> dict:
    """The store's meta (`data.store.StoreMeta` as JSON) for this codec and page."""
    from data.store import StoreMeta

    return StoreMeta(D=info["D"], n=info["n"], grid=info["grid"], codec_name=info["name"],
                     codec_mode=info["mode"], codec_version=info["version"],
                     render_config=json.loads(render_config.to_json()),
                     render_config_id=render_config.id, dtype=cfg.dtype,
                     layout=cfg.layout).to_json()


# ------------------------------------------------------------------------------ render


def render_args(cfg: ConvertConfig, part: int, render_config: Any) -> tuple:
    """The arguments of `render_part_stream` for one part (also sent to a render actor)."""
    return (cfg.corpus, part, cfg.num_parts, cfg.read_kwargs(), render_config, cfg.batch_size)


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
        except UserError:
            raise  # a user's mistake (a missing font, a bad setting) is every document's
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
    yield ("done", docs_read, [asdict(s) for s in skips], peak_rss_mb(),
           time.process_time() - cpu0)


# ------------------------------------------------------------------------------ encode + write


class _PartWriter:
    """Collects one part's encoded pages and writes whole documents in corpus order."""

    def __init__(self, codec: Any, writer: Any, store_meta: Any, result: PartResult) -> None:
        self.codec, self.writer, self.meta, self.result = codec, writer, store_meta, result
        self.bad_pages: list[dict] = []  # documents the codec could not encode (skips)
        self.dropped: set[str] = set()
        self.queue: list[tuple[dict, Any]] = []  # (page record, image [1, H, W, 3]) to encode
        # Pages of documents not yet complete. A document reaches the store whole or not at
        # all, so a render failure late in a long document can still drop it.
        self.open_docs: dict[str, dict] = {}  # doc -> {"recs", "toks", "n", "last"}

    def add_pages(self, doc: str, records: list[dict], images: Any, last: bool,
                  batch_size: int) -> None:
        if doc in self.dropped:
            return
        st = self.open_docs.setdefault(doc, {"recs": [], "toks": [], "n": 0, "last": False})
        st["recs"].extend(records)
        st["n"] += len(records)
        st["last"] = last
        self.queue.extend((rec, images[i:i + 1]) for i, rec in enumerate(records))
        # Fixed batches counted from the part's start: the same pages always meet the codec
        # in the same batches, so a redone part has identical tokens.
        while len(self.queue) >= batch_size:
            self.encode(self.queue[:batch_size])
            del self.queue[:batch_size]
        self.flush_complete()  # a document with no pages left to encode

    def drop(self, doc: str) -> None:
        self.open_docs.pop(doc, None)
        self.dropped.add(doc)
        self.queue = [(r, im) for r, im in self.queue if r["doc_id"] != doc]
        self.flush_complete()

    def finish(self) -> None:
        if self.queue:
            self.encode(self.queue)
            self.queue = []

    def encode(self, batch: list[tuple[dict, Any]]) -> None:
        import numpy as np

        from data.store import to_storage

        t = time.perf_counter()
        images = np.concatenate([im for _, im in batch])
        if self.meta.n is None and hasattr(self.codec, "encode_with_mask"):
            # A variable-n codec pads to the longest page: keep the real tokens only.
            padded, mask = self.codec.encode_with_mask(images)
            tokens = [row[m] for row, m in zip(padded.detach().float().cpu().numpy(),
                                               mask.cpu().numpy())]
        else:
            tokens = list(self.codec.encode(images).detach().float().cpu().numpy())
        self.result.encode_seconds += time.perf_counter() - t
        for (rec, _), tok in zip(batch, tokens):
            doc = rec["doc_id"]
            if doc not in self.open_docs:  # dropped while its pages were queued
                continue
            try:  # held in the store's dtype: half the memory of float32
                self.open_docs[doc]["toks"].append(to_storage(tok, self.meta.dtype))
            except (ValueError, TypeError) as err:  # NaN/inf, float16 overflow
                del self.open_docs[doc]
                self.dropped.add(doc)
                self.bad_pages.append({"source": doc.rsplit(":", 1)[0], "item": doc,
                                       "reason": f"encode failed: page {rec['page']}: {err}",
                                       "action": "skip"})
        self.flush_complete()

    def flush_complete(self) -> None:
        # Documents enter the store in corpus order, once all their pages are encoded.
        r = self.result
        while self.open_docs:
            doc, st = next(iter(self.open_docs.items()))
            if not (st["last"] and len(st["toks"]) == st["n"]):
                return
            del self.open_docs[doc]
            recs = st["recs"]
            self.writer.add_document(doc, [(x["start"], x["end"], x["text"]) for x in recs],
                                     st["toks"])
            r.docs += 1
            r.pages += len(recs)
            r.visual_tokens += sum(int(t.shape[0]) for t in st["toks"])
            r.chars += sum(x["end"] - x["start"] for x in recs)
            r.text_tokens += sum(x["text_tokens"] for x in recs)
            r.text_bytes += sum(len(x["text"].encode("utf-8")) for x in recs)


def convert_part_stream(cfg: ConvertConfig, part: int, codec: Any, render_config: Any,
                        meta: dict, messages: Optional[Iterable[tuple]] = None,
                        progress_every: float = 1.0) -> Iterator[tuple]:
    """Convert store part `part`; yields ("progress", pages, docs) now and then, then
    ("result", PartResult). A failure is raised as `PartFailed`, naming the part and the
    document it had reached.

    `messages`: the part's render messages (`render_part_stream`'s) from elsewhere, e.g. a
    render actor; None renders them here. The store (`data.store.create_store`) must exist.
    """
    from data.store import StoreMeta, StoreWriter, verify_part

    t0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(cfg.out)
    part_record_path(out, part).unlink(missing_ok=True)
    rendered_here = messages is None
    source = iter(render_part_stream(*render_args(cfg, part, render_config))
                  if rendered_here else messages)
    result = PartResult(part=part)
    last_yield = time.perf_counter()

    doc = None  # the document the part has reached: a failure names it
    try:
        part_meta = StoreMeta.from_json(meta)
        with StoreWriter(out, part, part_meta, overwrite=True) as writer:
            pw = _PartWriter(codec, writer, part_meta, result)
            while True:
                t = time.perf_counter()
                msg = next(source, None)  # rendered here, the wait is the rendering itself
                if msg is None:
                    break
                result.wait_seconds += time.perf_counter() - t
                if msg[0] == "pages":
                    _, doc, records, images, last = msg
                    pw.add_pages(doc, records, images, last, cfg.batch_size)
                elif msg[0] == "drop":
                    doc = msg[1]
                    pw.drop(doc)
                elif msg[0] == "done":
                    _, result.docs_read, result.skips, render_rss, render_cpu = msg
                    if not rendered_here:  # else it is this process, counted below
                        result.render_peak_rss_mb = render_rss
                        result.render_cpu_seconds = render_cpu
                if time.perf_counter() - last_yield >= progress_every:
                    last_yield = time.perf_counter()
                    yield ("progress", result.pages, result.docs)
            pw.finish()
            result.skips = result.skips + pw.bad_pages
            if pw.open_docs:
                raise RuntimeError(f"documents left incomplete: {list(pw.open_docs)[:3]}")
            t_write = time.perf_counter()
        verify_part(out, part)  # re-read from disk: "done" means complete and verified
    except Exception as err:  # noqa: BLE001 - re-raised with the part and document
        raise PartFailed.of(part, doc, err) from err
    result.write_seconds = time.perf_counter() - t_write
    result.seconds = time.perf_counter() - t0
    result.cpu_seconds = time.process_time() - cpu0
    result.peak_rss_mb = peak_rss_mb()
    # The job's record goes last: with a verified store part it marks the part done.
    part_record_path(out, part).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(part_record_path(out, part), json.dumps(asdict(result)))
    yield ("result", result)


def convert_part(cfg: ConvertConfig, part: int, codec: Any, render_config: Any,
                 meta: dict) -> PartResult:
    """`convert_part_stream` run to its end in this process: the part's PartResult."""
    for msg in convert_part_stream(cfg, part, codec, render_config, meta):
        if msg[0] == "result":
            return msg[1]
    raise RuntimeError(f"part {part}: the conversion gave no result")
