"""The main job: the whole pipeline, end to end, on the embedded default.

    vst demo --out runs/demo                                  # mini codec, local demo corpus
    vst demo --out runs/demo --codec deepseek-ocr2 --codec-path /models/DeepSeek-OCR-2

Stages (each writes its own folder under OUT and a section of OUT/report.html):

  corpus    build the demo corpus (Pile format, from the stdlib's own docs)
  render    typeset + rasterize it; render throughput and a few page images
  fidelity  text -> render -> encode -> decode -> text on held-out text
  convert   corpus -> visual-token store, through the Ray conversion job
  train     a debug VST on the store, and the same-shape text baseline
  evaluate  RULER-style tasks through the runners, scored; efficiency table

Sized to finish in a few minutes on a 2-core CPU. OUT/summary.json holds every number.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer


@dataclass
class Section:
    """What one stage adds to the report."""

    title: str
    metrics: dict[str, Any]
    html: str = ""
    seconds: float = 0.0
    links: list[str] = field(default_factory=list)


@dataclass
class DemoSettings:
    out: Path
    codec: str = "mini"
    codec_path: Optional[Path] = None
    codec_mode: Optional[str] = None
    trust_remote_code: bool = False
    n_docs: int = 24
    max_chars_per_doc: int = 8_000
    fidelity_pages: int = 24
    train_steps: int = 120
    eval_samples: int = 4
    eval_chars: int = 3_000
    seed: int = 0

    def codec_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.codec_path is not None:
            kwargs["path"] = str(self.codec_path)
        if self.codec_mode is not None:
            kwargs["mode"] = self.codec_mode
        if self.trust_remote_code:
            kwargs["trust_remote_code"] = True
        return kwargs


# ---------------------------------------------------------------- stages


def stage_corpus(s: DemoSettings, state: dict) -> Section:
    from data.demo import build_demo_corpus

    corpus = build_demo_corpus(s.out / "corpus", n_docs=s.n_docs,
                               max_chars_per_doc=s.max_chars_per_doc, seed=s.seed)
    from data.corpus import read_corpus

    docs = list(read_corpus(corpus))
    state["corpus"] = corpus
    state["docs"] = docs
    chars = sum(len(d.text) for d in docs)
    return Section("Corpus", {"path": str(corpus), "documents": len(docs), "characters": chars},
                   f"<p>{len(docs)} documents, {chars:,} characters of the Python standard "
                   f"library's own documentation, in The Pile's format.</p>")


def stage_render(s: DemoSettings, state: dict) -> Section:
    from codec import load_codec
    from render import paginate, rasterize, save_png

    codec = load_codec(s.codec, **s.codec_kwargs())
    state["codec"] = codec
    cfg = codec.render_config
    img_dir = s.out / "render"
    img_dir.mkdir(parents=True, exist_ok=True)
    pages, images, t0 = 0, [], time.perf_counter()
    for doc in state["docs"]:
        for page in paginate(doc.text, cfg):
            image = rasterize(page, cfg)
            pages += 1
            if len(images) < 4:
                images.append(save_png(image, img_dir / f"page_{len(images)}.png").name)
    seconds = time.perf_counter() - t0
    rate = pages / max(seconds, 1e-9)
    figs = "".join(f'<img src="render/{name}" width="256" alt="page {i}"> '
                   for i, name in enumerate(images))
    return Section("Render", {"render_config_id": cfg.id, "backend": cfg.backend,
                              "width": cfg.width, "height": cfg.height, "pages": pages,
                              "pages_per_s": round(rate, 1)},
                   f"<p>{pages} pages ({cfg.width}x{cfg.height}, {cfg.backend}, config "
                   f"<code>{cfg.id}</code>) in {seconds:.2f}s: <b>{rate:.0f} pages/s</b> "
                   f"(layout + raster, one process, PNG not included).</p><p>{figs}</p>")


STAGES: list[tuple[str, Callable[[DemoSettings, dict], Section]]] = [
    ("corpus", stage_corpus),
    ("render", stage_render),
]


# ---------------------------------------------------------------- report


def write_report(s: DemoSettings, sections: list[Section], total: float) -> Path:
    summary = {"settings": {k: str(v) for k, v in vars(s).items()}, "total_seconds": total,
               "stages": {sec.title: {"seconds": round(sec.seconds, 2), **sec.metrics}
                          for sec in sections}}
    (s.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    body = []
    for sec in sections:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                       for k, v in sec.metrics.items() if not isinstance(v, (dict, list)))
        links = " ".join(f'<a href="{link}">{html.escape(link)}</a>' for link in sec.links)
        body.append(f"<h2>{html.escape(sec.title)} <small>({sec.seconds:.1f}s)</small></h2>"
                    f"{sec.html}<table>{rows}</table><p>{links}</p>")
    page = (f"<!doctype html><meta charset='utf-8'><title>VST demo</title><style>"
            f"body{{font-family:sans-serif;max-width:960px;margin:2em auto}}"
            f"table{{border-collapse:collapse}}td{{border:1px solid #ccc;padding:2px 8px}}"
            f"</style><h1>Visual-Symbolic Transformer: end-to-end demo</h1>"
            f"<p>codec <code>{html.escape(s.codec)}</code>, total {total:.0f}s. "
            f"All numbers: <a href='summary.json'>summary.json</a>.</p>" + "".join(body))
    path = s.out / "report.html"
    path.write_text(page)
    return path


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_demo(settings: DemoSettings, only: Optional[list[str]] = None) -> dict:
    from rich.console import Console

    console = Console()
    settings.out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {}
    sections, t_start = [], time.perf_counter()
    for name, stage in STAGES:
        if only and name not in only and name != "corpus":
            continue
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        section = stage(settings, state)
        section.seconds = time.perf_counter() - t0
        sections.append(section)
        console.print({k: v for k, v in section.metrics.items() if not isinstance(v, (dict, list))})
    total = time.perf_counter() - t_start
    report = write_report(settings, sections, total)
    console.print(f"[green]report:[/green] {report}  ({total:.0f}s)")
    return json.loads((settings.out / "summary.json").read_text())


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for every stage and "
                                      "report.html.")] = Path("runs/demo"),
    codec: Annotated[str, typer.Option(help="Codec backend: mini (shipped, CPU), deepseek-ocr2, "
                                       "or deepseek-ocr.")] = "mini",
    codec_path: Annotated[Optional[Path], typer.Option(help="Local checkpoint directory for a "
                                                       "DeepSeek-OCR backend.")] = None,
    codec_mode: Annotated[Optional[str], typer.Option(help="Codec mode (tokens per page); "
                                                      "default: the backend's.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow DeepSeek-OCR v1's remote code "
                                                    "from --codec-path.")] = False,
    n_docs: Annotated[int, typer.Option(min=2, help="Demo corpus documents.")] = 24,
    train_steps: Annotated[int, typer.Option(min=1, help="VST / baseline training steps.")] = 120,
    only: Annotated[Optional[list[str]], typer.Option(help="Run only these stages (repeatable); "
                                                      "the corpus is always built.")] = None,
) -> None:
    """Run the pipeline end to end on the demo corpus and write OUT/report.html."""
    run_demo(DemoSettings(out=out, codec=codec, codec_path=codec_path, codec_mode=codec_mode,
                          trust_remote_code=trust_remote_code, n_docs=n_docs,
                          train_steps=train_steps), only=only)
