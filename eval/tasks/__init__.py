"""lm-eval task YAMLs for local files, and writers that make more of them.

`eval/tasks/*.yaml` point at default locations (`runs/ruler/<task>_4096.jsonl` from
`vst eval make-ruler runs/ruler`, `runs/longbench/longbench.jsonl` for a LongBench file).
`write_ruler_yamls` / `write_longbench_yaml` write tasks with absolute data paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

TASKS_DIR = Path(__file__).resolve().parent


def _yaml(cfg: dict) -> str:
    """YAML text for a flat task config. JSON strings are valid YAML scalars, so values
    are written with json.dumps; `!function` references are written bare."""
    lines = []
    for k, v in cfg.items():
        if isinstance(v, str) and v.startswith("!function "):
            lines.append(f"{k}: {v}")
        else:
            lines.append(f"{k}: {json.dumps(v, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def ruler_task_config(name: str, data_file: str, max_gen_toks: int) -> dict:
    return {
        "task": name,
        "tag": ["ruler_local"],
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "!function eval.tasks.lm_eval_utils.ruler_doc_to_text",
        "doc_to_target": "{{answers}}",
        "process_results": "!function eval.tasks.lm_eval_utils.ruler_process_results",
        "generation_kwargs": {"max_gen_toks": max_gen_toks, "do_sample": False, "until": []},
        "metric_list": [{"metric": "string_match_all", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def write_ruler_yamls(data_files: Iterable[Path], out_dir: Path) -> list[Path]:
    """One task YAML per generated RULER file (`ruler_<stem>`), with absolute data paths."""
    from eval.ruler import _template, task_specs

    specs = task_specs()
    out: list[Path] = []
    for f in data_files:
        f = Path(f).resolve()
        task = f.stem.rsplit("_", 1)[0]
        gen = _template(specs[task].family)["tokens_to_generate"]
        y = Path(out_dir) / f"ruler_{f.stem}.yaml"
        y.write_text(_yaml(ruler_task_config(f"ruler_{f.stem}", str(f), gen)), encoding="utf-8")
        out.append(y)
    return out


def longbench_task_config(name: str, data_file: str, dataset: str | None = None) -> dict:
    """A task over one LongBench file (records carry `dataset`; generation length from it)."""
    from eval.longbench import FIRST_LINE_DATASETS, canonical_dataset, dataset2maxlen

    ds = canonical_dataset(dataset) if dataset else None
    gen = {"max_gen_toks": dataset2maxlen()[ds] if ds else 128, "do_sample": False, "until": []}
    if ds == "samsum":  # upstream also stops samsum at a newline
        gen["until"] = ["\n"]
    cfg = {
        "task": name,
        "tag": ["longbench_local"],
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "!function eval.tasks.lm_eval_utils.longbench_doc_to_text",
        "doc_to_target": "{{answers}}",
        "process_results": "!function eval.tasks.lm_eval_utils.longbench_process_results",
        "generation_kwargs": gen,
        "metric_list": [{"metric": "longbench_score", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "first_line_scoring": bool(ds in FIRST_LINE_DATASETS)},
    }
    return cfg


def write_longbench_yaml(data_file: Path, out_dir: Path, dataset: str | None = None, name: str | None = None) -> Path:
    data_file = Path(data_file).resolve()
    dataset = dataset or data_file.stem
    name = name or f"longbench_local_{dataset}"
    y = Path(out_dir) / f"{name}.yaml"
    y.parent.mkdir(parents=True, exist_ok=True)
    y.write_text(_yaml(longbench_task_config(name, str(data_file), dataset)), encoding="utf-8")
    return y
