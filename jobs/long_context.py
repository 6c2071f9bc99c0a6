"""The long-context study (issue #23): a retrieval curriculum, every family trained at equal
FLOPs, and RULER scores against context length, end to end.

    vst curriculum study --out runs/long_context              # 2 CPU cores, <= 2 h, resumable
    vst curriculum study --out runs/long_context --gpu        # the same on a GPU
    vst curriculum study --out runs/lc_smoke --lengths 1500 --lengths 3000 \\
        --train-per-length 4 --budgets 2e9 --text-depths 1   # a minute: every stage once

Stages (each leaves its files; a re-run skips what is done):
1. `curriculum`: `eval.curriculum.build_curriculum` (haystacks from the training corpus;
   evaluation from the held-out one, plus a never-trained task family);
2. `convert`: the samples' segments through the Ray conversion job into a store;
3. per FLOPs budget: the VST (`vst sft` from a fresh model with a pointer head, reading the
   store), and each text family (cl100k, bytes) at every depth of `text_depths`, trained
   with the same pointer mechanism at the same FLOPs; the text depth with the lowest
   validation loss is the family's model for that budget;
4. evaluation through the project's runners (`vst eval run` / `score-ruler`): the VST
   (text -> render -> encode -> VST -> decode), both text families, and truncation (the
   cl100k model reading as many positions as the VST used, arXiv 2512.03643's baseline);
5. `summary.json` and plots (eval/long_context_report.py).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from data.errors import BadInput
from eval.curriculum import HELDOUT_TASKS, TRAINED_TASKS

FAMILIES = ("vst", "vst_hier", "text_cl100k", "text_bytes", "truncation", "text_cl100k_short")


@dataclass
class StudyConfig:
    """The long-context study of #23: build the retrieval curriculum, convert it with Ray,
    train the VST and the text families at equal FLOPs, score RULER tasks end to end against
    context length, and write summary.json, report.md and plots. Resumable: re-run it.

    Example (test size, about a minute on a CPU):

        vst curriculum study --out runs/lc_smoke --lengths 1500 --lengths 3000 \\
            --train-per-length 4 --eval-per-length 2 --budgets 2e9 --text-depths 1
    """

    out: str = "runs/long_context"  # study directory (resumable: re-run to continue)
    corpus: Optional[str] = None  # training haystacks: a `vst corpus build` corpus (default:
        # the demo corpus, built locally)
    heldout_corpus: Optional[str] = None  # evaluation haystacks (default: the corpus's
        # held-out source)
    codec: str = "mini:small"  # the frozen codec (spec[:mode])
    codec_path: Optional[str] = None  # codec weights directory (DeepSeek-OCR backends)
    tasks: list[str] = field(default_factory=lambda: list(TRAINED_TASKS))  # trained RULER
        # tasks (repeatable)
    heldout_tasks: list[str] = field(default_factory=lambda: list(HELDOUT_TASKS))  # never
        # trained, only evaluated (repeatable)
    lengths: list[int] = field(default_factory=lambda: [2000, 4000, 8000, 32000, 64000])  # prompt
        # lengths in characters (repeatable)
    train_per_length: int = 10  # training samples per task and length
    eval_per_length: int = 4  # evaluation samples per task and length
    natural_ratio: float = 0.2  # share of natural-text samples in training
    budgets: list[float] = field(default_factory=lambda: [1e12, 3e12])  # training FLOPs
        # per family (repeatable)
    vst_depth: int = 2  # the VST's size dial (tiny flavour: d_model = 64 * depth)
    text_depths: list[int] = field(default_factory=lambda: [1, 2, 3])  # text sizes tried
        # (repeatable; the lowest validation loss is kept)
    cl100k_window: int = 8192  # cl100k training window in tokens (~32K characters)
    bytes_window: int = 8192  # byte model's training window in bytes
    short_chars: int = 4000  # the length-generalisation arm: a cl100k model (the family's
        # chosen depth) trained only on samples of at most this many characters; 0: off
    bytes_eval_window: int = 16384  # the byte model reads at most this many bytes at
        # evaluation (64K-position prefill of every sample is past a 2-core budget)
    hier: bool = True  # also the VST with the hierarchical reader (vst_hier): a line-local
        # copy of the codec's reader trained beside it through decoder-CE, FLOPs counted
    hier_dec: float = 1.0  # vst_hier's decoder-CE weight (the reader learns through it)
    reader_lr: Optional[float] = 1e-3  # vst_hier's reader learning rate (#22: faster readers
        # leave the VST less to add)
    pointer_dim: int = 64  # pointer head key width, every family
    lr: float = 2e-3  # peak learning rate, every family
    batch_size: int = 4  # samples per step, every family
    threads: Optional[int] = None  # CPU threads (default: torch's)
    gpu: bool = False  # train and evaluate on CUDA
    num_actors: int = 1  # conversion encoder actors
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.budgets or min(self.budgets) <= 0:
            raise BadInput("--budgets needs positive FLOPs values", hint="e.g. --budgets 3e12")
        if not self.text_depths or min(self.text_depths) < 1:
            raise BadInput("--text-depths needs depths >= 1")

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"


def _done(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def _say(msg: str) -> None:
    print(f"[long-context] {msg}", flush=True)


# ---------------------------------------------------------------- data


def build_data(cfg: StudyConfig, root: Path) -> dict:
    from eval.curriculum import CurriculumConfig, build_curriculum

    cur = root / "curriculum"
    manifest = _done(cur / "manifest.json")
    if manifest is None:
        _say("building the curriculum")
        manifest = build_curriculum(CurriculumConfig(
            out=str(cur), corpus=cfg.corpus, heldout_corpus=cfg.heldout_corpus,
            tasks=list(cfg.tasks), heldout_tasks=list(cfg.heldout_tasks),
            lengths=list(cfg.lengths), train_per_length=cfg.train_per_length,
            eval_per_length=cfg.eval_per_length, natural_ratio=cfg.natural_ratio,
            seed=cfg.seed))
    store = root / "store"
    if _done(root / "convert.json") is None:
        from jobs.convert.config import ConvertConfig
        from jobs.convert.driver import convert

        spec, _, mode = cfg.codec.partition(":")
        _say("converting the samples' segments with Ray")
        res = convert(ConvertConfig(corpus=str(cur / "segments.jsonl.zst"), out=str(store),
                                    codec=spec, codec_mode=mode or None,
                                    codec_path=cfg.codec_path,
                                    num_actors=cfg.num_actors, num_parts=4, id_field="id",
                                    gpus_per_actor=1.0 if cfg.gpu else 0.0))
        _write(root / "convert.json", res)
    return manifest


# ---------------------------------------------------------------- training


def fresh_vst_base(cfg: StudyConfig, root: Path, codec) -> Path:
    """An untrained VST with a pointer head, saved as a `vst sft` base (no pretraining: every
    family starts from random weights and sees the same samples)."""
    from vst.checkpoint import latest_checkpoint, save_checkpoint
    from vst.config import flavour
    from vst.model import VST
    from vst.train_config import TrainConfig

    base = root / "vst" / "base"
    found = latest_checkpoint(base)
    if found is not None:
        return found
    import torch

    torch.manual_seed(cfg.seed)
    mcfg = flavour("tiny", depth=cfg.vst_depth, D=codec.D, grid=tuple(codec.grid),
                   pointer=cfg.pointer_dim, max_seq_len=1 << 16)
    spec, _, mode = cfg.codec.partition(":")
    tcfg = TrainConfig(out=str(base), flavour="tiny", depth=cfg.vst_depth, codec=spec,
                       codec_mode=mode or None)
    state = {"model_config": mcfg.to_dict(), "train_config": asdict(tcfg), "train_seconds": 0}
    return save_checkpoint(base, 0, VST(mcfg), None, state, keep=1)


def train_vst(cfg: StudyConfig, root: Path, i: int, budget: float, codec,
              reader: str = "frozen") -> dict:
    """The VST at one budget; `reader="trainable"`: with the hierarchical reader trained
    beside it through decoder-CE (the `vst_hier` family; the reader's FLOPs count)."""
    from vst.checkpoint import latest_checkpoint
    from vst.sft import sft
    from vst.sft_config import SFTConfig

    hier = reader != "frozen"
    run = root / ("vst_hier" if hier else "vst") / f"b{i}"
    done = _done(run / "result.json")
    if done is not None:
        return done
    base = fresh_vst_base(cfg, root, codec)
    cur = root / "curriculum"
    _say(f"VST{' (hierarchical reader)' if hier else ''} at {budget:.2g} FLOPs")
    res = sft(SFTConfig(base=str(base), data=str(cur / "train.jsonl"),
                        val_data=str(cur / "val.jsonl"), store=str(root / "store"),
                        format="jsonl", out=str(run), max_flops=budget, steps=10**7,
                        dec=cfg.hier_dec if hier else 0.0, reader=reader,
                        reader_lr=cfg.reader_lr, lr=cfg.lr, batch_size=cfg.batch_size, warmup=20,
                        save_every=200, keep=1, log_every=25, eval_samples=8,
                        device=cfg.device, threads=cfg.threads, seed=cfg.seed,
                        resume=latest_checkpoint(run) is not None,
                        max_context_chars=max(cfg.lengths) + 8000), codec=codec)
    return {k: v for k, v in res.items() if k != "history"}


def _text_samples(path: Path, encode, window: int, max_chars: Optional[int] = None) -> list:
    """Samples whose whole prompt and response fit the text model's training window (and,
    with `max_chars`, whose curriculum length is at most that)."""
    from data.corpus.instructions import Instruction
    from vst.sft_text import response_end, text_prompt

    out = []
    for line in path.read_text().splitlines():
        s = Instruction.from_dict(json.loads(line))
        if max_chars and s.meta.get("length", 0) > max_chars:
            continue
        n = len(encode(text_prompt(s.instruction, s.context, "instruction-first")))
        if n + len(encode(s.response + response_end("instruction-first"))) < window:
            out.append(s)
    return out


def train_text(cfg: StudyConfig, root: Path, i: int, budget: float, tokenizer: str,
               depth: int, max_chars: Optional[int] = None) -> dict:
    """One text model at one budget; `max_chars`: train only on samples of at most that
    many characters (the length-generalisation arm)."""
    import torch
    from tqdm.auto import tqdm

    from vst.config import flavour
    from vst.data import text_codec
    from vst.model import VST
    from vst.sft_text import save_text_sft, text_batch, text_response_loss, text_sft

    family = f"text_{tokenizer}" + ("_short" if max_chars else "")
    run = root / family / f"b{i}" / f"d{depth}"
    done = _done(run / "result.json")
    if done is not None:
        return done
    encode, _, vocab = text_codec(tokenizer)
    window = cfg.cl100k_window if tokenizer == "cl100k" else cfg.bytes_window
    cur = root / "curriculum"
    train = _text_samples(cur / "train.jsonl", encode, window, max_chars)
    val = _text_samples(cur / "val.jsonl", encode, window, max_chars)
    if not train:
        raise BadInput(f"no training sample fits the {tokenizer} window of {window} tokens",
                       hint="raise --cl100k-window / --bytes-window or add shorter --lengths")
    torch.manual_seed(cfg.seed)
    model = VST(flavour("tiny", depth=depth, modality="text", rope="1d", vocab_size=vocab,
                        pointer=cfg.pointer_dim, max_seq_len=1 << 17)).to(cfg.device)
    bar = tqdm(total=budget, desc=f"{family} d{depth} b{i}", unit="FLOP", unit_scale=True)
    last = [0.0]

    def tick(rec: dict) -> None:
        bar.update(rec["train_flops"] - last[0])
        last[0] = rec["train_flops"]
        bar.set_postfix(loss=f"{rec['loss']:.3f}")

    t0 = time.perf_counter()
    hist = text_sft(model, tokenizer, train, flops=budget, batch_size=cfg.batch_size,
                    lr=cfg.lr, seed=cfg.seed, order="instruction-first", max_len=window,
                    progress=tick)
    bar.close()
    model.eval()
    with torch.no_grad():  # validation: mean response NLL (the size is chosen on it)
        losses = [float(text_response_loss(model, *text_batch(encode, val[k:k + 4], window,
                                                              "instruction-first")))
                  for k in range(0, len(val), 4)]
    val_loss = sum(losses) / len(losses) if losses else math.inf
    res = {"tokenizer": tokenizer, "depth": depth, "steps": len(hist),
           "train_flops": hist[-1]["train_flops"] if hist else 0.0,
           "train_seconds": time.perf_counter() - t0, "val_loss": val_loss,
           "train_samples": len(train), "val_samples": len(val), "window": window,
           "params": model.num_params()}
    ckpt = save_text_sft(model, tokenizer, run, "instruction-first",
                         {"steps": len(hist), "train_flops": res["train_flops"]})
    res["checkpoint"] = str(ckpt)
    _write(run / "result.json", res)
    return res


# ---------------------------------------------------------------- evaluation


def eval_files(root: Path, length: int) -> list[Path]:
    return sorted((root / "curriculum" / "eval").glob(f"*_{length}.jsonl"))


def evaluate(runner, root: Path, name: str, lengths: list[int]) -> dict:
    """Scores {task: {length: score}} and per-length mean positions and seconds, keyed by
    the length as a string, in memory as in the JSON files they are saved to."""
    from eval.runners.common import run_tasks
    from eval.ruler import score_directory

    scores: dict[str, dict[str, float]] = {}
    stats: dict[str, dict[str, float]] = {}
    for length in lengths:
        pred_dir = root / "eval" / name / str(length)
        run_tasks(runner, eval_files(root, length), pred_dir, progress=True)
        for stem, res in score_directory(pred_dir).items():
            task = stem.rsplit("_", 1)[0]
            scores.setdefault(task, {})[str(length)] = res["score"]
        recs = [json.loads(line) for p in pred_dir.glob("*.jsonl")
                for line in p.read_text().splitlines() if line.strip()]
        got = [r["stats"] for r in recs if "stats" in r]
        if got:
            stats[str(length)] = {k: sum(s[k] for s in got) / len(got)
                                  for k in ("positions", "seconds")}
    return {"scores": scores, "stats": stats}


# ---------------------------------------------------------------- the study

HIER_SKIP = "not run (--no-hier)"


def budget_results(cfg: StudyConfig, root: Path, i: int, budget: float, codec,
                   lengths: list[int]) -> dict:
    """Every family's scores at one budget; each family is saved as it finishes, so a
    re-run computes only what is missing (eval/b{i}.json)."""
    from eval.compare import kv_bytes_per_position
    from eval.runners.text import VSTTextRunner
    from eval.runners.vst_runner import VSTRunner

    path = root / "eval" / f"b{i}.json"
    res: dict[str, dict] = _done(path) or {}

    def save(name: str, value: dict) -> None:
        res[name] = value
        _write(path, res)

    vst = train_vst(cfg, root, i, budget, codec)
    text = {tok: [train_text(cfg, root, i, budget, tok, d) for d in cfg.text_depths]
            for tok in ("cl100k", "bytes")}
    best = {tok: min(runs, key=lambda r: r["val_loss"]) for tok, runs in text.items()}
    if "vst" not in res:
        runner = VSTRunner(vst["checkpoint"], codec=codec, device=cfg.device, name="vst")
        save("vst", {**evaluate(runner, root, f"vst/b{i}", lengths),
                     "train_flops": vst["train_flops"], "steps": vst["steps"],
                     "kv_bytes_per_position": kv_bytes_per_position(runner.model)})
    for tok, run in best.items():
        if f"text_{tok}" in res:
            continue
        cap = None if tok == "cl100k" else cfg.bytes_eval_window
        r = VSTTextRunner(run["checkpoint"], device=cfg.device, max_length=cap,
                          name=f"text_{tok}")
        save(f"text_{tok}", {**evaluate(r, root, f"text_{tok}/b{i}", lengths),
                             "train_flops": run["train_flops"], "depth": run["depth"],
                             "steps": run["steps"], "read_window": cap,
                             "kv_bytes_per_position": kv_bytes_per_position(r.model),
                             "sizes": {f"d{x['depth']}": x["val_loss"] for x in text[tok]}})
    if "truncation" not in res:
        # the cl100k model reading as many positions as the VST used at each length
        trunc: dict = {"scores": {}, "stats": {}}
        for length in lengths:
            n = int(res["vst"]["stats"].get(str(length), {}).get("positions", 0)) or None
            r = VSTTextRunner(best["cl100k"]["checkpoint"], device=cfg.device, max_length=n,
                              name=f"truncation-{length}")
            part = evaluate(r, root, f"truncation/b{i}", [length])
            for task, by_len in part["scores"].items():
                trunc["scores"].setdefault(task, {}).update(by_len)
            trunc["stats"].update(part["stats"])
        save("truncation", {**trunc, "train_flops": best["cl100k"]["train_flops"],
                            "depth": best["cl100k"]["depth"],
                            "kv_bytes_per_position": kv_bytes_per_position(r.model)})
    if cfg.short_chars and "text_cl100k_short" not in res:
        # what users do: a text model trained on short samples, evaluated longer
        d = best["cl100k"]["depth"]
        run = train_text(cfg, root, i, budget, "cl100k", d, max_chars=cfg.short_chars)
        r = VSTTextRunner(run["checkpoint"], device=cfg.device, name="text_cl100k_short")
        save("text_cl100k_short", {**evaluate(r, root, f"text_cl100k_short/b{i}", lengths),
                                   "train_flops": run["train_flops"], "depth": d,
                                   "steps": run["steps"], "trained_chars": cfg.short_chars,
                                   "kv_bytes_per_position":
                                       kv_bytes_per_position(r.model)})
    if not cfg.hier:
        res.setdefault("vst_hier", {"skipped": HIER_SKIP})
    elif "scores" not in res.get("vst_hier", {}):
        run = train_vst(cfg, root, i, budget, codec, reader="trainable")
        # no codec given: the runner reads with the checkpoint's own trained reader
        runner = VSTRunner(run["checkpoint"], device=cfg.device, name="vst_hier")
        save("vst_hier", {**evaluate(runner, root, f"vst_hier/b{i}", lengths),
                          "train_flops": run["train_flops"], "steps": run["steps"],
                          "kv_bytes_per_position": kv_bytes_per_position(runner.model)})
    return res



def run_study(cfg: StudyConfig, codec=None) -> dict:
    """The whole study; `codec`: the frozen codec already loaded (else from --codec)."""
    import torch

    from codec import load_codec
    from eval.long_context_report import write_report

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "config.json", asdict(cfg))
    t0 = time.perf_counter()
    manifest = build_data(cfg, root)
    spec, _, mode = cfg.codec.partition(":")
    if codec is None:
        codec = load_codec(spec, mode=mode or None, path=cfg.codec_path, device=cfg.device)
    lengths = sorted(cfg.lengths)
    by_budget = {f"{b:.3g}": budget_results(cfg, root, i, b, codec, lengths)
                 for i, b in enumerate(sorted(cfg.budgets))}
    summary = summarize(cfg, by_budget, manifest, time.perf_counter() - t0)
    _write(root / "summary.json", summary)
    write_report(root, summary)
    _say(f"done: {root / 'summary.json'}")
    return summary


