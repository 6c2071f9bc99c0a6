r"""The scaling study: a grid of VST and text-baseline trainings on Ray, fits, one report.

    vst sweep --data synthetic --flavour debug --depth 1 --depth 2 --budget 2e9 \
        --budget 6e9 --out runs/sweep-smoke                       # a minute on a laptop
    vst sweep --data /work/speedrun/store --depth 2 --depth 3 --depth 4 \
        --budget 2.5e12 --budget 6e12 --budget 1.5e13 --noise-seeds 2 --noise-family learn \
        --eval-windows 32 --out runs/sweep-hour          # ~55 min on 2 cores (docs/scaling.md)
    ray job submit --working-dir . -- python -m jobs.cli sweep --address auto \
        --gpus-per-trial 0.25 --data /data/store ... --out /shared/runs/sweep   # a cluster

Every trial is one `vst.train.train(TrainConfig(...))` run as a Ray task that holds
--cpus-per-trial CPUs (and --gpus-per-trial GPUs), so the same command fills one machine
(a private local Ray on 127.0.0.1) or a cluster (--address auto). The grid is family
(`learn`: the VST; `text-bytes`, `text-cl100k`: the same-shape text baselines) x depth
(the size dial) x training budget in FLOPs (decoder-CE included) x optionally learning
rate, on one token store with the trainer's own held-out split by document id; plus extra
seeds of one configuration (--noise-seeds) for the seed noise the fits are judged by.

Resumable: each trial has its own directory named from its parameters (OUT/trials/NAME);
a rerun skips trials with a result.json and continues interrupted ones from their newest
checkpoint (checkpoints are spread over a trial's estimated steps, so a run that is
budgeted by FLOPs, not steps, still leaves some). Outputs: OUT/results.csv (one row per
trial), OUT/fits.json (eval.scaling), OUT/report.html with its plots (eval.scaling_report).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from data.errors import BadInput, UserError
from jobs.errors import remote_cause
from vst.train_config import TrainConfig

MIN_STEPS = 20  # trials with fewer optimizer steps are flagged in the summary
FAMILY_LABEL = {"learn": "vst", "text-bytes": "text-bytes", "text-cl100k": "text-cl100k",
                "hier": "vst-hier", "hier-control": "reader-control"}
CONTROL = "hier-control"  # its VST is never trained: one depth (the smallest) is enough


def recipe_of(name: str) -> str:
    """The recipe of a family given by recipe (learn) or by label (vst)."""
    return next((r for r, label in FAMILY_LABEL.items() if name in (r, label)), name)


@dataclass
class SweepConfig:
    """Train a grid of VSTs and text baselines on Ray, fit loss against compute, report."""

    out: str = "runs/sweep"  # sweep directory: trials/NAME per trial, results.csv, fits.json,
        # report.html (re-run to resume)
    data: str = "synthetic"  # token store (one store, one held-out split for all), or 'synthetic'
    family: list[str] = field(default_factory=lambda: ["learn", "text-bytes"])  # recipes to
        # sweep, repeatable: learn (the VST) | text-bytes | text-cl100k | hier (the VST with
        # its hierarchical reader) | hier-control (that reader alone on null tokens)
    depth: list[int] = field(default_factory=lambda: [2, 3, 4])  # model sizes (the depth
        # dial; width follows depth), repeatable
    budget: list[float] = field(default_factory=lambda: [2e12, 6e12, 1.8e13])  # training
        # budgets in FLOPs (the VST's decoder-CE included), repeatable
    lr: list[float] = field(default_factory=list)  # peak learning rates to sweep, repeatable
        # (default: each recipe's own); fits use the best per size and budget
    flavour: Optional[str] = None  # flavour whose depth is dialled (default: the recipe's, tiny)
    seed: int = 0  # seed of every grid trial
    noise_seeds: int = 1  # seeds of the noise configuration; 2+ measures the seed noise that
        # the hold-out check is judged by
    noise_family: Optional[str] = None  # family of the noise configuration, by recipe (learn) or
        # label (vst) (default: every family)
    noise_depth: Optional[int] = None  # depth of the noise configuration (default: the middle)
    noise_budget: Optional[float] = None  # budget of the noise configuration (default: the
        # largest, where the hold-out check happens)
    batch_size: Optional[int] = None  # windows per step (default: the recipe's)
    val_fraction: float = 0.05  # held-out share of the store's documents (by a hash of the id)
    eval_windows: int = 64  # validation windows of each trial's final evaluation (the same
        # windows for every trial)
    checkpoints: int = 4  # checkpoints per trial, spread over its estimated steps
    train_option: list[str] = field(default_factory=list)  # KEY=VALUE (JSON value) for every
        # trial's TrainConfig, repeatable (e.g. synthetic_docs=24)
    address: Optional[str] = None  # Ray cluster to join (auto: this host's or RAY_ADDRESS's);
        # default: start a private local Ray on 127.0.0.1
    num_cpus: Optional[int] = None  # CPUs of the private local Ray (default: all of them)
    cpus_per_trial: int = 1  # CPUs a trial holds (its torch threads)
    gpus_per_trial: float = 0.0  # GPUs a trial holds (fractions share one); > 0 trains on cuda
    fit_points: str = "frontier"  # L(C) fit on: frontier (the best trial of each budget) | all
    bootstrap: int = 200  # bootstrap resamples of the trials for the fits' intervals
    report_only: bool = False  # train nothing: rebuild results.csv, fits and report from OUT

    def __post_init__(self) -> None:
        bad = [f for f in self.family if f not in FAMILY_LABEL]
        if bad:
            raise BadInput(f"unknown family {bad}; choose from {', '.join(FAMILY_LABEL)}")
        if self.noise_family and recipe_of(self.noise_family) not in self.family:
            raise BadInput(f"--noise-family {self.noise_family} is not in the grid's families")
        if self.fit_points not in ("frontier", "all"):
            raise BadInput("--fit-points must be frontier or all")
        if not (self.family and self.depth and self.budget):
            raise BadInput("a sweep needs at least one --family, --depth and --budget")


@dataclass(frozen=True)
class Trial:
    recipe: str
    depth: int
    budget: float
    seed: int
    lr: Optional[float] = None
    role: str = "grid"  # grid | noise (an extra seed of the noise configuration)

    @property
    def family(self) -> str:
        return FAMILY_LABEL[self.recipe]

    @property
    def name(self) -> str:
        lr = f"_lr{self.lr:g}" if self.lr is not None else ""
        return f"{self.family}_d{self.depth}_C{self.budget:.2e}{lr}_s{self.seed}"


def plan(cfg: SweepConfig) -> list[Trial]:
    """The grid, then the extra seeds of the noise configuration."""
    lrs = cfg.lr or [None]
    grid = [Trial(r, d, float(b), cfg.seed, lr) for r in cfg.family
            for d in (sorted(cfg.depth)[:1] if r == CONTROL else sorted(cfg.depth))
            for b in sorted(cfg.budget) for lr in lrs]
    depths = sorted(cfg.depth)
    nd = cfg.noise_depth if cfg.noise_depth is not None else depths[len(depths) // 2]
    nb = float(cfg.noise_budget if cfg.noise_budget is not None else max(cfg.budget))
    fams = [recipe_of(cfg.noise_family)] if cfg.noise_family else cfg.family
    noise = [Trial(r, nd, nb, cfg.seed + k, lrs[0], "noise") for r in fams
             for k in range(1, cfg.noise_seeds)]
    return grid + noise


def parse_options(options: list[str]) -> dict[str, Any]:
    out = {}
    for opt in options:
        key, _, value = opt.partition("=")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def base_config(cfg: SweepConfig, trial: Trial) -> TrainConfig:
    """The trial's TrainConfig before the checkpoint cadence (see `train_config`)."""
    over: dict[str, Any] = dict(
        data=cfg.data, out=str(Path(cfg.out) / "trials" / trial.name), depth=trial.depth,
        seed=trial.seed, max_flops=trial.budget, steps=10**9, val_fraction=cfg.val_fraction,
        eval_every=0, eval_points=0, resume=True, tensorboard=False, progress=False, keep=2,
        threads=cfg.cpus_per_trial, device="cuda" if cfg.gpus_per_trial > 0 else "cpu")
    if cfg.flavour:
        over["flavour"] = cfg.flavour
    if cfg.batch_size:
        over["batch_size"] = cfg.batch_size
    if trial.lr is not None:
        over["lr"] = trial.lr
    over.update(parse_options(cfg.train_option))
    tc = TrainConfig.from_recipe(trial.recipe, **over)
    # the same validation windows for every trial: evaluate() spreads batches x batch size
    # windows evenly over the split, so the product is what must match across families
    return replace(tc, eval_batches=max(1, math.ceil(cfg.eval_windows / tc.batch_size)))


