r"""The speedrun: corpus -> conversion -> VST -> text baselines -> the honest comparison.

    vst speedrun --out runs/speedrun                    # ~60 minutes on a 2-core CPU
    vst speedrun --out runs/speedrun --gpu              # the same script on one GPU
    vst speedrun --out runs/speedrun --minutes 10       # a shorter twin (smoke test)
    vst speedrun --out runs/speedrun-hier --recipe hier # the hierarchical reader + its control

Stages, each skipped when its output exists (re-run to resume after a kill):

1. corpus   `vst corpus build` from the Debian documentation packages and pydoc
2. convert  the training file and the held-out source through the Ray conversion job
3. train    the VST (`--recipe learn`, or `hier`) and the byte-level text model side by
            side, one CPU core each for the same wall-clock (equal wall-clock); with `hier`,
            then its reader-only control (`hier-control`) for the VST's steps
4. train    the text frontier at the VST's training FLOPs, decoder-CE counted (equal
            FLOPs): for bytes and for cl100k, --frontier-depth sizes (x --frontier-lr) side
            by side, the best of each chosen on documents that are neither trained on nor
            held out (`jobs.frontier`); all candidates share phase 1's wall-clock (one that
            is slower per FLOP stops there; its FLOPs are in frontier.json)
5. compare  `eval.compare` on the held-out documents and the held-out source (each text
            model also with its context cut to the page), free-running continuations
            judged by the longest-trained byte model

It writes OUT/summary.json (the headline numbers), OUT/compare/compare.md and
OUT/report.md with a plot of held-out bits per byte against training FLOPs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from data.errors import BadInput, UserError


@dataclass
class SpeedrunConfig:
    """Corpus -> conversion -> VST -> text baselines -> comparison, in one command."""

    out: str = "runs/speedrun"  # run directory (re-run to resume)
    minutes: float = 60.0  # budget of the whole run; each training phase gets train_share of it
    gpu: bool = False  # train on the GPU (cuda) instead of one CPU core per run
    train_share: float = 0.25  # share of the budget for each of the two training phases
    convert_actors: int = 2  # encoder actors of the conversion job
    corpus_max_chars_per_source: Optional[int] = None  # cap each corpus source
    compare_windows: int = 32  # held-out windows scored per split
    generations: int = 6  # held-out documents continued freely
    recipe: str = "learn"  # the VST's recipe: learn (the frozen reader: its reader-only control is
        # the codec's prior) | hier (a trained reader: its control, hier-control, trains after
        # phase 1 for the VST's steps)
    frontier_depth: list[int] = field(default_factory=lambda: [2, 3, 4])  # text frontier sizes
        # (the depth dial of the recipes' flavour), repeatable
    frontier_lr: list[float] = field(default_factory=list)  # text frontier learning rates,
        # repeatable (default: the recipes' own)
    frontier_share: float = 1.0  # wall-clock cap of each text family's frontier, in training
        # phases (its candidates train to the VST's FLOPs; with 3 sizes two at a time, 0.5
        # left the larger ones short of the budget: frontier.json's reached_budget says)
    seed: int = 0  # seed of every training run

    def __post_init__(self) -> None:  # before the corpus is built
        if self.minutes <= 0 or not 0 < self.train_share <= 0.5:
            raise BadInput(f"need --minutes > 0 and 0 < --train-share <= 0.5 (two training "
                           f"phases); got {self.minutes} and {self.train_share}")
        if self.recipe not in ("learn", "hier"):
            raise BadInput(f"--recipe must be learn or hier; got {self.recipe!r}")
        if min(self.convert_actors, self.compare_windows) < 1:
            raise BadInput("--convert-actors and --compare-windows must be at least 1")


def _log(msg: str) -> None:
    print(f"[speedrun {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage_corpus(cfg: SpeedrunConfig, out: Path) -> dict:
    from data.corpus.build import build_corpus

    manifest = out / "corpus" / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())
    return build_corpus(out / "corpus", max_chars_per_source=cfg.corpus_max_chars_per_source,
                        log=_log)


def stage_convert(cfg: SpeedrunConfig, out: Path) -> dict:
    from jobs.convert.driver import run_conversion

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    res = {}
    for name, corpus in (("store", "train.jsonl.zst"), ("heldout_store", "heldout_source.jsonl.zst")):
        summary = out / name / "summary.json"
        if not summary.exists():
            run_conversion(out / "corpus" / corpus, out / name, num_actors=cfg.convert_actors,
                           num_parts=16 if name == "store" else 2,
                           gpus_per_actor=0.0)
        res[name] = json.loads(summary.read_text())
    return res


def _train_cmd(out: Path, run: str, recipe: str, cfg: SpeedrunConfig, **budget: Any) -> list[str]:
    cmd = [sys.executable, "-m", "jobs.cli", "train", "--recipe", recipe, "--data", str(out / "store"),
           "--out", str(out / run), "--steps", "1000000", "--eval-points", "4",
           "--eval-batches", "2", "--save-every", "0", "--eval-every", "0",
           "--no-tensorboard", "--no-progress", "--seed", str(cfg.seed)]
    if cfg.gpu:
        cmd += ["--device", "cuda"]
    else:
        cmd += ["--threads", "1", "--device", "cpu"]
    for key, value in budget.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def train_side_by_side(out: Path, runs: dict[str, list[str]]) -> dict[str, dict]:
    """Start every run at once (one core each on CPU) and wait; skip runs already done."""
    procs = {}
    for name, cmd in runs.items():
        if (out / name / "result.json").exists():
            continue
        log = open(out / f"{name}.log", "w")
        _log(f"train {name}: {' '.join(cmd[2:])}")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"}), log)
    for name, (proc, log) in procs.items():
        status = proc.wait()
        log.close()
        if status == 2:  # `vst train` stopped on a user's mistake; its log ends with the line
            raise UserError(f"training {name} stopped on an error",
                            hint=f"its last line in {out / (name + '.log')} says why")
        if status != 0:
            raise RuntimeError(f"training {name} failed; see {out / (name + '.log')}")
    return {name: json.loads((out / name / "result.json").read_text()) for name in runs}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def speedrun(cfg: SpeedrunConfig) -> dict:
    from eval.compare import CompareConfig, compare
    from jobs.frontier import FrontierConfig, text_frontier

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _log("corpus")
    manifest = stage_corpus(cfg, out)
    _log("convert")
    conversion = stage_convert(cfg, out)
    # training gets a fixed share of the budget per phase; the rest is for the stages
    train_s = cfg.minutes * 60 * cfg.train_share
    _log(f"train phase 1 (equal wall-clock, {train_s / 60:.1f} min each)")
    phase1 = train_side_by_side(out, {
        "vst": _train_cmd(out, "vst", cfg.recipe, cfg, max_seconds=train_s),
        "text_bytes_wallclock": _train_cmd(out, "text_bytes_wallclock", "text-bytes", cfg,
                                           max_seconds=train_s),
    })
    control = None
    if cfg.recipe == "hier":  # the VST's reader alone on null tokens, for the VST's steps
        steps = phase1["vst"]["steps"]
        _log(f"train the reader-only control ({steps} steps, as the VST's reader)")
        train_side_by_side(out, {"reader_control": _train_cmd(
            out, "reader_control", "hier-control", cfg, steps=steps)})
        control = out / "reader_control"
    flops = phase1["vst"]["train_flops"]
    _log(f"train phase 2 (equal FLOPs: {flops:.3g}; the text frontier)")
    frontiers = {family: text_frontier(FrontierConfig(
        out=str(out / f"frontier_{family.split('-')[1]}"), data=str(out / "store"),
        family=family, budget=flops, depth=cfg.frontier_depth, lr=cfg.frontier_lr,
        # each family's candidates run two at a time within frontier_share training phases;
        # a text evaluation reads whole windows (~10 forwards each), so candidates evaluate
        # less often and on fewer windows than phase 1's runs
        # (selection reads half the comparison's windows: cl100k's 100k-way head is costly)
        seconds=train_s * cfg.frontier_share, parallel=2, gpu=cfg.gpu, eval_points=2,
        eval_windows=8,
        select_windows=max(2, cfg.compare_windows // 2), seed=cfg.seed), log=_log)
        for family in ("text-bytes", "text-cl100k")}
    # the roles the summary names, and the run directory of each
    runs = {"text_bytes_wallclock": out / "text_bytes_wallclock",
            "text_bytes_flops": Path(frontiers["text-bytes"]["winner"]["out"]),
            "text_cl100k_flops": Path(frontiers["text-cl100k"]["winner"]["out"])}
    results = {"vst": phase1["vst"], **{role: json.loads((run / "result.json").read_text())
                                        for role, run in runs.items()}}
    bytes_runs = ["text_bytes_wallclock", "text_bytes_flops"]
    judge = max(bytes_runs, key=lambda r: results[r].get("train_seconds", 0))
    _log(f"compare (judge: {judge})")
    cmp = compare(CompareConfig(
        store=str(out / "store"), heldout_store=str(out / "heldout_store"),
        vst=str(out / "vst"), text=[str(run) for run in runs.values()], judge=str(runs[judge]),
        control=str(control) if control else None,
        truncation=str(runs["text_bytes_flops"]),
        out=str(out / "compare"), windows=cfg.compare_windows, generations=cfg.generations,
        seed=cfg.seed))
    summary = headline(cmp, results, {role: run.name for role, run in runs.items()}, frontiers,
                       manifest, conversion, time.perf_counter() - t0)
    summary["recipe"] = cfg.recipe
    summary["config"] = asdict(cfg)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    write_report(out, summary, results)
    _log(f"done in {summary['wall_clock_s'] / 60:.1f} min: {out / 'summary.json'}")
    return summary


def headline(cmp: dict, results: dict, names: dict[str, str], frontiers: dict,
             manifest: dict, conversion: dict, wall: float) -> dict:
    """The summary's numbers; `names` maps each text role (text_bytes_flops, ...) to the
    name of its run directory, which compare's labels end with."""
    docs, src = cmp["splits"]["heldout_docs"], cmp["splits"].get("heldout_source", {})
    key = lambda role, split, suffix="": next(  # noqa: E731
        v for k, v in split.items()
        if k.startswith("bpb_text_") and k.endswith(":" + names[role] + suffix))
    trunc = next(v for k, v in docs.items()
                 if k.startswith("bpb_text_bytes") and "_truncated_" in k
                 and ":" + names["text_bytes_flops"] + "_truncated_" in k)
    gen = cmp.get("generation", {}).get("scores", {})
    gen_text = next((v for k, v in gen.items() if k.endswith(":" + names["text_bytes_flops"])),
                    {})
    per_family = {role: key(role, docs) for role in ("text_bytes_flops", "text_cl100k_flops")}
    best = min(per_family, key=per_family.get)
    page_cut = key("text_bytes_flops", docs, "_page_cut")
    gain_text = page_cut - per_family["text_bytes_flops"]
    gain_text_src = (key("text_bytes_flops", src, "_page_cut") - key("text_bytes_flops", src)
                     if src else None)
    return {
        "bpb_pred": docs["bpb_pred"], "bpb_true": docs["bpb_true"], "bpb_null": docs["bpb_null"],
        "bpb_pred_heldout_source": src.get("bpb_pred"),
        "bpb_null_heldout_source": src.get("bpb_null"),
        "bpb_true_heldout_source": src.get("bpb_true"),
        # the text frontier's winners (the best size of each family at the VST's FLOPs)
        "bpb_text_equal_flops": per_family["text_bytes_flops"],
        "bpb_text_cl100k_equal_flops": per_family["text_cl100k_flops"],
        "bpb_text_frontier_equal_flops": per_family[best],
        "text_frontier_family": "bytes" if best == "text_bytes_flops" else "cl100k",
        **{f"text_frontier_{family.split('-')[1]}_{k}": f["winner"][k]
           for family, f in frontiers.items() for k in ("depth", "lr")},
        "text_frontier": {family.split("-")[1]: {
            "statement": f["statement"], "depths": f["depths"], "lrs": f["lrs"],
            "winner": f["winner"]["name"], "bpb_select": f["winner"]["bpb_select"],
            "candidates": {c["name"]: c["bpb_select"] for c in f["candidates"]},
            # candidates that hit their share of the phase's wall-clock before the budget
            "short_of_budget": [c["name"] for c in f["candidates"] if not c["reached_budget"]]}
            for family, f in frontiers.items()},
        "bpb_text_equal_wallclock": key("text_bytes_wallclock", docs),
        "bpb_text_equal_flops_heldout_source": key("text_bytes_flops", src) if src else None,
        "bpb_truncation": trunc,
        # Delta_text: the frontier byte model with each token's context cut to its page,
        # minus the same model with its full context, on the same pages
        "bpb_text_page_cut": page_cut,
        "context_gain_text": gain_text,
        # the reader-only control (its reader on null tokens; the frozen reader's prior) and
        # Delta_VST = control - VST on the same pages; the ratio is the primary target
        "bpb_reader_control": docs.get("bpb_reader_control"),
        "context_gain_vst": docs.get("context_gain_vst"),
        "context_gain_ratio": _ratio(docs.get("context_gain_vst"), gain_text),
        "bpb_reader_control_heldout_source": src.get("bpb_reader_control"),
        "context_gain_vst_heldout_source": src.get("context_gain_vst"),
        "context_gain_text_heldout_source": gain_text_src,
        "context_gain_ratio_heldout_source": _ratio(src.get("context_gain_vst"), gain_text_src),
        "vst_train_flops": results["vst"]["train_flops"],
        "vst_train_seconds": results["vst"]["train_seconds"],
        "text_train_flops": {k: v["train_flops"] for k, v in results.items() if k != "vst"},
        "text_train_seconds": {k: v["train_seconds"] for k, v in results.items() if k != "vst"},
        "positions_per_document": docs["positions"],
        "kv_bytes_per_position": docs["kv_bytes_per_position"],
        "wall_clock_s": wall,
        "corpus_chars": manifest["totals"]["characters"],
        "pages_converted": conversion["store"].get("pages"),
        "convert_seconds": conversion["store"].get("wall_time_s"),
        "convert_pages_per_s": conversion["store"].get("pages_per_s"),
        "corpus_seconds": manifest.get("wall_s"),
        "commit": commit(),
        "gen_vocab_share_vst": gen.get("vst", {}).get("vocab_share"),
        "gen_vocab_share_vst_regrounded": gen.get("vst_regrounded", {}).get("vocab_share"),
        "gen_judge_bpb_vst_regrounded": gen.get("vst_regrounded", {}).get("bpb"),
        "gen_vocab_share_text": gen_text.get("vocab_share"),
        "gen_judge_bpb_vst": gen.get("vst", {}).get("bpb"),
        "gen_judge_bpb_text": gen_text.get("bpb"),
        "gen_judge_bpb_true": gen.get("true", {}).get("bpb"),
        "gen_vocab_share_true": gen.get("true", {}).get("vocab_share"),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def write_report(out: Path, summary: dict, results: dict) -> None:
    """report.md: the headline table and held-out bpb against training FLOPs (PNG)."""
    from eval.compare import plot_bpb_vs_flops

    plot_bpb_vs_flops(results["vst"]["evals"],
                      {k: v["evals"] for k, v in results.items() if k != "vst"},
                      out / "bpb_vs_flops.png")
    rows = [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in summary.items() if not isinstance(v, dict)]
    (out / "report.md").write_text(
        "# Speedrun\n\n| key | value |\n|---|---|\n" + "\n".join(rows)
        + "\n\n![held-out bpb against training FLOPs](bpb_vs_flops.png)\n\n"
        + (out / "compare" / "compare.md").read_text())


def _run(cfg: SpeedrunConfig) -> None:
    summary = speedrun(cfg)
    typer.echo(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)},
                          indent=1, default=float))


def speedrun_command():
    from jobs.config_cli import config_command

    return config_command(SpeedrunConfig, _run)
