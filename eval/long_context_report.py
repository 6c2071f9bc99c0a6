"""The long-context study's report: score against context length per family and budget,
positions, KV bytes and prefill seconds per sample, FLOPs, the held-out family, and the
issue's targets, from `summary.json` (jobs/long_context.py writes it).

    python -m eval.long_context_report runs/long_context      # rewrite report.md + plots
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FAMILY_LABEL = {"vst": "VST (frozen reader, pointer)", "vst_hier": "VST (hierarchical reader)",
                "text_cl100k": "text cl100k", "text_bytes": "text bytes",
                "truncation": "cl100k truncated to the VST's positions",
                "text_cl100k_short": "text cl100k trained on short samples only"}


def _k(n) -> str:
    """4000 -> '4K', 1500 -> '1.5K'."""
    return f"{int(n) / 1000:g}K"


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def task_means(scores: dict, tasks: list[str]) -> dict[str, float]:
    """Mean score over `tasks` at each length {length: score} (lengths are string keys,
    as jobs/long_context.py writes them)."""
    lengths = sorted({int(k) for t in tasks for k in scores.get(t, {})})
    return {str(n): _mean(_get(scores, t, n) for t in tasks) for n in lengths}


def _get(scores: dict, task: str, length) -> float | None:
    return scores.get(task, {}).get(str(length))


def plot(summary: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = set(summary.get("heldout_tasks", []))
    paths = []
    for budget, res in sorted(summary["by_budget"].items(), key=lambda kv: float(kv[0])):
        fams = [f for f in FAMILY_LABEL if "scores" in res.get(f, {})]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, which in zip(axes, ("trained", "held-out")):
            for fam in fams:
                sc = res[fam]["scores"]
                tasks = [t for t in sc if (t in held) == (which == "held-out")]
                if not tasks:
                    continue
                m = task_means(sc, tasks)
                xs = sorted(int(k) for k in m)
                ax.plot(xs, [m[str(x)] for x in xs], marker="o", label=FAMILY_LABEL[fam])
            ax.set_xscale("log")
            ax.minorticks_off()
            xs_all = sorted({int(n) for fam in fams for t in res[fam]["scores"]
                             for n in res[fam]["scores"][t]})
            ax.set_xticks(xs_all, [_k(x) for x in xs_all])
            ax.set_xlabel("context length (characters)")
            ax.set_title(f"{which} tasks, {float(budget):.2g} training FLOPs")
        axes[0].set_ylabel("RULER string_match_all (mean over tasks)")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        path = out / f"score_vs_length_{float(budget):.2g}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def targets(summary: dict) -> list[tuple[str, str, str]]:
    """(target, measured, met) rows of issue #23."""
    sc, pos = summary["scores"], summary["positions"]
    rows = []
    at4k = {f: _get(sc[f], "niah_single_1", 4000) for f in sc}
    ok = all(v is not None and v >= 90 for v in at4k.values())
    rows.append(("every family >= 90% single NIAH at 4K characters",
                 ", ".join(f"{f} {v}" for f, v in at4k.items()), "yes" if ok else "no"))
    held = set(summary.get("heldout_tasks", []))
    trained = [t for t in sc.get("vst", {}) if t not in held]
    for n in (32000, 64000):
        v = task_means(sc.get("vst", {}), trained).get(str(n))
        texts = [(task_means(sc[f], trained).get(str(n)), f)
                 for f in ("text_cl100k", "text_bytes") if f in sc]
        texts = [(s, f) for s, f in texts if s is not None]
        if v is None or not texts:
            rows.append((f"VST >= best text at {_k(n)}", "not measured at this length", "-"))
            continue
        best = max(texts)
        p_v = pos.get("vst", {}).get(str(n))
        p_t = pos.get("text_cl100k", {}).get(str(n))
        ratio = p_t / p_v if p_v and p_t else float("nan")
        met = v >= best[0] and ratio >= 7
        rows.append((f"VST >= best text at {_k(n)}, >= 7x fewer positions than cl100k",
                     f"VST {v:.1f} vs {best[1]} {best[0]:.1f}; {ratio:.1f}x fewer positions",
                     "yes" if met else "no"))
    if "truncation" in sc and "truncation" in pos:
        tr = task_means(sc["truncation"], ["niah_single_1", "niah_single_2"])
        share = {n: min(1.0, pos["truncation"].get(n, 0) / max(pos.get("text_cl100k", {})
                                                               .get(n, 1), 1))
                 for n in tr}
        rows.append(("truncation falls to the share of needles in its window",
                     "; ".join(f"{_k(n)}: {v:.0f} (window {100 * share[n]:.0f}%)"
                               for n, v in tr.items()), "see table"))
    hv = [task_means(sc.get("vst", {}), [t]) for t in held]
    best_h = max((max(m.values()) if m else 0.0) for m in hv) if hv else 0.0
    rows.append(("never-trained family > 0 for the VST", f"max {best_h:.1f}",
                 "yes" if best_h > 0 else "no"))
    return rows


