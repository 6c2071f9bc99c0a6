"""lm-eval task YAMLs for local files, and writers that make more of them.

`eval/tasks/*.yaml` point at default locations, relative to the working directory:
`runs/ruler/<task>_4096.jsonl` (from `vst eval make-ruler runs/ruler`) for the
`vst_ruler_<task>` tasks and group `vst_ruler_4096`, and `runs/longbench/longbench.jsonl`
for `vst_longbench_local` (any LongBench file whose records carry `dataset`).
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


def _mean_metric(name: str) -> dict:
    return {"metric": name, "aggregation": "mean", "higher_is_better": True}


def ruler_task_config(name: str, data_file: str, max_gen_toks: int) -> dict:
    return {
        "task": name,
        "tag": ["vst_ruler"],
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "!function eval.tasks.lm_eval_utils.ruler_doc_to_text",
        "doc_to_target": "{{answers}}",
        "process_results": "!function eval.tasks.lm_eval_utils.ruler_process_results",
        "generation_kwargs": {"max_gen_toks": max_gen_toks, "do_sample": False, "until": []},
        "metric_list": [_mean_metric("string_match_all")],
        "metadata": {"version": 1.0},
    }


def write_ruler_yamls(data_files: Iterable[Path], out_dir: Path) -> list[Path]:
    """One task YAML per generated RULER file (`vst_ruler_<stem>`), with absolute data paths.

    Names carry a `vst_` prefix so they never shadow lm-eval's own `ruler_*` tasks.
    """
    from eval.ruler import _template, task_specs

    specs = task_specs()
    out: list[Path] = []
    for f in data_files:
        f = Path(f).resolve()
        task = f.stem.rsplit("_", 1)[0]
        gen = _template(specs[task].family)["tokens_to_generate"]
        y = Path(out_dir) / f"vst_ruler_{f.stem}.yaml"
        y.write_text(_yaml(ruler_task_config(f"vst_ruler_{f.stem}", str(f), gen)), encoding="utf-8")
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
        "tag": ["vst_longbench"],
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "!function eval.tasks.lm_eval_utils.longbench_doc_to_text",
        "doc_to_target": "{{answers}}",
        "process_results": "!function eval.tasks.lm_eval_utils.longbench_process_results",
        "generation_kwargs": gen,
        "metric_list": [_mean_metric("longbench_score")],
        "metadata": {"version": 1.0, "first_line_scoring": bool(ds in FIRST_LINE_DATASETS)},
    }
    return cfg


def write_longbench_yaml(
    data_file: Path, out_dir: Path, dataset: str | None = None, name: str | None = None
) -> Path:
    """A task YAML for one LongBench JSONL file (dataset defaults to the file's stem)."""
    data_file = Path(data_file).resolve()
    dataset = dataset or data_file.stem
    name = name or f"vst_longbench_{dataset}"
    y = Path(out_dir) / f"{name}.yaml"
    y.parent.mkdir(parents=True, exist_ok=True)
    y.write_text(_yaml(longbench_task_config(name, str(data_file), dataset)), encoding="utf-8")
    return y


def write_static_yamls(out_dir: Path = TASKS_DIR) -> list[Path]:
    """(Re)write the YAMLs shipped in eval/tasks (default data locations under runs/)."""
    from eval.ruler import _template, task_specs

    out = []
    for t, spec in task_specs().items():
        gen = _template(spec.family)["tokens_to_generate"]
        cfg = ruler_task_config(f"vst_ruler_{t}", f"runs/ruler/{t}_4096.jsonl", gen)
        out.append(out_dir / f"vst_ruler_{t}.yaml")
        out[-1].write_text(_yaml(cfg), encoding="utf-8")
    group = {
        "group": "vst_ruler_4096",
        "task": [f"vst_ruler_{t}" for t in task_specs()],
        "aggregate_metric_list": [{"metric": "string_match_all", "weight_by_size": False}],
        "metadata": {"version": 1.0},
    }
    out.append(out_dir / "vst_ruler_4096_group.yaml")
    out[-1].write_text(_yaml(group), encoding="utf-8")
    lb = longbench_task_config("vst_longbench_local", "runs/longbench/longbench.jsonl")
    out.append(out_dir / "vst_longbench_local.yaml")
    header = (
        "# Template: point data_files at a LongBench JSONL whose records carry `dataset`,\n"
        "# or write one task per file with eval.tasks.write_longbench_yaml.\n"
    )
    out[-1].write_text(header + _yaml(lb), encoding="utf-8")
    return out
