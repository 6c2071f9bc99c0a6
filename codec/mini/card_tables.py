"""Tables both model-card sections print (codec/mini/card.py, codec/mini/card_zh.py)."""

from __future__ import annotations


def stage_table(stages_: list[dict], modes) -> list[str]:
    """The card's table of training stages: steps, minutes, validation precision per mode."""
    return ["| stage | steps | minutes | validation greedy precision ("
            + " / ".join(modes) + ") |", "|---|---|---|---|",
            *[f"| {i + 1} | {st['steps_done']} | {st['minutes']} | "
              + " / ".join(f"{st['val'][m]['precision']:.3f}" for m in modes if m in st["val"])
              + " |" for i, st in enumerate(stages_)]]


def stages(train: dict) -> list[dict]:
    """The chain of training runs behind a checkpoint, oldest first."""
    chain = []
    while train:
        chain.append(train)
        train = train.get("previous")
    return chain[::-1]
