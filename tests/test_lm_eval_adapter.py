"""The "vst" lm-eval model runs local tasks offline through `lm_eval.simple_evaluate`."""

from __future__ import annotations

import json
import os
from pathlib import Path


os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from eval.runners.common import Runner  # noqa: E402

DOCS = [
    {"question": "The sky is", "answer": "blue", "choices": ["blue", "green"], "label": 0},
    {"question": "The grass is", "answer": "green", "choices": ["blue", "green"], "label": 1},
]




def write_tasks(dir_: Path) -> Path:
    """Two local tasks over one JSONL: free generation and multiple choice (loglikelihood)."""
    dir_.mkdir(parents=True, exist_ok=True)
    data = dir_ / "data.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    common = (
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        'doc_to_text: "{{question}}"\nmetadata:\n  version: 1.0\n'
    )
    (dir_ / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + common + "output_type: generate_until\n"
        'doc_to_target: "{{answer}}"\ngeneration_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 4\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (dir_ / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common + "output_type: multiple_choice\n"
        "doc_to_target: label\ndoc_to_choice: choices\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return dir_


class Oracle(Runner):
    """Knows the answers: proves requests and results flow through the adapter intact."""

    name = "oracle"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.calls = answers, []

    def predict(self, prompt, *, dataset, max_new_tokens):  # pragma: no cover - unused here
        raise AssertionError

    def generate(self, context, *, max_new_tokens, stop=()):
        self.calls.append(("gen", context, max_new_tokens, tuple(stop)))
        key = next(k for k in self.answers if k in context)
        return " " + self.answers[key] + "\nignored"  # the adapter must honour `until`

    def loglikelihood(self, context, continuation):
        self.calls.append(("ll", context, continuation))
        key = next(k for k in self.answers if k in context)
        return (0.0, True) if continuation.strip() == self.answers[key] else (-5.0, False)


def test_adapter_routes_generate_and_loglikelihood(tmp_path):
    from eval.lm_eval_adapter import evaluate_local

    oracle = Oracle({d["question"]: d["answer"] for d in DOCS})
    tasks = write_tasks(tmp_path / "tasks")
    res = evaluate_local(["tiny_gen", "tiny_mc"], include_path=tasks, runner_obj=oracle)
    r = res["results"]
    assert r["tiny_mc"]["acc,none"] == 1.0
    # generate_until: the answer was cut at "\n"; exact_match compares " blue" to "blue" -> 0,
    # so check the routing itself
    gens = [c for c in oracle.calls if c[0] == "gen"]
    assert len(gens) == 2 and all(c[2] == 4 and c[3] == ("\n",) for c in gens)
    lls = [c for c in oracle.calls if c[0] == "ll"]
    assert len(lls) == 4 and {c[2].strip() for c in lls} == {"blue", "green"}
    assert "exact_match,none" in r["tiny_gen"]


def test_adapter_with_tiny_hf_model(tmp_path):
    from eval.lm_eval_adapter import evaluate_local
    from tests.tiny_hf import build_tiny_hf_lm

    model = build_tiny_hf_lm(tmp_path / "lm", window=64)
    res = evaluate_local(["tiny_gen", "tiny_mc"], include_path=write_tasks(tmp_path / "tasks"),
                         runner="hf", model=str(model), max_gen_toks=4)
    r = res["results"]
    assert 0.0 <= r["tiny_mc"]["acc,none"] <= 1.0
    assert 0.0 <= r["tiny_gen"]["exact_match,none"] <= 1.0


def test_adapter_runs_project_ruler_task(tmp_path):
    """E's generated RULER file + its lm-eval YAML, scored by its own process_results."""
    from eval import ruler
    from eval.lm_eval_adapter import evaluate_local
    from eval.tasks import write_ruler_yamls

    recs = ruler.generate("niah_single_1", 1200, 2, unit="chars", seed=3)
    data = ruler.write_jsonl(recs, tmp_path / "niah_single_1_1200.jsonl")
    (yaml,) = write_ruler_yamls([data], tmp_path)
    oracle = Oracle({r["input"]: " ".join(r["answers"]) for r in recs})
    res = evaluate_local([yaml.stem], include_path=tmp_path, runner_obj=oracle)
    (scores,) = res["results"].values()
    metric = next(
        v for k, v in scores.items() if k.startswith("string_match_all") and "stderr" not in k
    )
    assert metric in (1.0, 100.0)


def test_vst_model_is_registered():
    from lm_eval.api.registry import get_model

    import eval.lm_eval_adapter as adapter

    assert get_model("vst") is adapter.VSTLM


def test_adapter_with_tiny_vst_end_to_end(tmp_path):
    """generate_until and loglikelihood through render -> encode -> VST -> decoder."""
    from eval.lm_eval_adapter import evaluate_local
    from eval.runners.vst_runner import VSTRunner
    from tests.test_runners_vst import vector_model
    from codec.toy import ToyCodec

    codec = ToyCodec()
    runner = VSTRunner(model=vector_model(codec, max_seq_len=96), codec=codec)
    res = evaluate_local(["tiny_gen", "tiny_mc"], include_path=write_tasks(tmp_path / "tasks"),
                         runner_obj=runner)
    r = res["results"]
    assert 0.0 <= r["tiny_mc"]["acc,none"] <= 1.0 and "exact_match,none" in r["tiny_gen"]
