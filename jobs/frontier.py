r"""The text frontier: at one training budget, the best of several sizes (and learning
rates) of a text model, picked on documents that are neither trained on nor held out.

    vst frontier --data runs/speedrun/store --family text-bytes --budget 2e13 \
        --depth 2 --depth 3 --depth 4 --out runs/frontier-bytes          # 3 sizes, 2 cores
    vst frontier --data runs/speedrun/store --family text-cl100k --budget 2e13 \
        --depth 2 --depth 3 --depth 4 --lr 1e-3 --lr 3e-3 --seconds 900 \
        --out runs/frontier-cl100k                        # 6 candidates in 15 minutes

A text baseline of one fixed size is not the text family's best at a budget: too big a
model makes few steps, too small a one saturates. The frontier trains every candidate
(depth x learning rate) at the same FLOPs budget through the sweep's machinery
(`jobs.sweep.plan`/`execute`: one `vst train` each, side by side on a local Ray, resumable)
and keeps the one with the lowest bits per byte on the selection documents.

Documents are split by a hash of their id (`data.corpus.split_of`), so the split is a band
of the hash: below `val_fraction` are the held-out documents that `vst eval compare`
reports on; the next `select_fraction` are the selection documents. Candidates train on
neither (their --val-fraction is the sum), and the winner is chosen on the selection
documents only, so the held-out score of the winner carries no selection bias.

Output: OUT/trials/NAME per candidate (a `vst train` run directory) and OUT/frontier.json:
the candidates (depth, lr, params, training FLOPs and seconds, bpb_select), the winner and
a sentence saying which size won. From Python: `text_frontier(FrontierConfig(...))`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from data.errors import BadInput
from jobs.sweep import SweepConfig, Trial, execute, plan, train_config, trial_row

FAMILIES = ("text-bytes", "text-cl100k")


@dataclass
class FrontierConfig:
    """Train text models of several sizes at one FLOPs budget; keep the best (module doc)."""

    out: str = "runs/frontier"  # frontier directory: trials/NAME per candidate, frontier.json
        # (re-run to resume)
    data: str = ""  # token store (its documents are split by a hash of their id)
    family: str = "text-bytes"  # text recipe: text-bytes | text-cl100k
    budget: float = 1e12  # training FLOPs of every candidate
    depth: list[int] = field(default_factory=lambda: [2, 3, 4])  # sizes (the depth dial),
        # repeatable
    lr: list[float] = field(default_factory=list)  # peak learning rates, repeatable (default:
        # the recipe's)
    val_fraction: float = 0.05  # held-out documents (compare's): never trained or selected on
    select_fraction: float = 0.05  # the next band of documents by hash: held out of training,
        # scored to pick the winner
    select_windows: int = 32  # selection windows scored per candidate
    seconds: Optional[float] = None  # training wall-clock of the whole frontier: each candidate
        # gets seconds * parallel / candidates (on top of its FLOPs budget)
    parallel: int = 2  # candidates trained at once
    threads: int = 1  # CPU threads of each candidate
    gpu: bool = False  # train on cuda; the parallel candidates share the GPU
    eval_points: int = 0  # in-training evaluations per candidate (bpb-vs-FLOPs curves); the
        # final one is always made
    eval_windows: int = 16  # validation windows of each in-training evaluation
    flavour: Optional[str] = None  # flavour whose depth is dialled (default: the recipe's)
    batch_size: Optional[int] = None  # windows per step (default: the recipe's)
    seed: int = 0  # seed of every candidate
    train_option: list[str] = field(default_factory=list)  # KEY=VALUE (JSON value) for every
        # candidate's TrainConfig, repeatable

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise BadInput(f"--family must be one of {', '.join(FAMILIES)}; got {self.family!r}")
        if not self.data or self.data == "synthetic":
            raise BadInput("the frontier needs a token store: it selects on a band of the "
                           "store's documents", hint="pass --data STORE")
        if not self.depth:
            raise BadInput("the frontier needs at least one --depth")
        if self.select_fraction <= 0 or self.val_fraction + self.select_fraction >= 1:
            raise BadInput("need 0 < --select-fraction and --val-fraction + "
                             "--select-fraction < 1 (the rest is trained on)")
        if self.parallel < 1 or self.threads < 1:
            raise BadInput("--parallel and --threads must be at least 1")


def sweep_config(cfg: FrontierConfig, candidates: int) -> SweepConfig:
    """The frontier as a one-family, one-budget sweep whose trials hold both bands out."""
    options = list(cfg.train_option) + [f"eval_points={cfg.eval_points}"]
    if cfg.seconds is not None:  # the candidates share the wall-clock, `parallel` at a time
        options.append(f"max_seconds={cfg.seconds * cfg.parallel / candidates}")
    return SweepConfig(
        out=cfg.out, data=cfg.data, family=[cfg.family], depth=list(cfg.depth),
        budget=[cfg.budget], lr=list(cfg.lr), flavour=cfg.flavour, seed=cfg.seed,
        batch_size=cfg.batch_size, val_fraction=cfg.val_fraction + cfg.select_fraction,
        eval_windows=cfg.eval_windows, train_option=options, num_cpus=cfg.parallel * cfg.threads,
        cpus_per_trial=cfg.threads, gpus_per_trial=1 / cfg.parallel if cfg.gpu else 0.0)


def selection_docs(doc_ids: list[str], val_fraction: float, select_fraction: float
                   ) -> list[str]:
    """Documents whose hash lies in [val_fraction, val_fraction + select_fraction): held
    out of the candidates' training and not among compare's held-out documents."""
    from data.corpus import split_of

    return [d for d in doc_ids if split_of(d, val_fraction + select_fraction) == "val"
            and split_of(d, val_fraction) == "train"]


def select_score(cfg: FrontierConfig, sweep: SweepConfig, trial: Trial, docs: list[str]
                 ) -> dict[str, Any]:
    """A finished candidate's bits per byte on the selection documents (cached in its run
    directory as select.json), through the path every text score takes (vst.evaluate)."""
    import torch

    from vst.evaluate import evaluate
    from vst.generate import load_model
    from vst.store_source import StoreSource, window_tokens
    from vst.train import make_collate

    tc = train_config(sweep, trial)
    key = {"docs": len(docs), "windows": cfg.select_windows, "val_fraction": cfg.val_fraction,
           "select_fraction": cfg.select_fraction}
    cache = Path(tc.out) / "select.json"
    if cache.exists() and json.loads(cache.read_text()).get("key") == key:
        return json.loads(cache.read_text())
    device = "cuda" if cfg.gpu else "cpu"
    model, _ = load_model(tc.out, device=device)
    T = tc.window_tokens or window_tokens(tc.data, tc.pages_per_window)
    source = StoreSource(tc.data, T, "val", cfg.val_fraction, shuffle="none", docs=docs)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.parallel * cfg.threads)  # the candidates' cores are free now
    try:
        ev = evaluate(model, source, make_collate(tc, model.cfg),
                      k=tc.dec_pages if tc.eval_pages is None else tc.eval_pages,
                      batches=math.ceil(cfg.select_windows / tc.batch_size),
                      batch_size=tc.batch_size, device=device)
    finally:
        torch.set_num_threads(threads)
    # a page-cut arm is chosen in its own context
    metric = "bpb_text_page_cut" if tc.text_context == "page" else "bpb_text"
    out = {"key": key, "bpb_select": ev[metric], "metric": metric,
           "bytes_select": ev["bytes_text"]}
    cache.write_text(json.dumps(out, indent=1))
    return out


def text_frontier(cfg: FrontierConfig, log=print) -> dict[str, Any]:
    """Train the candidates that have no result yet, score each on the selection
    documents, write OUT/frontier.json and return it (see the module doc)."""
    from data.store import Store

    t0 = time.perf_counter()
    n = len(cfg.depth) * max(1, len(cfg.lr))
    sweep = sweep_config(cfg, n)
    docs = selection_docs(Store(cfg.data).doc_ids, cfg.val_fraction, cfg.select_fraction)
    if not docs:
        raise BadInput(f"no document of {cfg.data} hashes into the selection band "
                       f"[{cfg.val_fraction}, {cfg.val_fraction + cfg.select_fraction})",
                       hint="raise --select-fraction")
    trials = plan(sweep)
    status = execute(sweep, trials, log)
    candidates = []
    for trial in trials:
        row = trial_row(sweep, trial)
        if row["status"] != "done":
            log(f"frontier: {trial.name} has no result ({row['status']}); left out")
            continue
        score = select_score(cfg, sweep, trial, docs)
        candidates.append({
            "name": trial.name, "depth": trial.depth, "lr": row["lr"], "out": row["out"],
            "params": row["params"], "non_embedding_params": row["non_embedding_params"],
            "train_flops": row["train_flops"], "steps": row["steps"],
            "train_seconds": row["train_seconds"],
            # a wall-clock cap can stop a candidate short of the budget: say so
            "reached_budget": row["train_flops"] >= cfg.budget,
            "bpb_select": score["bpb_select"], "metric": score["metric"]})
    if not candidates:
        raise RuntimeError(f"no candidate of the frontier finished: {status['failed']}")
    winner = min(candidates, key=lambda c: c["bpb_select"])
    depths = sorted({c["depth"] for c in candidates})
    lrs = sorted({c["lr"] for c in candidates})
    summary = {
        "family": cfg.family, "budget": cfg.budget, "depths": depths, "lrs": lrs,
        "selection": {"documents": len(docs), "windows": cfg.select_windows,
                      "val_fraction": cfg.val_fraction,
                      "select_fraction": cfg.select_fraction},
        "candidates": candidates, "winner": winner, "failed": status["failed"],
        "statement": statement(cfg.family, winner, depths, lrs),
        "config": asdict(cfg), "wall_s": time.perf_counter() - t0,
    }
    Path(cfg.out, "frontier.json").write_text(json.dumps(summary, indent=1))
    log(summary["statement"])
    return summary


def statement(family: str, winner: dict, depths: list[int], lrs: list[float]) -> str:
    """"text-bytes: depth 3 lr 0.003 won of 3 depths x 2 lrs (selection bpb 2.412)"."""
    return (f"{family}: depth {winner['depth']} lr {winner['lr']:g} won of {len(depths)} "
            f"depth{'s' * (len(depths) != 1)} x {len(lrs)} lr{'s' * (len(lrs) != 1)} "
            f"(selection bpb {winner['bpb_select']:.3f})")


def run_frontier_and_print(cfg: FrontierConfig) -> dict[str, Any]:
    summary = text_frontier(cfg, log=lambda m: print(
        f"[frontier {time.strftime('%H:%M:%S')}] {m}", flush=True))
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))
    return summary
