"""The mini codec's command-line configs: every flag of `vst codec train|train-reader|card`,
declared once.

Each dataclass is the command line (`jobs/cli.py` derives the commands from it: each
field's comment is its --help) and what the run function receives; from Python,
`train(CodecTrainConfig(steps=3, ...))`. The field names are the attributes the training
code reads (`args.steps`, ...). `D` keeps its capital: the flag is `--D`, as before.

    vst codec train --steps 3000 --out codec/mini/weights           # stage 1
    vst codec train-reader --steps 1500 --out codec/mini/weights    # stage 2
    vst codec card --fidelity runs/fidelity_mini/metrics.json       # MODEL_CARD.md
    vst codec train --variant mini-zh --modes small --corpus runs/corpus_zh/train.jsonl.zst \
        --init-from shipped --out runs/codec_zh/w1                      # mini-zh (issue #24)
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from codec.mini import MODES, VARIANTS
from data.errors import existing_path

# A weights flag's symbolic value: the weights this repository ships (codec/mini/weights,
# wherever the package is installed). A symbol, not the absolute path, keeps `--help` and
# the commands recorded in checkpoints free of one machine's paths.
SHIPPED = "shipped"


def weights_dir(value: str, variant: str = "mini") -> Path:
    """The folder a weights flag (--init, --out) names: `shipped` (the variant's shipped
    weights: codec/mini/weights, or codec/mini/weights_zh for mini-zh), or a path."""
    return VARIANTS[variant].weights_dir if value == SHIPPED else Path(value)


def init_files(value: str, modes: str, suffix: str, variant: str = "mini") -> dict[str, Path]:
    """{mode: its file in the --init folder}, each checked before any data is read."""
    folder = weights_dir(value, variant)
    return {mode: existing_path(folder / f"{mode}{suffix}", f"mode {mode!r} weights",
                                hint="check --init") for mode in modes.split(",")}


@dataclass
class MiniRunConfig:
    """Arguments every mini training stage shares: data, schedule length, seeds, threads."""

    workdir: str = "runs/codec_mini"  # demo corpus, validation pages and the training log
    corpus: Optional[str] = None  # corpus path (default: build the demo corpus)
    n_docs: int = 100  # demo-corpus documents to build
    modes: str = ",".join(MODES)  # comma-separated modes to train
    steps: int = 700  # length of the LR schedule
    stop_at: Optional[int] = None  # stop early, keeping the schedule
    batch: int = 4  # pages per step
    noise: float = 0.05  # token noise (sigma)
    drop: float = 0.03  # token dropout (null tokens)
    synthetic: float = 0.25  # share of random-word pages
    val_pages: int = 16  # held-out validation pages
    val_every: int = 100  # validate (and write a checkpoint) every this many steps
    seed: int = 0  # random seed
    threads: int = 2  # torch CPU threads
    workers: int = 1  # render worker processes
    variant: str = "mini"  # mini (English, the `mini` page) or mini-zh (GB2312 Chinese too)


@dataclass
class CodecTrainConfig(MiniRunConfig):
    """Stage 1 of the mini codec: train its modes jointly (one shared line encoder, one
    compressor and read-out per mode) on rendered demo-corpus pages, and write shippable
    weights."""

    steps: int = 700  # length of the LR schedule
    out: str = SHIPPED  # output weights folder ('shipped': codec/mini/weights)
    init: Optional[str] = None  # start from the weights in this folder ('shipped': the shipped)
    lr: float = 3e-3  # peak learning rate
    warmup: int = 30  # warmup steps
    dim: int = 64  # the size dial (encoder width)
    D: int = 256  # visual-token width (flag: --D)
    noise_after: float = 0.5  # fraction of training before token noise starts
    aligned: float = 1.0  # weight of the layout-aligned CTC-path cross-entropy
    probe: float = 1.0  # weight of the glyph probe on the encoder's per-position codes
    ctc: float = 1.0  # weight of the CTC NLL (0: the aligned cross-entropy alone)
    blank_frames: float = 1.0  # share of blank frames/cells the cross-entropies sample (<1:
        # cheaper with a large vocabulary; weighted so the sum stays unbiased)
    bf16: bool = False  # bf16 autocast on CPU
    init_from: Optional[str] = None  # copy every weight whose shape fits from this folder's
        # `mini` checkpoints ('shipped': mini's), class heads row by row (a new variant's start)
    freeze_encoder: bool = False  # keep the shared line encoder as loaded (--init-from or
        # --init): a new mode joins a variant without changing its other modes' tokens


@dataclass
class ReaderTrainConfig(MiniRunConfig):
    """Stage 2 of the mini codec: train its causal character decoder on top of frozen
    visual tokens (from a stage-1 checkpoint), and write shippable weights."""

    steps: int = 1500  # length of the LR schedule
    init: str = SHIPPED  # stage-1 weights folder (or a stage-2 one, to train its reader
        # further); 'shipped': codec/mini/weights
    out: str = SHIPPED  # output weights folder ('shipped': codec/mini/weights)
    lr: float = 2e-3  # peak learning rate
    warmup: int = 50  # warmup steps
    dim: int = 128  # the reader's size dial (width)
    depth: int = 3  # reader layers
    heads: int = 4  # reader attention heads
    tune_trunk: bool = False  # also fine-tune the read-out trunk that unfolds tokens into cells
    empty_lines: float = 0.25  # fraction of empty line slots (below the text) trained on
    structured: float = 0.2  # share of structured pages (tables, aligned columns, grammar lines)
    reader_from: Optional[str] = None  # start the reader from this folder's causal reader:
        # every weight whose shape fits, class rows row by row ('shipped': mini's; mini-zh's
        # start, whose first classes are mini's)


@dataclass
class CardConfig:
    """Write codec/mini/MODEL_CARD.md from the shipped weights' JSON and a fidelity run."""

    fidelity: Path  # metrics.json of held-out text
    demo: Optional[Path] = None  # metrics.json of demo-corpus text
    zh: Optional[Path] = None  # metrics.json of mini-zh on held-out Chinese (adds its section)
    notes: Optional[Path] = None  # markdown appended at the end


def command_line(cfg: Any, prog: str) -> str:
    """The `vst codec ...` command that rebuilds `cfg`: `prog` and every flag whose value
    differs from its default (`--x`/`--no-x` for booleans)."""
    parts = [prog]
    for f in dataclasses.fields(cfg):
        if not f.metadata.get("cli", True):
            continue
        value = getattr(cfg, f.name)
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else dataclasses.MISSING)
        if value == default or value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            parts += [f"{flag} {shlex.quote(str(v))}" for v in value]
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def training_record(cfg: Any, prog: str) -> dict:
    """What a checkpoint's JSON records of the run that wrote it: the command and the config."""
    return {"command": command_line(cfg, prog),
            "config": {k: (str(v) if isinstance(v, Path) else v)
                       for k, v in dataclasses.asdict(cfg).items()}}
