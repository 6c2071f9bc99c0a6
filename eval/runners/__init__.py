"""Runners that turn long-context task files into official LongBench prediction files.

- `HFTextRunner` (`eval.runners.text`): any local Hugging Face causal LM (text baseline).
- `VSTTextRunner` (`eval.runners.text`): the project's text-token baseline checkpoint.
- `CodecReaderRunner` (`eval.runners.codec_reader`): Glyph-style, the codec decoder reads
  the rendered context (direct for DeepSeek-OCR-2; transcribe-then-answer for `mini`).
- `VSTRunner` (`eval.runners.vst_runner`): text -> render -> encode -> VST -> decode -> text.

`make_runner(kind, model, ...)` builds any of them from plain settings; `run_tasks(runner,
paths, out_dir)` predicts task files resumably. Submodules import torch/transformers
lazily, so importing this package is cheap. See docs/runners.md.
"""

from eval.runners.common import (
    PredictionFile,
    Prompt,
    Runner,
    TaskResult,
    build_prompt,
    run_task,
    run_tasks,
)
from eval.runners.factory import RUNNERS, make_runner

__all__ = [
    "RUNNERS", "PredictionFile", "Prompt", "Runner", "TaskResult", "build_prompt",
    "make_runner", "run_task", "run_tasks",
]
