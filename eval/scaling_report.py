"""The scaling study's report: report.html and its PNG plots, from a sweep's rows and fits.

    vst sweep --report-only --out runs/sweep     # redraw OUT/report.html from results.csv

Plots (matplotlib, Agg): held-out bits per byte against training FLOPs for every family on
one axes with the fitted L(C) and its bootstrap band; the compute-optimal depth at each
budget; bits per byte against positions per document (what each family reads a document
as: the VST's visual tokens, the text models' tokens).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from eval.scaling import CONTROL_FAMILY, VST_FAMILY, frontier, grid_rows, predict_compute

COLOURS = {VST_FAMILY: "tab:blue", "text-bytes": "tab:orange", "text-cl100k": "tab:green"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(fam: str) -> str:
    return COLOURS.get(fam, "tab:gray")


def plot_bpb_vs_flops(rows: list[dict], analysis: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for fam, res in analysis["families"].items():
        fr = [r for r in grid_rows(rows) if r["family"] == fam]
        ax.scatter([float(r["train_flops"]) for r in fr], [float(r["bpb"]) for r in fr],
                   color=_colour(fam), s=[14 + 6 * int(r["depth"]) for r in fr], alpha=0.75,
                   label=f"{fam} trials (marker size: depth)")
        fit, band = res.get("fit"), res.get("bootstrap") or {}
        if fit is not None:
            cg = np.geomspace(*fit["C_range"], 100)
            ax.plot(cg, predict_compute(fit, cg), color=_colour(fam),
                    label=f"{fam} fit: {fit['E']:.2f} + A C^-{fit['alpha']:.3f}")
        if band:
            ax.fill_between(band["band_C"], band["band_lo"], band["band_hi"],
                            color=_colour(fam), alpha=0.15, linewidth=0)
    for c in analysis.get("crossovers", []):
        if c["cross"]:
            ax.axvline(c["cross"]["C"], color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (the VST's include decoder-CE through the frozen codec)")
    ax.set_ylabel("held-out bits per byte")
    ax.set_title(f"bits per byte vs compute (fit on the {analysis['points']}; "
                 "bands: bootstrap 95%)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, plt, path)


def plot_optimal_depth(analysis: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for fam, res in analysis["families"].items():
        opt = res["optimal_depth"]
        ax.plot([o["budget"] for o in opt], [o["depth"] for o in opt], "o-",
                color=_colour(fam), label=fam)
    ax.set_xscale("log")
    ax.set_xlabel("training budget (FLOPs)")
    ax.set_ylabel("depth with the lowest held-out bpb")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def plot_bpb_vs_positions(rows: list[dict], positions: dict[str, float], path: Path) -> Path:
    """Every trial's bpb at the positions per document its family reads."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for fam in sorted({r["family"] for r in grid_rows(rows)}):
        fr = [r for r in grid_rows(rows) if r["family"] == fam]
        x = positions.get(fam)
        if not x:
            continue
        big = max(float(r["budget"]) for r in fr)
        ax.scatter([x] * len(fr), [float(r["bpb"]) for r in fr], color=_colour(fam),
                   alpha=[1.0 if float(r["budget"]) == big else 0.35 for r in fr],
                   label=f"{fam} (opaque: largest budget)")
    ax.set_xscale("log")
    ax.set_xlabel("positions per document (VST: visual tokens; text: its tokens)")
    ax.set_ylabel("held-out bits per byte")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        return format(float(v), spec)
    return html.escape(str(v))


