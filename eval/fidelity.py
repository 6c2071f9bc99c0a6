"""Fidelity round trip: text -> render -> encode -> decode -> text, against compression.

    vst fidelity                                  # held-out text, shipped mini codec (all modes)
    vst fidelity docs.txt --codec mini:small --codec mini:tiny --out runs/fidelity

    from eval.fidelity import run_fidelity
    result = run_fidelity(texts, ["mini:tiny", "mini:small"], "runs/fidelity", max_pages=32)

For each codec spec (`name[:mode]`, a dict of `load_codec` arguments, or a Codec) the
texts are paginated with the codec's own render config, encoded, decoded greedily and
scored (eval.metrics), next to the blind floor (the decoder given null tokens). Writes
`metrics.json`, `pages.jsonl` and `report.html` (sample pages with differences marked,
and precision vs compression beside DeepSeek-OCR's published Fox points).
"""

from __future__ import annotations

import base64
import difflib
import html
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from data.errors import BadInput

# DeepSeek-OCR (arXiv 2510.18234) Table 2, Fox benchmark: (compression, precision).
FOX_ANCHORS = {
    "DeepSeek-OCR, 100 vision tokens": [(6.7, 0.985), (7.5, 0.973), (9.7, 0.968), (12.6, 0.871)],
    "DeepSeek-OCR, 64 vision tokens": [(10.5, 0.965), (19.7, 0.591)],
}


def _codec(spec: Any):
    """A codec spec (`name[:mode]`, a dict of `load_codec` arguments with `name`, or a
    Codec) -> (label, codec)."""
    from codec import Codec, load_codec

    if isinstance(spec, Codec):
        return f"{spec.name}:{spec.mode}", spec
    if isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name")
        label = name + (f":{kwargs['mode']}" if kwargs.get("mode") else "")
        return label, load_codec(name, **kwargs)
    return str(spec), load_codec(str(spec))


def paginate_texts(texts: Sequence[str], render_config, max_pages: int | None):
    """(doc index, Page) for every page of every text, up to max_pages."""
    from render import paginate

    out = []
    for i, text in enumerate(texts):
        for page in paginate(text, render_config):
            if max_pages is not None and len(out) >= max_pages:
                return out
            if page.text.strip():
                out.append((i, page))
    return out


def evaluate_codec(codec, texts: Sequence[str], max_pages: int | None = 64,
                   batch_size: int = 16, progress: bool = True, label: str = "") -> dict:
    """Round-trip every page; returns metrics, per-page records and the rendered pages."""
    from tqdm import tqdm

    from codec.text_metrics import precision
    from eval.metrics import text_metrics
    from render import rasterize

    cfg = codec.render_config
    pages = paginate_texts(texts, cfg, max_pages)
    if not pages:
        raise BadInput("no non-empty pages to evaluate: the input has no text",
                       hint="give a file or corpus with text")
    refs = [p.text for _, p in pages]
    preds, blinds, images = [], [], []
    t_enc = t_dec = 0.0
    n_tokens = 0
    bar = tqdm(total=len(pages), desc=f"fidelity {label}", disable=not progress, unit="page")
    for start in range(0, len(pages), batch_size):
        chunk = [p for _, p in pages[start:start + batch_size]]
        imgs = [rasterize(p, cfg) for p in chunk]
        images.extend(imgs[: max(0, 8 - len(images))])
        t0 = time.perf_counter()
        tokens = codec.encode(imgs)
        t1 = time.perf_counter()
        preds.extend(codec.decode(tokens))
        t2 = time.perf_counter()
        t_enc, t_dec = t_enc + t1 - t0, t_dec + t2 - t1
        n_tokens += tokens.shape[0] * tokens.shape[1]
        blinds.extend(codec.decode(codec.null_tokens(len(chunk))))
        bar.update(len(chunk))
    bar.close()
    metrics = text_metrics(preds, refs)
    text_tokens = sum(codec.count_text_tokens(r) for r in refs)
    blind = text_metrics(blinds, refs)
    metrics.update({
        "codec": codec.name, "mode": codec.mode, "version": codec.version,
        "render_config_id": cfg.id, "visual_tokens_per_page": n_tokens / len(pages),
        "text_tokens_per_page": text_tokens / len(pages),
        "compression": text_tokens / n_tokens,  # cl100k text tokens per visual token
        "chars_per_visual_token": sum(len(r) for r in refs) / n_tokens,
        "encode_pages_per_s": len(pages) / max(t_enc, 1e-9),
        "decode_pages_per_s": len(pages) / max(t_dec, 1e-9),
        "blind_precision": blind["precision"], "blind_cer": blind["cer"],
        "blind_chrf": blind["chrf"],
    })
    records = [{"doc": d, "page": p.index, "start": p.start, "end": p.end,
                "precision": precision(pred, p.text), "text_tokens": codec.count_text_tokens(p.text),
                "ref": p.text, "pred": pred} for (d, p), pred in zip(pages, preds)]
    return {"metrics": metrics, "records": records, "images": images}


