"""`vst render`: a text file or corpus -> page PNGs + pages.jsonl + the render config.

Mounted by the root app (jobs/cli.py) as `vst render`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer


def _documents(source: Path, text_field: str, skips: object) -> Iterator[tuple[str, str]]:
    """(doc id, text) pairs; corpora go through data.corpus, a bare .txt works without it."""
    try:
        from data.corpus import read_corpus
    except ImportError:
        if source.is_file() and source.suffix == ".txt":
            yield source.stem, source.read_text(encoding="utf-8", errors="replace")
            return
        raise typer.BadParameter(
            f"{source}: reading corpora needs data.corpus; only plain .txt files work without it"
        ) from None
    for doc in read_corpus(source, text_field=text_field, skips=skips):
        yield str(doc.id), doc.text


def render(
    source: Annotated[Path, typer.Argument(help="A .txt file, a corpus file (.jsonl, "
                                           ".jsonl.zst, .parquet) or a directory of them.",
                                           exists=True)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (created).")],
    preset: Annotated[str, typer.Option(help="Render preset: ds-tiny, ds-small, ds-base, "
                                        "ds-large or mini.")] = "mini",
    config: Annotated[Optional[Path], typer.Option(help="A RenderConfig JSON file; "
                                                   "overrides --preset.", exists=True,
                                                   dir_okay=False)] = None,
    backend: Annotated[Optional[str], typer.Option(help="Override the config's backend: "
                                                   "pillow, cairo or chromium.")] = None,
    system_fallbacks: Annotated[bool, typer.Option(help="Append the host's CJK/other-script "
                                                   "fonts (fc-match) to the fallback chain; "
                                                   "recorded in config.json.")] = False,
    max_docs: Annotated[Optional[int], typer.Option(help="Stop after this many documents.",
                                                    min=1)] = None,
    max_pages: Annotated[Optional[int], typer.Option(help="At most this many pages per "
                                                     "document.", min=1)] = None,
    images: Annotated[bool, typer.Option(help="Write page PNGs (--no-images: only "
                                         "pages.jsonl).")] = True,
    text_field: Annotated[str, typer.Option(help="Text field of JSON/Parquet records.")] = "text",
) -> None:
    """Typeset documents into standard pages and write them as PNGs.

    OUT/config.json: the exact RenderConfig (its id names the rendering).

    OUT/pages.jsonl: one record per page: doc id, page number, char span [start, end),
    render config id, missing glyphs, control characters, image path.

    OUT/pages/DDDDDD_PPPPP.png: one image per page (document ordinal, page number).
    """
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from render.config import RenderConfig, get_preset
    from render.fonts import with_system_fallbacks
    from render.layout import paginate
    from render.raster import backend_error, rasterize, save_png

    try:
        cfg = RenderConfig.load(config) if config else get_preset(preset)
        if backend:
            cfg = cfg.replace(backend=backend)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if system_fallbacks:
        cfg = with_system_fallbacks(cfg)
    reason = backend_error(cfg.backend)
    if reason:
        raise typer.BadParameter(reason)

    out.mkdir(parents=True, exist_ok=True)
    image_dir = out / "pages"
    if images:
        image_dir.mkdir(exist_ok=True)
    cfg.save(out / "config.json")

    skips = None
    try:
        from data.corpus import SkipLog

        skips = SkipLog()
    except ImportError:
        pass

    n_docs = n_pages = n_chars = 0
    missing: set[str] = set()
    columns = (SpinnerColumn(), TextColumn("[bold]render[/]"), BarColumn(),
               TextColumn("{task.fields[docs]} docs  {task.fields[pages]} pages"),
               TimeElapsedColumn())
    with (out / "pages.jsonl").open("w", encoding="utf-8") as index, \
            Progress(*columns, transient=False) as progress:
        task = progress.add_task("render", total=max_docs, docs=0, pages=0)
        for doc_id, text in _documents(source, text_field, skips):
            for page in paginate(text, cfg):
                if max_pages is not None and page.index >= max_pages:
                    break
                record = page.record(doc_id)
                if images:
                    name = f"{n_docs:06d}_{page.index:05d}.png"
                    save_png(rasterize(page, cfg), image_dir / name, dpi=cfg.dpi)
                    record["image"] = f"pages/{name}"
                index.write(json.dumps(record) + "\n")
                missing.update(record["missing_glyphs"])
                n_pages += 1
                n_chars += page.end - page.start
                progress.update(task, pages=n_pages)
            n_docs += 1
            progress.update(task, advance=1, docs=n_docs)
            if max_docs is not None and n_docs >= max_docs:
                break
    if skips is not None and len(skips):
        skips.write_jsonl(out / "skips.jsonl")
    typer.echo(f"{n_docs} documents, {n_pages} pages, {n_chars} characters -> {out} "
               f"(config {cfg.id}, backend {cfg.backend})")
    if missing:
        typer.echo(f"warning: {len(missing)} characters had no glyph in any font "
                   f"(listed per page in pages.jsonl): {', '.join(sorted(missing)[:20])}")
