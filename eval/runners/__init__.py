"""Runners that turn long-context task files into official LongBench prediction files.

- `HFTextRunner`: any local Hugging Face causal LM (text-token baseline).
- `VSTTextRunner`: the project's own text-token baseline checkpoint (`vst/`, modality text).
- `CodecReaderRunner`: Glyph-style, the codec decoder reads the rendered context.
- `VSTRunner`: end to end, text -> render -> encode -> VST -> decode -> text.

Submodules import torch/transformers lazily, so importing this package is cheap.
"""

from eval.runners.common import (
    Prompt,
    PredictionFile,
    Runner,
    TaskResult,
    build_prompt,
    run_task,
    run_tasks,
)

__all__ = [
    "Prompt", "PredictionFile", "Runner", "TaskResult", "build_prompt", "run_task", "run_tasks",
]