def run_fidelity(texts: Sequence[str], codec_specs: Sequence[Any] = ("mini",),
                 out_dir: str | Path = "runs/fidelity", max_pages: int | None = 64,
                 samples: int = 3, progress: bool = True, source: str = "") -> dict:
    """Evaluate each codec spec on `texts`; writes metrics.json, pages.jsonl, report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, per_codec = {}, {}
    for spec in codec_specs:
        label, codec = _codec(spec)
        res = evaluate_codec(codec, texts, max_pages, progress=progress, label=label)
        results[label] = res["metrics"]
        per_codec[label] = res
    summary = {"source": source, "documents": len(texts), "max_pages": max_pages,
               "results": results,
               "anchors": {k: [{"compression": c, "precision": p} for c, p in v]
                           for k, v in FOX_ANCHORS.items()},
               "definitions": {
                   "precision": "mean over pages of max(0, 1 - Levenshtein(pred, ref) / len(ref))",
                   "compression": "cl100k_base text tokens per visual token",
                   "blind_precision": "precision of the decoder given null tokens"}}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (out / "pages.jsonl").open("w") as fh:
        for label, res in per_codec.items():
            for rec in res["records"]:
                fh.write(json.dumps({"codec": label, **rec}, ensure_ascii=False) + "\n")
    write_report(out, summary, per_codec, samples)
    summary["report"] = str(out / "report.html")
    return summary


# ------------------------------------------------------------------------------- report

def diff_html(ref: str, pred: str) -> str:
    """Decoded text with differences marked: <ins> added by the codec, <del> missed."""
    parts = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, ref, pred, autojunk=False).get_opcodes():
        if op == "equal":
            parts.append(html.escape(pred[b0:b1]))
        if op in ("delete", "replace"):
            parts.append(f"<del>{html.escape(ref[a0:a1])}</del>")
        if op in ("insert", "replace"):
            parts.append(f"<ins>{html.escape(pred[b0:b1])}</ins>")
    return "".join(parts)


def plot_png(results: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for name, pts in FOX_ANCHORS.items():
        ax.plot([c for c, _ in pts], [100 * p for _, p in pts], "s--", alpha=0.7, label=name)
    by_codec: dict[str, list] = {}
    for label, m in results.items():
        by_codec.setdefault(m["codec"], []).append((m["compression"], 100 * m["precision"], label))
    for codec, pts in by_codec.items():
        pts.sort()
        ax.plot([c for c, _, _ in pts], [p for _, p, _ in pts], "o-", label=f"{codec} (this run)")
        for c, p, label in pts:
            ax.annotate(label.split(":")[-1], (c, p), textcoords="offset points", xytext=(4, -10))
    ax.set_xlabel("compression (text tokens per visual token, cl100k)")
    ax.set_ylabel("precision (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _png_b64(image) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_report(out: Path, summary: dict, per_codec: dict, samples: int) -> Path:
    png = plot_png(summary["results"])
    (out / "precision_vs_compression.png").write_bytes(png)
    keys = ["precision", "cer", "bleu", "chrf", "rouge_l", "exact_match", "compression",
            "chars_per_visual_token", "visual_tokens_per_page", "encode_pages_per_s",
            "decode_pages_per_s", "blind_precision", "pages"]
    head = "".join(f"<th>{k}</th>" for k in ["codec", *keys])
    rows = "".join("<tr><td>" + html.escape(label) + "</td>" + "".join(
        f"<td>{m[k]:.4g}</td>" if isinstance(m[k], float) else f"<td>{m[k]}</td>" for k in keys)
        + "</tr>" for label, m in summary["results"].items())
    blocks = []
    for label, res in per_codec.items():
        for rec, image in list(zip(res["records"], res["images"]))[:samples]:
            blocks.append(
                f"<h3>{html.escape(label)}: document {rec['doc']}, page {rec['page']} "
                f"(precision {rec['precision']:.4f})</h3><div class='pair'>"
                f"<img src='data:image/png;base64,{_png_b64(image)}' width='512'>"
                f"<pre>{diff_html(rec['ref'], rec['pred'])}</pre></div>")
    page = (
        "<!doctype html><meta charset='utf-8'><title>Codec fidelity</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".pair{display:flex;gap:12px;align-items:flex-start}"
        "pre{font-size:11px;white-space:pre-wrap;max-width:640px}"
        "ins{background:#fbb;text-decoration:none}del{background:#bdf}</style>"
        f"<h1>Codec fidelity round trip</h1><p>Source: {html.escape(summary['source'])}, "
        f"{summary['documents']} documents. Precision = mean over pages of "
        "max(0, 1 - edit distance / reference length); compression = cl100k text tokens per "
        "visual token; blind = decoder given null tokens. Numbers: "
        "<a href='metrics.json'>metrics.json</a>, per page: <a href='pages.jsonl'>pages.jsonl</a>."
        f"</p><table><tr>{head}</tr>{rows}</table>"
        f"<h2>Precision vs compression</h2><img src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'><p>Squares: DeepSeek-OCR's published Fox-benchmark "
        "points (a different benchmark and page type), for scale only.</p>"
        "<h2>Sample pages</h2><p>Decoded text: <ins>inserted/wrong</ins>, <del>missed</del>.</p>"
        + "".join(blocks))
    path = out / "report.html"
    path.write_text(page)
    return path


# ------------------------------------------------------------------------------- CLI

def load_texts(source: Path | None, max_docs: int | None = None) -> tuple[list[str], str]:
    """Texts of a corpus/text file (anything data.corpus reads), or the held-out topics."""
    if source is None:
        from data.corpus import heldout_texts

        # topics long enough to fill pages, so compression is measured on full pages
        return (heldout_texts(n=max_docs or 32, min_chars=2000, max_chars=12000),
                "held-out pydoc_data topics")
    from data.corpus import read_corpus

    texts = []
    for doc in read_corpus(source):
        texts.append(doc.text)
        if max_docs is not None and len(texts) >= max_docs:
            break
    return texts, str(source)


def fidelity(
    source: Annotated[Path | None, typer.Argument(
        help="Corpus or text file (.txt/.jsonl/.jsonl.zst/.parquet/dir); default: held-out "
             "pydoc_data topics.")] = None,
    codec: Annotated[list[str] | None, typer.Option(
        "--codec", help="Codec spec name[:mode]; repeat to compare. Default: every mini mode.")] = None,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("runs/fidelity"),
    max_pages: Annotated[int, typer.Option(help="Pages per codec.")] = 64,
    max_docs: Annotated[int | None, typer.Option(help="Documents to read.")] = None,
    samples: Annotated[int, typer.Option(help="Sample pages shown per codec.")] = 3,
    codec_path: Annotated[Path | None, typer.Option(
        help="Weights/checkpoint folder passed to every codec as `path`.")] = None,
) -> None:
    """Round-trip text through render -> encode -> decode; report precision vs compression."""
    from rich.console import Console

    from codec.mini import MODES

    texts, name = load_texts(source, max_docs)
    specs = codec or [f"mini:{m}" for m in MODES]
    if codec_path is not None:
        specs = [{"name": spec, "path": str(codec_path)} for spec in specs]
    summary = run_fidelity(texts, specs, out, max_pages=max_pages, samples=samples, source=name)
    console = Console()
    for label, m in summary["results"].items():
        console.print(f"{label}: precision {m['precision']:.4f} at {m['compression']:.1f}x "
                      f"(blind {m['blind_precision']:.3f}), CER {m['cer']:.4f}, "
                      f"chrF {m['chrf']:.1f}, encode {m['encode_pages_per_s']:.1f} p/s, "
                      f"decode {m['decode_pages_per_s']:.1f} p/s")
    console.print(f"[green]report:[/green] {summary['report']}")