def _table(header: list[str], body: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def _ci(band: dict, key: str) -> str:
    return f"[{band[key][0]:.4g}, {band[key][1]:.4g}]" if key in band else "-"


def reader_controls(rows: list[dict]) -> list[dict]:
    """Per VST family and budget: its best trial, the reader-only control at that budget
    (the trained control for a trained reader; the frozen reader's prior, the trials'
    bpb_null, otherwise) and the context gain (control - VST)."""
    grid = grid_rows(rows)
    out = []
    vst_families = sorted({r["family"] for r in grid if r["family"].startswith(VST_FAMILY)})
    for r in (r for fam in vst_families for r in frontier([r for r in grid
                                                            if r["family"] == fam])):
        budget = float(r["budget"])
        if r["family"] == VST_FAMILY:  # the frozen reader: its prior
            if r.get("bpb_null") in (None, ""):  # a codec without a prior to read
                continue
            control, bpb = "frozen reader's prior", float(r["bpb_null"])
        else:
            ctl = [float(c["bpb"]) for c in grid if c["family"] == CONTROL_FAMILY
                   and float(c["budget"]) == budget]
            if not ctl:
                continue
            control, bpb = "trained reader, null tokens", min(ctl)
        out.append({"family": r["family"], "budget": budget, "vst_bpb": float(r["bpb"]),
                    "control": control, "control_bpb": bpb,
                    "context_gain": bpb - float(r["bpb"])})
    return out


def write_report(rows: list[dict], analysis: dict, out: str | Path,
                 positions: Optional[dict[str, float]] = None,
                 columns: Optional[list[str]] = None) -> Path:
    """OUT/report.html plus bpb_vs_flops.png, optimal_depth.png, bpb_vs_positions.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_bpb_vs_flops(rows, analysis, out / "bpb_vs_flops.png")
    plot_optimal_depth(analysis, out / "optimal_depth.png")
    parts = ["<h1>Scaling: the VST against same-shape text baselines</h1>",
             "<p>Held-out bits per byte (VST: the true text under the frozen decoder given "
             "its predicted tokens; text: its own) against training FLOPs, the VST's "
             "decoder-CE included.</p>", '<img src="bpb_vs_flops.png">', "<h2>Crossover</h2>"]
    crosses = analysis.get("crossovers") or []
    parts += [f"<p>{html.escape(c['statement'])}</p>" for c in crosses] or [
        "<p>No crossover computed: the VST and a text family each need a fitted curve.</p>"]
    parts.append("<h2>Fits of L(C) = E + A C<sup>-alpha</sup></h2>")
    body = []
    for fam, res in analysis["families"].items():
        f, b = res.get("fit"), res.get("bootstrap") or {}
        body.append([fam, res["trials"], f and f["form"], f and f["E"], _ci(b, "E"),
                     f and f["alpha"], _ci(b, "alpha"), f and f["log10_A"], _ci(b, "log10_A"),
                     f and f["rmse"], b.get("resamples")])
    parts.append(_table(["family", "trials", "form", "E", "E 95%", "alpha", "alpha 95%",
                         "log10 A", "log10 A 95%", "rmse", "bootstrap fits"], body))
    parts.append("<h2>Held-out largest budget: prediction against measurement</h2>")
    body = []
    for fam, res in analysis["families"].items():
        ho = res.get("holdout")
        for p in (ho or {}).get("predictions", []):
            body.append([fam, p["trial"], p["depth"], p["train_flops"], p["measured"],
                         p["predicted"], p["error"], res.get("seed_noise"),
                         res.get("seed_noise_from"), p["within_noise"]])
    parts.append(_table(["family", "trial", "depth", "FLOPs", "measured bpb", "predicted",
                         "error", "seed noise (sd)", "noise from", "within 2 sd"], body)
                 if body else "<p>No hold-out: a family needs at least 3 budgets.</p>")
    parts.append("<h2>L(N, D) = E + A N<sup>-a</sup> + B D<sup>-b</sup></h2>")
    body = []
    for fam, res in analysis["families"].items():
        f = res.get("size_data_fit")
        body.append([fam, f and f["E"], f and f["a"], f and f["b"], f and f["rmse"],
                     res.get("size_data_note", "" if f else "did not converge")])
    parts.append(_table(["family", "E", "a (size)", "b (data)", "rmse", "note"], body))
    parts += ["<h2>What the VST adds over its reader alone</h2>",
              "<p>The reader-only control is the VST's reader given null tokens, trained with "
              "the same steps, data and schedule (family reader-control); for a VST read by "
              "the frozen codec it is the codec's prior. Context gain = control - VST.</p>"]
    body = [[c["family"], c["budget"], c["vst_bpb"], c["control"], c["control_bpb"],
             c["context_gain"]] for c in reader_controls(rows)]
    parts.append(_table(["VST family", "budget", "best VST bpb", "control", "control bpb",
                         "context gain"], body) if body else "<p>No VST trials.</p>")
    parts += ["<h2>Compute-optimal depth per budget</h2>", '<img src="optimal_depth.png">']
    body = [[fam, o["budget"], o["depth"], o["bpb"]] for fam, res in
            analysis["families"].items() for o in res["optimal_depth"]]
    parts.append(_table(["family", "budget", "best depth", "bpb"], body))
    if positions:
        plot_bpb_vs_positions(rows, positions, out / "bpb_vs_positions.png")
        parts += ["<h2>Bits per byte against positions per document</h2>",
                  '<img src="bpb_vs_positions.png">',
                  _table(["family", "positions per document"], [[k, v] for k, v in
                                                                 positions.items()])]
    cols = columns or list(rows[0]) if rows else []
    parts += ["<h2>Trials (results.csv)</h2>",
              _table(cols, [[r.get(c) for c in cols] for r in rows])]
    style = ("<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
             "padding:2px 6px}img{max-width:100%}</style>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>VST scaling</title>" \
           f"{style}</head><body>{''.join(parts)}</body></html>"
    path = out / "report.html"
    path.write_text(page)
    return path
