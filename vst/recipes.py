"""Named training recipes: the settings that measured experiments chose, declared once.

    vst-train --recipe learn --data runs/speedrun/store --max-seconds 1080 --out runs/vst
    vst-train --recipe text-bytes --data runs/speedrun/store --max-seconds 1080 --out runs/text
    vst-train --recipe text-bytes-page --data runs/speedrun/store --max-seconds 1080 \
        --out runs/text-page
    vst-train --recipe hier --data runs/speedrun/store --max-seconds 1080 --out runs/hier

Recipes are sized for one CPU core for ~20 minutes (the speedrun); on a GPU raise the
flavour and the batch (`--flavour small --batch-size 64`).

`TrainConfig.from_recipe(name, **overrides)` from Python; on the command line every flag
given explicitly wins over the recipe. The experiments behind each choice are in
docs/experiments.md.
"""

from __future__ import annotations

from typing import Any

from data.errors import BadInput

RECIPES: dict[str, dict[str, Any]] = {
    # The VST recipe (docs/experiments.md, "The VST has to learn"): decoder-CE alone, on
    # every page of every window, reading a random 4 of each page's 32 lines (an unbiased
    # estimate of the page's likelihood at ~1/7 of its FLOPs), from a head that starts at
    # the null token (the decoder's prior) instead of at random prompts.
    "learn": dict(
        flavour="tiny",
        pages_per_window=4,
        mse=0.0,
        cos=0.0,
        dec=1.0,
        dec_pages=-1,
        dec_lines=4,
        head_init="zero",
        eval_pages=-1,
        batch_size=8,
        lr=3e-3,
        warmup=20,
    ),
    # The same-shape text baselines, on the same windows. 1024 tokens a sequence: at 4096
    # bytes the byte model made 34 steps in 10 CPU-minutes and ended worse than the
    # reader's prior (T1, 3.95 bpb); at 1024 x 8 it made 114 steps in 7 minutes (T2, 3.65).
    "text-bytes": dict(
        flavour="tiny",
        modality="text",
        tokenizer="bytes",
        text_seq_len=1024,
        pages_per_window=4,
        eval_pages=-1,
        batch_size=8,
        lr=3e-3,
        warmup=20,
    ),
}
# The page-cut arm of Delta_text: the byte model with each token's context cut to its own
# page (attention stops at page boundaries), trained so; its held-out bpb_text_page_cut
# minus text-bytes' bpb_text is what the context beyond the page is worth to a text model.
RECIPES["text-bytes-page"] = {**RECIPES["text-bytes"], "text_context": "page"}
# its 100k-way head costs ~9x the `tiny` trunk a token: smaller steps, more of them
RECIPES["text-cl100k"] = {**RECIPES["text-bytes"], "tokenizer": "cl100k", "batch_size": 2}
# The hierarchical reader (vst/reader.py): `learn` read through a trainable, line-local copy
# of the codec's reader at its own learning rate; and its reader-only control, the same
# reader trained the same way on null tokens (a VST is credited only with what it adds).
RECIPES["hier"] = {**RECIPES["learn"], "reader": "trainable", "reader_lr": 1e-3}
RECIPES["hier-control"] = {**RECIPES["hier"], "reader_input": "null"}


def recipe_overrides(name: str) -> dict[str, Any]:
    if name not in RECIPES:
        raise BadInput(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return dict(RECIPES[name])