_STEP_FLOPS: dict[tuple, float] = {}


def step_flops_bound(tc: TrainConfig) -> float:
    """An upper bound on one step's training FLOPs, as the trainer counts them: every
    position of a full window, and decoder-CE on every page of it (a bound, so the
    checkpoint cadence derived from it errs toward more checkpoints)."""
    from vst.flops import per_page_flops, trunk_flops_per_token
    from vst.train import build_model_config

    key = (tc.data, tc.recipe, tc.flavour, tc.depth, tc.batch_size, tc.pages_per_window,
           tc.window_tokens, tc.text_seq_len, tc.dec, tc.dec_lines, tc.modality, tc.tokenizer)
    if key in _STEP_FLOPS:
        return _STEP_FLOPS[key]
    codec = tc.load_codec() if (tc.modality == "vector" or tc.data == "synthetic") else None
    if tc.data == "synthetic":
        D, grid, n = codec.D, tuple(codec.grid), codec.n
    else:
        from data.store import read_store_meta

        meta = read_store_meta(tc.data)
        D, n = meta.D, meta.n or 256
        grid = tuple(meta.grid) if meta.grid is not None else (1, n)
    shape = SimpleNamespace(D=D, grid=grid)  # alpha=1 skips measuring the data's token norm
    mcfg = build_model_config(replace(tc, alpha=1.0), shape)
    if tc.modality == "text":
        seq = tc.text_seq_len
    else:
        seq = tc.window_tokens or tc.pages_per_window * n
    flops = tc.batch_size * seq * trunk_flops_per_token(mcfg, seq)
    if tc.modality == "vector" and tc.dec > 0:
        pages = tc.batch_size * (seq // n)
        flops += pages * per_page_flops(codec, lines=tc.dec_lines or None)
    _STEP_FLOPS[key] = flops
    return flops


def train_config(cfg: SweepConfig, trial: Trial) -> TrainConfig:
    """The trial's full TrainConfig: checkpoints every ~1/`checkpoints` of its estimated
    steps (the trainer saves by steps, and a FLOPs-budgeted run has no step count), and a
    warmup of at most a fifth of them (the recipes' 20 steps would eat a small budget)."""
    tc = base_config(cfg, trial)
    steps = max(1, int(trial.budget / step_flops_bound(tc)))
    return replace(tc, save_every=max(1, steps // max(1, cfg.checkpoints)),
                   warmup=max(1, min(tc.warmup, steps // 5)))


# -- execution ----------------------------------------------------------------------------
def run_trial(config: dict[str, Any], threads: int) -> dict[str, Any]:
    """One trial (the Ray task's body): train, resuming from the newest checkpoint."""
    import torch

    from vst.checkpoint import latest_checkpoint, read_state
    from vst.train import train

    torch.set_num_threads(threads)
    out = Path(config["out"])
    ckpt = latest_checkpoint(out) if out.exists() else None
    start = int(read_state(ckpt)["step"]) if ckpt is not None else 0
    t0 = time.perf_counter()
    result = train(TrainConfig.from_dict(config))
    # one record per invocation: where it started (a resumed trial starts at its
    # checkpoint) and its wall-clock, which the table sums over a trial's invocations
    info = {"started_at_step": start, "steps": result.get("steps"),
            "seconds": time.perf_counter() - t0}
    with (out / "sweep_runs.jsonl").open("a") as f:
        f.write(json.dumps(info) + "\n")
    return info


def connect_ray(cfg: SweepConfig) -> bool:
    """Join --address's cluster, or start a private local Ray; True when we started it.

    Auth and usage stats are set off before init: the local instance serves nobody else,
    and the machines this runs on have no way out."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) set Ray up already
        return False
    if cfg.address:
        ray.init(address=cfg.address)
        return False
    if os.environ.get("RAY_ADDRESS"):  # under `ray job submit`
        ray.init()
        return False
    # trials pass only small dicts through Ray: a small object store leaves a shared
    # machine's memory to the trainings
    ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(), include_dashboard=False,
             _node_ip_address="127.0.0.1", object_store_memory=256 * 1024**2)
    return True


def execute(cfg: SweepConfig, trials: list[Trial], log=print) -> dict[str, list[str]]:
    """Run every trial without a result.json as a Ray task; {done, skipped, failed}."""
    import ray

    status: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
    todo = []
    for t in trials:
        if (Path(cfg.out) / "trials" / t.name / "result.json").exists():
            status["skipped"].append(t.name)
        else:
            todo.append(t)
    if not todo:
        return status
    started = connect_ray(cfg)
    try:
        # a worker that dies (OOM, a lost node) is retried, and the retry resumes from the
        # trial's checkpoint; an exception in training is not retried (it would recur)
        task = ray.remote(run_trial).options(num_cpus=cfg.cpus_per_trial,
                                             num_gpus=cfg.gpus_per_trial, max_retries=2,
                                             retry_exceptions=False)
        pending = {}
        # the biggest budgets first: the longest trials start early instead of running
        # alone at the end while the other slots idle
        for t in sorted(todo, key=lambda t: -t.budget):
            tc = train_config(cfg, t)
            log(f"trial {t.name}: save every {tc.save_every} steps"
                + (" (resuming)" if any(Path(tc.out).glob("step-*")) else ""))
            pending[task.remote(asdict(tc), cfg.cpus_per_trial)] = t
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            t = pending.pop(ready[0])
            try:
                info = ray.get(ready[0])
                status["done"].append(t.name)
                log(f"done {t.name}: {info['steps']} steps in {info['seconds']:.0f} s")
            except Exception as err:  # one failed trial must not lose the others
                status["failed"].append(t.name)
                cause = remote_cause(err)  # a user's mistake in one line, a bug with its trace
                reason = str(cause) if isinstance(cause, UserError) else \
                    f"{type(err).__name__}: {str(err)[-500:]}"
                log(f"FAILED {t.name}: {reason}")
    finally:
        if started:
            ray.shutdown()
    return status


# -- results ------------------------------------------------------------------------------
COLUMNS = ["name", "family", "recipe", "depth", "flavour", "d_model", "lr", "seed", "role",
           "budget", "params", "non_embedding_params", "train_flops", "decoder_flops_per_page",
           "steps", "tokens_seen", "positions_seen", "bytes_seen", "train_seconds",
           "wall_clock_s", "val_loss", "bpb", "bpb_pred", "bpb_true", "bpb_null", "bpb_text",
           "status", "out"]


def trial_row(cfg: SweepConfig, trial: Trial) -> dict[str, Any]:
    """One results.csv row from a trial's directory (empty measures while unfinished)."""
    out = Path(cfg.out) / "trials" / trial.name
    row: dict[str, Any] = {"name": trial.name, "family": trial.family, "recipe": trial.recipe,
                           "depth": trial.depth, "seed": trial.seed, "role": trial.role,
                           "budget": trial.budget, "lr": trial.lr, "out": str(out)}
    path = out / "result.json"
    if not path.exists():
        row["status"] = "checkpointed" if any(out.glob("step-*")) else "missing"
        return row
    res = json.loads(path.read_text())
    ev, m = res.get("eval", {}), res.get("model_config", {})
    tcfg = json.loads((out / "config.json").read_text())["train"]
    row.update({k: res.get(k) for k in ("params", "non_embedding_params", "train_flops",
                                        "decoder_flops_per_page", "steps", "tokens_seen",
                                        "positions_seen", "bytes_seen", "train_seconds",
                                        "wall_clock_s")})
    row.update({k: ev.get(k) for k in ("bpb_pred", "bpb_true", "bpb_null", "bpb_text")})
    text = m.get("modality") == "text"
    # the family's headline: a text model's own bpb; the VST's predictions through the
    # decoder (leak-free); the reader-only control's reader on null tokens
    row["bpb"] = ev.get("bpb_text") if text else ev.get(
        "bpb_null" if tcfg.get("reader_input") == "null" else "bpb_pred")
    # validation loss as trained: text cross-entropy (nats/token); the VST recipe's
    # decoder-CE (nats/byte), which is bpb_pred in nats
    row["val_loss"] = ev.get("val_ce") if text else (
        ev["bpb_pred"] * math.log(2) if ev.get("bpb_pred") is not None else None)
    runs = out / "sweep_runs.jsonl"
    if runs.exists():  # every invocation's wall-clock (a resumed trial ran more than once)
        row["wall_clock_s"] = sum(json.loads(line)["seconds"]
                                  for line in runs.read_text().splitlines() if line.strip())
    row.update({"flavour": tcfg.get("flavour"), "lr": tcfg.get("lr"),
                "d_model": m.get("aspect", 0) * m.get("depth", 0), "status": "done"})
    return row


def write_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def read_csv(path: str | Path) -> list[dict]:
    with Path(path).open() as f:
        return list(csv.DictReader(f))


def positions_per_document(cfg: SweepConfig, families: list[str], docs: int = 200
                           ) -> dict[str, float]:
    """Mean positions a held-out document takes per family: the VST's visual tokens (pages
    x tokens per page), and each text family's tokens (bytes, or cl100k tokens)."""
    from vst.data import text_codec
    from vst.train import build_sources

    tc = TrainConfig(data=cfg.data, val_fraction=cfg.val_fraction,
                     **{k: v for k, v in parse_options(cfg.train_option).items()
                        if k in ("synthetic_docs", "pages_per_window", "codec", "codec_mode",
                                 "codec_path")})
    codec = tc.load_codec() if cfg.data == "synthetic" else None
    val = build_sources(tc, codec)[1]
    ids = val.documents()[:docs]
    totals = {f: 0.0 for f in families}
    for doc in ids:
        tokens, texts = val.document(doc)
        for fam in families:
            if fam.startswith("vst") or fam == FAMILY_LABEL[CONTROL]:
                totals[fam] += tokens.shape[0] * tokens.shape[1]
            else:
                encode = text_codec(fam.split("-", 1)[1])[0]
                totals[fam] += sum(len(encode(t)) for t in texts)
    return {f: v / max(1, len(ids)) for f, v in totals.items()}


def run_sweep(cfg: SweepConfig, log=print) -> dict[str, Any]:
    """Plan, train what is missing, then table, fits and report (see the module doc)."""
    from eval.scaling import analyse
    from eval.scaling_report import write_report

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stored = out / "sweep.json"
    if cfg.report_only and stored.exists():  # the trials the sweep ran, whatever the flags
        trials = [Trial(**{k: v for k, v in t.items() if k != "name"})
                  for t in json.loads(stored.read_text())["trials"]]
    else:
        trials = plan(cfg)
        stored.write_text(json.dumps({"config": asdict(cfg), "trials": [
            {"name": t.name, **asdict(t)} for t in trials]}, indent=1))
    t0 = time.perf_counter()
    status = {"done": [], "skipped": [], "failed": []} if cfg.report_only else \
        execute(cfg, trials, log)
    rows = [trial_row(cfg, t) for t in trials]
    write_csv(rows, out / "results.csv")
    done = [r for r in rows if r["status"] == "done"]
    analysis = analyse(done, points=cfg.fit_points, n_boot=cfg.bootstrap, seed=cfg.seed)
    (out / "fits.json").write_text(json.dumps(analysis, indent=1, default=float))
    families = sorted({r["family"] for r in done})
    positions = positions_per_document(cfg, families) if families else {}
    report = write_report(done, analysis, out, positions, COLUMNS)
    summary = {"trials": len(trials), "finished": len(done), **{k: len(v) for k, v in
               status.items()}, "failed_trials": status["failed"],
               "wall_s": time.perf_counter() - t0, "results": str(out / "results.csv"),
               "report": str(report), "positions_per_document": positions,
               "crossovers": [c["statement"] for c in analysis["crossovers"]],
               # a trial of a few steps is mostly warmup: its loss says little about scaling
               "short_trials": [r["name"] for r in done if int(r["steps"]) < MIN_STEPS]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def run_sweep_and_print(cfg: SweepConfig) -> dict[str, Any]:
    summary = run_sweep(cfg, log=lambda m: print(f"[sweep {time.strftime('%H:%M:%S')}] {m}",
                                                 flush=True))
    print(json.dumps(summary, indent=1))
    return summary