def write_report(root: Path, summary: dict) -> Path:
    root = Path(root)
    plots = plot(summary, root)
    held = set(summary.get("heldout_tasks", []))
    lines = ["# Long-context study (issue #23)", "",
             f"Commit `{summary['commit'][:10]}`; {summary['study_seconds'] / 60:.0f} min. "
             "Scores are RULER's string_match_all (percent), end to end through the runners.",
             ""]
    for budget, res in sorted(summary["by_budget"].items(), key=lambda kv: float(kv[0])):
        fams = [f for f in FAMILY_LABEL if "scores" in res.get(f, {})]
        tasks = sorted({t for f in fams for t in res[f]["scores"]})
        lengths = sorted({int(n) for f in fams for t in res[f]["scores"]
                          for n in res[f]["scores"][t]})
        lines += [f"## Budget {float(budget):.2g} training FLOPs", "",
                  "| family | task | " + " | ".join(_k(n) for n in lengths) + " |",
                  "|---|---|" + "---|" * len(lengths)]
        for f in fams:
            for t in tasks:
                vals = [_get(res[f]["scores"], t, n) for n in lengths]
                tag = " (never trained)" if t in held else ""
                lines.append(f"| {f} | {t}{tag} | " + " | ".join(
                    "-" if v is None else f"{v:.0f}" for v in vals) + " |")
        lines += ["", "| family | train FLOPs | steps | text depth | " +
                  " | ".join(f"positions {_k(n)}" for n in lengths) + " |",
                  "|---|---|---|---|" + "---|" * len(lengths)]
        for f in fams:
            st = res[f].get("stats", {})
            pos = [st.get(str(n), st.get(n, {})).get("positions") for n in lengths]
            lines.append(f"| {f} | {res[f].get('train_flops', 0):.3g} | {res[f].get('steps', '-')}"
                         f" | {res[f].get('depth', '-')} | " + " | ".join(
                             "-" if p is None else f"{p:.0f}" for p in pos) + " |")
        for f, v in res.items():
            if "skipped" in v:
                lines.append(f"\n{f}: {v['skipped']}")
        lines.append("")
    lines += ["## Cost per sample at the largest budget", "",
              "| family | length | positions | KV bytes | prefill + answer seconds |",
              "|---|---|---|---|---|"]
    for f, by in summary["positions"].items():
        for n, p in by.items():
            lines.append(f"| {f} | {_k(n)} | {p:.0f} | "
                         f"{summary['kv_bytes'][f][n] / 1e6:.2f} MB | "
                         f"{summary['prefill_seconds'][f][n]:.2f} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in targets(summary)]
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    path = root / "report.md"
    path.write_text("\n".join(lines))
    return path


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/long_context")
    print(write_report(root, json.loads((root / "summary.json").read_text())))
