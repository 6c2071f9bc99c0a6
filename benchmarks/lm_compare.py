"""Does the VST learn? The targets of the speedrun, measured as ratios side by side.

    python benchmarks/lm_compare.py                                # runs `vst speedrun` (~60 min)
    python benchmarks/lm_compare.py --summary runs/speedrun/summary.json   # an existing run

Prints one table: each target, the measured ratio, and whether it is met. The numbers
come from one speedrun (corpus -> store -> VST and text baselines -> `vst eval compare`),
so every ratio compares models scored on the same pages in the same run. The text model
at equal FLOPs is the frontier's (`jobs.frontier`: the best of several sizes); the lines
under the table say which size won for each tokenizer, and what context beyond the page
is worth to it (Delta_text).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def rows(s: dict) -> list[tuple[str, float, str, bool]]:
    """(what, measured ratio, target, met) for every target of the speedrun."""
    def ratio(a: str, b: str) -> float:
        x, y = s.get(a), s.get(b)
        return x / y if x is not None and y not in (None, 0) else math.nan

    share = s.get("gen_vocab_share_vst")
    share = math.nan if share is None else share
    out = [
        ("bpb_pred / bpb_null, held-out documents", ratio("bpb_pred", "bpb_null"), "<= 0.75"),
        ("bpb_pred / bpb_null, held-out source", ratio("bpb_pred_heldout_source",
                                                       "bpb_null_heldout_source"), "<= 0.85"),
        ("bpb_pred / text bpb, equal wall-clock", ratio("bpb_pred", "bpb_text_equal_wallclock"),
         "<= 1.15"),
        ("VST free-running words in the corpus vocabulary", share, ">= 0.80"),
        ("judge bpb of VST samples / of text samples", ratio("gen_judge_bpb_vst",
                                                              "gen_judge_bpb_text"), "<= 1.5"),
        ("bpb_pred / text bpb, equal FLOPs (higher goal)", ratio("bpb_pred",
                                                                 "bpb_text_equal_flops"), "<= 1.0"),
        ("bpb_pred / truncated text bpb (the critique's baseline)", ratio("bpb_pred",
                                                                          "bpb_truncation"), "< 1"),
    ]
    pos = s.get("positions_per_document") or {}
    if pos.get("vst"):
        out.append(("text_bytes positions / VST positions per document (higher goal)",
                    pos.get("text_bytes", math.nan) / pos["vst"], ">= 7"))
    # issue #22: does the VST use its context? (credited over its reader-only control)
    def value(key: str) -> float:
        return math.nan if s.get(key) is None else s[key]

    out += [
        ("Delta_VST / Delta_text, held-out documents (the VST uses context)",
         value("context_gain_ratio"), ">= 1.0"),
        ("Delta_VST / Delta_text, held-out source", value("context_gain_ratio_heldout_source"),
         ">= 0.5"),
        ("bpb_pred / the text frontier's bpb, equal FLOPs", ratio(
            "bpb_pred", "bpb_text_frontier_equal_flops"), "<= 1.0"),
        ("VST free-running words in the corpus vocabulary, re-grounded",
         value("gen_vocab_share_vst_regrounded"), ">= 0.80"),
    ]
    if pos.get("vst") and pos.get("text_cl100k"):
        out.append(("text_cl100k positions / VST positions per document",
                    pos["text_cl100k"] / pos["vst"], ">= 7"))
    result = []
    for what, value, target in out:
        op, bound = target.split()
        met = (value <= float(bound) if op == "<=" else value >= float(bound) if op == ">="
               else value < float(bound)) if value == value else False
        result.append((what, value, target, met))
    return result


def table(s: dict) -> str:
    lines = [f"lm_compare | speedrun at {s.get('commit')} | wall-clock "
             f"{(s.get('wall_clock_s') or 0) / 60:.1f} min | corpus {s.get('corpus_chars', 0):,} "
             "chars", "| target | measured | goal | met |", "|---|---|---|---|"]
    for what, value, target, met in rows(s):
        lines.append(f"| {what} | {value:.3f} | {target} | {'yes' if met else 'no'} |")
    lines.append(f"| the speedrun's wall-clock, minutes | {(s.get('wall_clock_s') or 0) / 60:.1f} "
                 f"| <= 60 | {'yes' if (s.get('wall_clock_s') or 1e9) <= 3600 else 'no'} |")
    return "\n".join(lines + frontier_lines(s))


def frontier_lines(s: dict) -> list[str]:
    """Which size of text model won at the VST's FLOPs, per tokenizer, and Delta_text."""
    frontier = s.get("text_frontier")
    if not frontier:
        return ["", "text frontier: not in this summary (a speedrun before the frontier: one "
                "fixed size per tokenizer)"]
    out = [""]
    for f in frontier.values():
        out.append(f"text frontier: {f['statement']}")
        short = f.get("short_of_budget") or []
        if short:  # equal FLOPs holds only for candidates that reached the budget
            out.append(f"  {len(short)} of {len(f['candidates'])} stopped at their wall-clock "
                       f"share short of the FLOPs budget: {', '.join(short)}")
    best = s.get("bpb_text_frontier_equal_flops")
    if best is not None:
        out.append(f"best text family at equal FLOPs: {s.get('text_frontier_family')} "
                   f"({best:.3f} bpb on held-out documents)")
    gain = s.get("context_gain_text")
    if gain is not None:
        out.append(f"context gain of the frontier byte model (page cut {s['bpb_text_page_cut']:.3f}"
                   f" - full context {s['bpb_text_equal_flops']:.3f}): {gain:+.3f} bpb")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--summary", type=Path, help="summary.json of a finished speedrun")
    p.add_argument("--out", default="runs/speedrun", help="where to run the speedrun")
    args = p.parse_args()
    if args.summary is None:
        from jobs.speedrun import SpeedrunConfig, speedrun

        summary = speedrun(SpeedrunConfig(out=args.out))
    else:
        summary = json.loads(args.summary.read_text())
    print(table(summary))


if __name__ == "__main__":
    main()
