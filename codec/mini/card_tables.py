"""Tables both model-card sections print (codec/mini/card.py, codec/mini/card_zh.py)."""

from __future__ import annotations


def stage_table(stages_: list[dict], modes) -> list[str]:
    """The card's table of training stages: steps, minutes, validation precision per mode."""
    return ["| stage | steps | minutes | validation greedy precision ("
            + " / ".join(modes) + ") |", "|---|---|---|---|",
            *[f"| {i + 1} | {st['steps_done']} | {st['minutes']} | "
              + " / ".join(f"{st['val'][m]['precision']:.3f}" if m in st["val"] else "-"
                           for m in modes)
              + " |" for i, st in enumerate(stages_)]]


def stages(train: dict) -> list[dict]:
    """The chain of training runs behind a checkpoint, oldest first."""
    chain = []
    while train:
        chain.append(train)
        train = train.get("previous")
    return chain[::-1]


def merged_stages(trains: list[dict]) -> list[dict]:
    """The training runs behind several checkpoints (modes that share their first stages
    and then part), each once, oldest first: shared stages, then each mode's own."""
    seen, out = set(), []
    for train in trains:
        for st in stages(train):
            if st["command"] not in seen:
                seen.add(st["command"])
                out.append(st)
    return out
