"""What a conversion tells its user: progress lines while it runs, then `summary.json`,
`skips.jsonl` and a closing line.

    python -c "import json; print(json.load(open('runs/store/summary.json'))['compression'])"
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from jobs.convert.config import ConvertConfig, PartResult
from jobs.convert.pipeline import atomic_write_text

SKIPS_FILE = "skips.jsonl"
SUMMARY_FILE = "summary.json"


def fmt_eta(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
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
                f"{rate:.2f} pages/s | ETA {fmt_eta(eta)}")

    def tick(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= self.every:
            self.last = now
            print(self.line(), flush=True)


def write_skips(out: Path, results: list[PartResult]) -> None:
    # In part order, so the file is the same whether or not the run was interrupted.
    lines = [json.dumps({"part": r.part, **s}, ensure_ascii=False)
             for r in results for s in r.skips]
    atomic_write_text(out / SKIPS_FILE, "".join(line + "\n" for line in lines))


def _ratio(a: float, b: float) -> Optional[float]:
    return round(a / b, 4) if b else None


def summary(cfg: ConvertConfig, plan: dict, info: dict, results: list[PartResult],
             progress: Progress, failed: dict, manifest: dict, wall: float,
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
        # part -> the document it had reached and the reason (jobs.convert.pipeline.PartFailed)
        "parts_failed": {str(k): {"doc": v.doc, "reason": str(v)[:2000]}
                         for k, v in sorted(failed.items())},
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


def print_summary(s: dict) -> None:
    c = s["compression"]
    print(f"[convert] done: {s['docs']} docs, {s['pages']} pages, {s['tokens']} visual "
          f"tokens | {s['skips']} skipped, {s['repairs']} repaired, {s['reports']} reported "
          f"(skips.jsonl) | {s['wall_time_s']:.1f}s wall, {s['pages_per_s']:.2f} pages/s | "
          f"{c['text_to_visual_tokens']} text tokens per visual token | {s['out']}",
          flush=True)

