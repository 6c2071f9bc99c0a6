"""`vst eval compression`: context-compression arms at equal positions and equal training
FLOPs (issue #16, the protocol of arXiv 2512.03643); see docs/compression.md.

    vst eval compression --out runs/compression --flavour debug --steps 300
    vst eval compression --codec toy --random-init --max-pairs 64 --steps 5   # a smoke run

For each codec mode (P = pages * n context positions): prepare context/continuation
pairs once (cached in the report folder), then for every arm and seed train the same
trunk on the continuation (and, with --recon, on reconstructing the context) for the
same training FLOPs, counted on one real step of each arm (FlopCounterMode), and score
held-out documents (`data.corpus.split_of`). The `vst` arm is the pure VST
(`vst.compression_vst`): the same trunk size predicting the continuation page as tokens,
scored through the frozen decoder on the same bytes, at the same FLOPs (the decoder's
forward and backward included). The table, JSON and plot are written by
`eval.compression_report`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from data.errors import BadInput
from vst.compression import ARMS, TEXT_ONLY, ArmsModel, arms_batch, context_positions

ALL_ARMS = (*ARMS, "vst")  # the byte-level arms, then the pure VST
NOTES = ["Every arm is scored on the same bytes: the first whole layout lines of the "
         "continuation page within --predict-bytes. Pure VST: the frozen decoder's bpb of "
         "those lines given the VST's teacher-forced tokens of the continuation page; "
         "decoder prior: given null tokens; true page tokens: given the codec's own."]


@dataclass
class CompressionConfig:
    """Context-compression arms at equal positions: visual tokens against truncation, mean
    pooling, a learned conv1d compressor and the full text (issue #16)."""

    out: str = "runs/compression"  # report folder: pairs cache, compression.md/.json/.png
    corpus: str = "runs/speedrun/corpus/train.jsonl.zst"  # Pile-format corpus of documents
        # (default: the training file `vst speedrun` writes)
    codec: str = "mini"  # codec name (load_codec); each mode below is one compression ratio
    modes: list[str] = field(default_factory=lambda: ["tiny", "small", "base"])  # codec modes
    random_init: bool = False  # an untrained codec of the same shapes (tests, smoke runs)
    synthetic_docs: int = 0  # >0: this many synthetic documents instead of --corpus (tests)
    pages: int = 2  # context pages per pair: P = pages * tokens per page
    cont_bytes: int = 512  # continuation bytes kept after each context when pairs are made
    predict_bytes: int = 512  # continuation bytes trained on and scored (<= cont_bytes)
    max_pairs: int = 2000  # pairs prepared per mode (train and held-out together)
    per_doc: int = 2  # at most this many non-overlapping windows per document
    val_fraction: float = 0.05  # held-out share of documents (data.corpus.split_of)
    eval_pairs: int = 128  # held-out pairs scored per run (at most)
    arms: list[str] = field(default_factory=lambda: list(ALL_ARMS))  # arms to train
    full_steps: int = 0  # >0: the full-text arm trains this many steps (an upper bound at
        # more FLOPs than the budget, reported as such); 0: equal FLOPs like every arm
    flavour: str = "debug"  # trunk size (vst.config flavours), the same for every arm
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # seeds per arm
    steps: int = 300  # the visual arm's steps; its FLOPs are every arm's training budget
    batch: int = 16  # pairs per step
    lr: float = 3e-3  # AdamW peak learning rate (warmup 5%, cosine to 10%)
    recon: bool = False  # also train each arm to reconstruct its context (same budget)
    recon_bytes: int = 256  # reconstruction target: the first bytes of each context
    recon_eval_pairs: int = 4  # held-out pairs read greedily for reconstruction precision
    threads: int = 0  # torch threads (0: torch's default)
    report_only: bool = False  # write the report from the folder's runs.jsonl; train nothing

    def __post_init__(self) -> None:  # before any codec or corpus is loaded
        unknown = set(self.arms) - set(ALL_ARMS)
        if unknown:
            raise BadInput(f"unknown arms {sorted(unknown)}; choose from {', '.join(ALL_ARMS)}")
        if self.predict_bytes > self.cont_bytes:
            raise BadInput(f"--predict-bytes ({self.predict_bytes}) must not exceed "
                           f"--cont-bytes ({self.cont_bytes})")


# -- data -------------------------------------------------------------------------------------
def synthetic_texts(n: int, seed: int = 0) -> list:
    """Documents of pseudo-English built from a small vocabulary (tests, smoke runs)."""
    from data.corpus import Document

    rng = np.random.default_rng(seed)
    words = ("the page token codec reads text line model context bytes each visual "
             "compression window document encoder decoder frozen pooling").split()
    docs = []
    for i in range(n):
        lines = [" ".join(rng.choice(words, rng.integers(3, 8))) for _ in range(400)]
        docs.append(Document(id=f"syn-{i}", text="\n".join(lines) + "\n", meta={}))
    return docs


def load_pairs(cfg: CompressionConfig, mode: str):
    """The pairs of one mode, from the report folder's cache when present."""
    from codec import load_codec
    from vst.compression_data import Pairs, build_pairs

    codec = load_codec(cfg.codec if mode in ("", "default") else f"{cfg.codec}:{mode}",
                       random_init=cfg.random_init)
    src = f"syn{cfg.synthetic_docs}" if cfg.synthetic_docs else Path(cfg.corpus).stem
    key = (f"pairs2-{codec.name}-{codec.mode}-{codec.version}-{src}-p{cfg.pages}"
           f"-c{cfg.cont_bytes}-n{cfg.max_pairs}-d{cfg.per_doc}-v{cfg.val_fraction}.npz")
    path = Path(cfg.out) / "pairs" / key
    if path.exists():
        return Pairs.load(path), codec
    if cfg.synthetic_docs:
        docs = synthetic_texts(cfg.synthetic_docs)
    else:
        from data.corpus import read_corpus

        docs = read_corpus(cfg.corpus)
    from tqdm.auto import tqdm

    t0 = time.time()
    with tqdm(total=cfg.max_pairs, desc=f"pairs {mode}", unit="pair", disable=None) as bar:
        pairs = build_pairs(docs, codec, pages=cfg.pages, cont_bytes=cfg.cont_bytes,
                            per_doc=cfg.per_doc, max_pairs=cfg.max_pairs,
                            val_fraction=cfg.val_fraction,
                            progress=lambda n: bar.update(n - bar.n))
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs.save(path)
    print(f"[{mode}] {len(pairs)} pairs ({int(pairs.val.sum())} held out), P={pairs.P}, "
          f"{time.time() - t0:.0f}s -> {path}", flush=True)
    return pairs, codec


# -- one arm ----------------------------------------------------------------------------------
def _model(cfg: CompressionConfig, arm: str, pairs, seed: int) -> ArmsModel:
    from vst.config import flavour

    torch.manual_seed(seed)
    return ArmsModel(arm, flavour(cfg.flavour, modality="text", vocab_size=256, rope="1d"),
                     P=pairs.P, D=pairs.vis.shape[2])


def _learner(cfg: CompressionConfig, arm: str, pairs, codec, seed: int, target: str):
    """(model, loss of a batch of pair indices) for one arm and target."""
    if arm == "vst":
        from vst.compression_vst import PureVST

        vst = PureVST(pairs, codec, flavour=cfg.flavour, seed=seed)
        return vst, vst.loss
    model = _model(cfg, arm, pairs, seed)
    return model, lambda index: model.loss(arms_batch(pairs, index, target,
                                                      _length(cfg, target)))


def step_flops(cfg: CompressionConfig, arm: str, pairs, target: str, codec=None) -> int:
    """Counted FLOPs of one training step of `arm` (forward and backward) on a batch of
    the training pairs: trunk, context encoder and head alike, and for the pure VST the
    frozen decoder's forward and backward of its decoder-CE term."""
    from vst.flops import count_flops

    _, loss = _learner(cfg, arm, pairs, codec, 0, target)
    train = np.flatnonzero(~pairs.val)
    _, flops = count_flops(lambda: loss(train[: cfg.batch]).backward())
    return flops


def train_arm(cfg: CompressionConfig, arm: str, pairs, seed: int, steps: int,
              target: str, codec=None):
    """The arm's model after `steps` AdamW steps (warmup 5%, cosine to 10% of the peak)
    on random batches of the training pairs."""
    from tqdm.auto import tqdm

    model, loss_of = _learner(cfg, arm, pairs, codec, seed, target)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    train = np.flatnonzero(~pairs.val)
    rng = np.random.default_rng(seed)
    warm = max(1, steps // 20)
    for step in tqdm(range(steps), desc=f"{arm} seed {seed} {target}", disable=None,
                     leave=False):
        lr = cfg.lr * min(1.0, (step + 1) / warm)
        if step >= warm:
            lr = cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) /
                                                      max(1, steps - warm))))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = loss_of(rng.choice(train, cfg.batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return model.eval()


def _length(cfg: CompressionConfig, target: str) -> int:
    return cfg.predict_bytes if target == "continuation" else cfg.recon_bytes


@torch.no_grad()
def heldout_bpb(model: ArmsModel, pairs, index, target: str, length: int | None = None,
                batch: int = 16) -> float:
    """Held-out bits per byte: of the scored continuation bytes (`Pairs.score_len`), or
    of the context's first `length` bytes (reconstruction)."""
    total, count = 0.0, 0
    for i in range(0, len(index), batch):
        nll, n = model.nll(arms_batch(pairs, index[i:i + batch], target, length,
                                      scored=target == "continuation"))
        total, count = total + float(nll), count + int(n)
    return total / (math.log(2) * max(count, 1))


def recon_precision(model: ArmsModel, pairs, index, length: int) -> float:
    """Fox-style precision of the greedy reconstruction of each context's first `length`
    bytes, mean over pairs."""
    from codec.text_metrics import precision

    b = arms_batch(pairs, index, "context")
    out = model.greedy(b, length)
    scores = []
    for i, row in enumerate(out):
        ref = bytes(b.ctx[i, :min(length, int(b.ctx_len[i]))].tolist()).decode("utf-8", "replace")
        pred = bytes(row[:len(ref.encode())].tolist()).decode("utf-8", "replace")
        scores.append(precision(pred, ref))
    return float(np.mean(scores))


def frozen_decoder_recon(codec, pairs, index) -> dict:
    """The visual arm's reconstruction by the frozen codec decoder: greedy precision per
    page (`codec.decode`) and the teacher-forced bpb of the page texts (`text_nll`)."""
    from codec.text_metrics import precision

    k = pairs.page_end.shape[1]
    prec, nll, nbytes = [], 0.0, 0
    for i in index:
        texts = pairs.page_texts(int(i))
        tokens = torch.from_numpy(pairs.vis[i].astype(np.float32)).view(k, codec.n, codec.D)
        prec += [precision(p, t) for p, t in zip(codec.decode(tokens), texts)]
        with torch.no_grad():
            out = codec.text_nll(tokens, texts)
        nll, nbytes = nll + float(out.nll.sum()), nbytes + int(out.n_bytes.sum())
    return {"recon_precision": float(np.mean(prec)),
            "recon_bpb": nll / (math.log(2) * max(nbytes, 1))}


def train_and_score(cfg: CompressionConfig, mode: str, arm: str, seed: int, pairs, codec,
                    val, steps: dict, per_step: dict) -> dict:
    """Train one arm and seed (continuation, and reconstruction when `steps` has a
    "context" target) and score it on the held-out pairs `val`: its record."""
    t0 = time.time()
    model = train_arm(cfg, arm, pairs, seed, steps["continuation"], "continuation", codec)
    r = {"mode": mode, "arm": arm, "seed": seed, "P": pairs.P,
         "positions": float(np.mean([context_positions(arm, pairs.P, int(n))
                                     for n in pairs.ctx_len[val]])),
         "ctx_bytes": float(pairs.ctx_len[val].mean()), "steps": steps["continuation"],
         "flops": steps["continuation"] * per_step["continuation"],
         "scored_bytes": float(pairs.score_len(cfg.predict_bytes)[val].mean()),
         "n_train": int((~pairs.val).sum()), "n_val": len(val)}
    if arm == "vst":
        r["bpb"] = model.heldout(val, cfg.predict_bytes)
    else:
        r["bpb"] = heldout_bpb(model, pairs, val, "continuation", cfg.predict_bytes)
    recon = "context" in steps
    if recon:
        model = train_arm(cfg, arm, pairs, seed, steps["context"], "context")
        r["recon_steps"] = steps["context"]
        r["recon_flops"] = steps["context"] * per_step["context"]
        r["recon_bpb"] = heldout_bpb(model, pairs, val, "context", cfg.recon_bytes)
        r["recon_precision"] = recon_precision(model, pairs, val[: cfg.recon_eval_pairs],
                                               cfg.recon_bytes)
    r["seconds"] = time.time() - t0
    print(f"[{mode}] {arm} seed {seed}: bpb {r['bpb']:.3f} "
          f"({r['steps']} steps, {r['flops']:.3g} FLOPs, {r['seconds']:.0f}s)"
          + (f", recon bpb {r['recon_bpb']:.3f} precision {r['recon_precision']:.3f}"
             if recon else ""), flush=True)
    return r


def _setup(cfg: CompressionConfig) -> dict:
    """What makes two runs comparable (a result is reused only under the same setup)."""
    keep = ("corpus", "codec", "random_init", "synthetic_docs", "pages", "cont_bytes",
            "predict_bytes", "max_pairs", "per_doc", "val_fraction", "eval_pairs", "flavour",
            "steps", "batch", "lr", "recon", "recon_bytes", "recon_eval_pairs", "full_steps")
    return {k: getattr(cfg, k) for k in keep}


def _done(path: Path, setup: dict) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("setup") == setup:
                done[(r["mode"], r["arm"], r["seed"])] = r
    return done


# -- the whole measurement --------------------------------------------------------------------
def run(cfg: CompressionConfig) -> dict:
    from eval.compression_report import write_report

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = _setup(cfg)
    done = _done(out / "runs.jsonl", setup)
    log = (out / "runs.jsonl").open("a")
    # runs of the same setup already in the folder (other modes, an interrupted run)
    # are kept and not trained again, so modes can be run one invocation at a time
    results = list(done.values())

    def emit(r: dict) -> None:
        done[(r["mode"], r["arm"], r["seed"])] = r
        results.append(r)
        log.write(json.dumps(r) + "\n")
        log.flush()

    for mode in [] if cfg.report_only else cfg.modes:
        pairs, codec = load_pairs(cfg, mode)
        val = np.flatnonzero(pairs.val)
        # a pair is scored when its continuation page's first line fits the scored bytes
        val = val[pairs.score_lines(cfg.predict_bytes)[val] > 0]
        val = val[: cfg.eval_pairs]
        if len(val) == 0 or pairs.val.all():
            raise BadInput(f"[{mode}] need both training and scorable held-out pairs; got "
                           f"{len(val)} held out of {len(pairs)}")
        ctx_bytes = float(pairs.ctx_len[val].mean())  # the same for every arm's rows
        digest = pairs.text_digest()
        targets = ["continuation"] + (["context"] if cfg.recon else [])
        budget = {t: cfg.steps * step_flops(cfg, "visual", pairs, t) for t in targets}
        for arm in cfg.arms:
            own = ["continuation"] + (["context"] if cfg.recon and arm != "vst" else [])
            per_step = {t: step_flops(cfg, arm, pairs, t, codec) for t in own}
            steps = {t: max(1, round(budget[t] / per_step[t])) for t in own}
            if arm == "full" and cfg.full_steps:
                steps = {t: cfg.full_steps for t in own}
            for seed in cfg.seeds:
                if (mode, arm, seed) in done:
                    continue
                same = [r for r in results if r["arm"] == arm and r["seed"] == seed
                        and r.get("text_digest") == digest] if arm in TEXT_ONLY else []
                if same:  # another mode paged the same text: the same run, not trained again
                    emit({**same[0], "mode": mode, "P": pairs.P, "reused_from": same[0]["mode"]})
                    continue
                r = train_and_score(cfg, mode, arm, seed, pairs, codec, val, steps, per_step)
                emit({**r, "text_digest": digest, "setup": setup})
        refs = ("decoder_prior", "decoder_true_tokens")
        if "vst" in cfg.arms and any((mode, ref, 0) not in done for ref in refs):
            # the pure VST's references: the frozen decoder given null and true tokens
            from vst.compression_vst import decoder_references

            for ref, bpb in decoder_references(codec, pairs, val, cfg.predict_bytes).items():
                emit({"mode": mode, "arm": ref, "seed": 0, "P": pairs.P,
                      "positions": float(pairs.P), "ctx_bytes": ctx_bytes, "steps": 0,
                      "flops": 0, "bpb": bpb,
                      "scored_bytes": float(pairs.score_len(cfg.predict_bytes)[val].mean()),
                      "n_val": len(val), "setup": setup})
        if (mode, "visual_frozen_decoder", 0) not in done:
            # the frozen decoder needs no training: always measured (~1 s a page greedy)
            emit({"mode": mode, "arm": "visual_frozen_decoder", "seed": 0, "P": pairs.P,
                  "positions": float(pairs.P), "ctx_bytes": ctx_bytes, "steps": 0, "flops": 0,
                  "bpb": None, "setup": setup,
                  **frozen_decoder_recon(codec, pairs, val[: cfg.recon_eval_pairs])})
    summary = write_report(results, out, notes=NOTES,
                           meta={"config": asdict(cfg)})
    print((out / "compression.md").read_text())
    return summary