def summarize(cfg: StudyConfig, by_budget: dict[str, dict], manifest: dict,
              seconds: float) -> dict:
    """The issue's shape for the largest budget, plus every budget under `by_budget`."""
    from jobs.speedrun import commit

    top = by_budget[max(by_budget, key=float)]
    fams = [f for f in FAMILIES if "scores" in top.get(f, {})]
    return {
        "scores": {f: top[f]["scores"] for f in fams},
        "positions": {f: {k: v["positions"] for k, v in top[f]["stats"].items()}
                      for f in fams},
        "kv_bytes": {f: {k: v["positions"] * top[f]["kv_bytes_per_position"]
                         for k, v in top[f]["stats"].items()} for f in fams},
        "prefill_seconds": {f: {k: v["seconds"] for k, v in top[f]["stats"].items()}
                            for f in fams},
        "train_flops": {f: top[f]["train_flops"] for f in fams},
        "budget": max(float(b) for b in by_budget),
        "budgets": sorted(float(b) for b in by_budget),
        "by_budget": by_budget,
        "skipped": {f: v["skipped"] for f, v in top.items() if "skipped" in v},
        "heldout_tasks": manifest.get("config", {}).get("heldout_tasks", []),
        "config": asdict(cfg),
        "study_seconds": seconds,
        "commit": commit(),
    }
