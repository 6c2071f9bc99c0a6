"""Issue #23's targets, side by side, from a long-context study's summary.json.

    vst curriculum study --out runs/long_context --corpus CORPUS_DIR     # writes the summary
    python benchmarks/long_context.py runs/long_context/summary.json
    python benchmarks/long_context.py docs/results/long_context/summary.json   # the shipped run

Prints the mean score over the trained tasks at each length for every family, positions
against cl100k, and the target table (eval/long_context_report.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eval.long_context_report import targets, task_means


def main(path: str) -> None:
    s = json.loads(Path(path).read_text())
    held = set(s.get("heldout_tasks", []))
    lengths = sorted({int(n) for f in s["scores"].values() for t in f.values() for n in t})
    print(f"budget {s['budget']:.3g} training FLOPs; mean string_match_all over trained tasks")
    print("| family | " + " | ".join(f"{n // 1000}K" for n in lengths) + " | train FLOPs |")
    print("|---|" + "---|" * (len(lengths) + 1))
    for fam, scores in s["scores"].items():
        m = task_means(scores, [t for t in scores if t not in held])
        print(f"| {fam} | " + " | ".join(f"{m.get(str(n), float('nan')):.1f}" for n in lengths)
              + f" | {s['train_flops'][fam]:.3g} |")
    pos = s["positions"]
    print("\n| length | VST positions | cl100k positions | cl100k / VST |")
    print("|---|---|---|---|")
    for n in lengths:
        v, t = pos["vst"].get(str(n)), pos["text_cl100k"].get(str(n))
        print(f"| {n // 1000}K | {v:.0f} | {t:.0f} | {t / v:.1f}x |")
    print("\n| target (#23) | measured | met |\n|---|---|---|")
    for row in targets(s):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/long_context/summary.json")
