"""Functions that lm-eval task YAMLs point at (`!function eval.tasks.lm_eval_utils.<name>`).

They turn our LongBench-style records into prompts and score generations with the
official metrics, so `lm_eval --include_path eval/tasks ...` runs offline on local files.
Middle truncation to the model's budget is the model adapter's job, not the task's.
"""

from __future__ import annotations


def ruler_doc_to_text(doc: dict) -> str:
    """RULER record -> full prompt, ending with the answer prefix (as RULER feeds models)."""
    from eval.ruler import build_prompt

    return build_prompt(doc, answer_prefix=True)


def ruler_process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Per-sample RULER string_match_all x 100 (its mean is RULER's task score)."""
    from eval.ruler import match_all, postprocess_pred

    return {"string_match_all": 100 * match_all(postprocess_pred(results[0]), doc["answers"])}


def longbench_doc_to_text(doc: dict) -> str:
    """LongBench record -> the official prompt of its dataset (`dataset` field)."""
    from eval.longbench import build_prompt

    return build_prompt(doc["dataset"], doc)


def longbench_process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Official per-sample LongBench score x 100 (first-line cut and max over answers included)."""
    from eval.longbench import score_sample

    score = score_sample(doc["dataset"], results[0], doc["answers"], doc.get("all_classes") or [])
    return {"longbench_score": 100 * score}
