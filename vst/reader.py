"""The reader a VST's predictions are read through: the codec's frozen decoder, or the
hierarchical reader.

`--reader trainable` (the `hier` recipe) trains a copy of the codec's reader jointly with
the VST, at its own learning rate (`--reader-lr`). The copy starts from the codec's
weights and reads each line from its own token slot only (`Codec.trainable_reader`), so
under teacher forcing it cannot read a line from a later slot's prediction, which has seen
that line's true token. The codec and every store stay untouched; the run's checkpoints
carry the reader (`reader.safetensors`), and everything that reads a run's output
(`vst generate`, `vst chat`, `vst eval ...`) loads it through `load_reader`.

`--reader-input null` (the `hier-control` recipe) trains the same reader on null tokens
with the same steps, data and schedule: the reader-only control. A VST is credited only
with what it adds over it. With the frozen reader the control is the decoder's prior.

    vst-train --recipe hier --data STORE --max-seconds 900 --out runs/hier
    vst-train --recipe hier-control --data STORE --max-seconds 900 --out runs/hier-control
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from data.errors import BadCheckpoint, BadInput
from vst.train_config import READERS, TrainConfig


def build_reader(reader: str, codec):
    """The codec itself (frozen), or a fresh trainable copy of its reader."""
    if reader not in READERS:
        raise BadInput(f"--reader must be one of {', '.join(READERS)}; got {reader!r}")
    return codec if reader == "frozen" else codec.trainable_reader()


def reader_parameters(reader) -> list[torch.nn.Parameter]:
    """The weights that train: none for a frozen codec."""
    return [p for p in reader.parameters() if p.requires_grad] if reader is not None else []


def reader_extra(reader) -> dict[str, dict[str, torch.Tensor]]:
    """What a checkpoint carries besides the VST: the hierarchical reader, if the run reads
    through one (trained here, or taken frozen from the base run of an SFT)."""
    trained = reader is not None and reader.is_trainable_reader  # a text run has no codec
    return {"reader": reader.reader_state()} if trained else {}


def restore_reader(reader, ckpt: str | Path) -> None:
    """Load a checkpoint's reader weights into `reader` (a no-op for a frozen codec)."""
    from vst.checkpoint import load_extra

    if reader is not None and reader.is_trainable_reader:
        reader.load_reader_state(load_extra(ckpt, "reader"))


def checkpoint_reader(state: dict[str, Any], codec):
    """`codec`, or, when the checkpoint's run trained a hierarchical reader, a copy of its
    reader with the checkpoint's weights. `state`: a loaded checkpoint's state (from
    `vst.generate.load_model`, which records its directory as state["checkpoint"])."""
    reader = build_reader(state.get("train_config", {}).get("reader", "frozen"), codec)
    if reader is not codec:
        if "checkpoint" not in state:
            raise BadCheckpoint("a run with a trainable reader needs its checkpoint directory",
                                hint="load it with vst.generate.load_model")
        restore_reader(reader, state["checkpoint"])
    return reader


def load_reader(state: dict[str, Any]):
    """What a checkpoint's predictions are read with: the codec it trained through
    (`TrainConfig.load_codec`), with its trained reader where it has one."""
    return checkpoint_reader(state, TrainConfig.from_dict(state["train_config"]).load_codec())
