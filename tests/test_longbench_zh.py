"""LongBench's Chinese datasets end to end on local files in the official format.

    HF_HUB_OFFLINE=1 pytest tests/test_longbench_zh.py -q

A small file per zh dataset (multifieldqa_zh, dureader, vcsum, lsht, passage_retrieval_zh),
one JSON object per line with the official keys (input, context, answers, length,
all_classes, dataset, language, _id), goes through `run_tasks` with the official zh prompt
templates, and the predictions are scored by `eval.longbench.score_directory` with the
official zh metrics (jieba F1, jieba ROUGE-L, classification, 段落 retrieval).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval import longbench as lb
from eval.runners.codec_reader import CodecReaderRunner
from eval.runners.common import Prompt, Runner, build_prompt, run_tasks

MEETING = ("主持人：今天我们讨论新产品的发布计划。张经理：市场部建议在十月发布，"
           "因为九月还要完成测试。李工：测试需要再增加两周，主要是性能问题。") * 4
PASSAGES = "".join(f"段落{i}：{text}\n\n" for i, text in enumerate(
    ["北京是中国的首都，有三千多年的建城史。", "长江是亚洲第一长河，全长约六千三百公里。",
     "大熊猫主要生活在四川的山区，以竹子为食。"], start=1))
LSHT_CLASSES = ["体育", "财经", "科技", "娱乐"]

ZH_SAMPLES: dict[str, list[dict]] = {
    "multifieldqa_zh": [
        {"input": "大熊猫主要吃什么？", "context": PASSAGES * 3, "answers": ["竹子"]},
        {"input": "长江全长约多少公里？", "context": PASSAGES * 3, "answers": ["六千三百公里"]},
    ],
    "dureader": [
        {"input": "新产品什么时候发布？", "context": MEETING,
         "answers": ["市场部建议在十月发布新产品。"]},
        {"input": "测试还需要多久？", "context": MEETING, "answers": ["测试需要再增加两周。"]},
    ],
    "vcsum": [
        {"input": "", "context": MEETING,
         "answers": ["会议讨论了新产品的发布计划，市场部建议十月发布，测试需要再增加两周。"]},
    ],
    "lsht": [
        {"input": "中国队在世界杯预选赛中以二比零战胜对手。",
         "context": "新闻：央行宣布下调存款准备金率。\n类别：财经\n\n"
                    "新闻：新款手机搭载了自研芯片。\n类别：科技\n",
         "answers": ["体育"], "all_classes": LSHT_CLASSES},
        {"input": "股市今天全线上涨，成交量创新高。",
         "context": "新闻：电影节今晚开幕。\n类别：娱乐\n", "answers": ["财经"],
         "all_classes": LSHT_CLASSES},
    ],
    "passage_retrieval_zh": [
        {"input": "这段话介绍了一种以竹子为食的动物。", "context": PASSAGES, "answers": ["段落3"]},
        {"input": "这段话介绍了一座城市的历史。", "context": PASSAGES, "answers": ["段落1"]},
    ],
}
ZH_DATASETS = tuple(ZH_SAMPLES)


def official_record(dataset: str, i: int, sample: dict) -> dict:
    """A line as THUDM/LongBench ships it."""
    return {"input": sample["input"], "context": sample["context"],
            "answers": sample["answers"], "length": len(sample["context"]),
            "all_classes": sample.get("all_classes"), "dataset": dataset, "language": "zh",
            "_id": f"{dataset}-{i}"}


def write_tasks(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for dataset, samples in ZH_SAMPLES.items():
        lines = [json.dumps(official_record(dataset, i, s), ensure_ascii=False)
                 for i, s in enumerate(samples)]
        (root / f"{dataset}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


class Oracle(Runner):
    """Answers each sample with its first reference (the question picks the sample)."""

    name = "oracle"

    def __init__(self) -> None:
        self.prompts: dict[str, Prompt] = {}

    def predict(self, prompt: Prompt, *, dataset: str, max_new_tokens: int) -> str:
        self.prompts[dataset] = prompt
        for sample in ZH_SAMPLES[dataset]:
            if sample["input"] in prompt.after and sample["context"] == prompt.context:
                return sample["answers"][0]
        raise AssertionError(f"no {dataset} sample matches the prompt")


class Wrong(Runner):
    """Fluent but wrong answers: each dataset's scorer must give them less."""

    name = "wrong"
    ANSWERS = {"multifieldqa_zh": "老虎", "dureader": "明年春天再说。", "vcsum": "大家吃了午饭。",
               "lsht": "娱乐", "passage_retrieval_zh": "段落2"}

    def predict(self, prompt: Prompt, *, dataset: str, max_new_tokens: int) -> str:
        return self.ANSWERS[dataset]


def test_zh_files_run_with_official_prompts_and_score_100_for_the_right_answers(tmp_path):
    tasks = write_tasks(tmp_path / "data")
    oracle = Oracle()
    results = run_tasks(oracle, [tasks], tmp_path / "pred", progress=False)
    assert sorted(r.dataset for r in results) == sorted(ZH_DATASETS)
    templates = lb.dataset2prompt()
    for dataset, samples in ZH_SAMPLES.items():
        prompt = oracle.prompts[dataset]
        sample = official_record(dataset, len(samples) - 1, samples[-1])
        assert prompt.text == templates[dataset].format(**sample)  # the official zh template
        assert prompt == build_prompt(dataset, sample)
        lines = [json.loads(x) for x in
                 (tmp_path / "pred" / f"{dataset}.jsonl").read_text("utf-8").splitlines()]
        assert [x["_id"] for x in lines] == [f"{dataset}-{i}" for i in range(len(samples))]
        assert all(x["length"] == len(s["context"]) for x, s in zip(lines, samples))
    scores = lb.score_directory(tmp_path / "pred")
    assert scores == {dataset: 100.0 for dataset in ZH_DATASETS}
    assert json.loads((tmp_path / "pred" / "result.json").read_text("utf-8")) == scores


def test_zh_scorers_give_wrong_answers_less(tmp_path):
    tasks = write_tasks(tmp_path / "data")
    run_tasks(Wrong(), [tasks], tmp_path / "wrong", progress=False)
    scores = lb.score_directory(tmp_path / "wrong", write=False)
    assert set(scores) == set(ZH_DATASETS)
    for dataset in ZH_DATASETS:
        assert scores[dataset] < 100.0, dataset
    assert scores["lsht"] == scores["passage_retrieval_zh"] == scores["multifieldqa_zh"] == 0.0


@pytest.mark.parametrize("dataset,pred,right,worse", [
    ("multifieldqa_zh", "大熊猫吃竹子", "竹子", "老虎"),
    ("dureader", "市场部建议十月发布", "市场部建议在十月发布新产品。", "明年春天"),
    ("vcsum", "会议讨论了发布计划", "会议讨论了新产品的发布计划。", "午饭很好吃"),
])
def test_zh_partial_answers_score_between(dataset, pred, right, worse):
    """jieba-based metrics: a partly right answer scores between wrong and exact."""
    exact = lb.score_sample(dataset, right, [right], None)
    partial = lb.score_sample(dataset, pred, [right], None)
    wrong = lb.score_sample(dataset, worse, [right], None)
    assert wrong < partial < exact


def test_zh_context_goes_through_the_mini_codec_pages_without_missing_glyphs(tmp_path):
    """The codec-reader runner renders the Chinese context with the shipped CJK font."""
    from codec import load_codec

    codec = load_codec("mini", random_init=True)
    runner = CodecReaderRunner(codec, answerer=Oracle(), max_visual_tokens=2 * codec.n,
                               page_separator="")
    sample = ZH_SAMPLES["multifieldqa_zh"][0]
    pages = runner.encoder.pages(sample["context"])
    assert pages and all(page.missing_glyphs == () for page in pages)
    assert "".join(page.text for page in pages) == sample["context"]

    class Reads(Oracle):
        """Answers only from the transcript it is handed (the random codec's read-out)."""

        def predict(self, prompt, *, dataset, max_new_tokens):
            return "竹子" if "竹" in prompt.context else "不知道"

    runner = CodecReaderRunner(codec, answerer=Reads(), max_visual_tokens=2 * codec.n)
    tasks = tmp_path / "data"
    tasks.mkdir()
    (tasks / "multifieldqa_zh.jsonl").write_text(json.dumps(
        official_record("multifieldqa_zh", 0, sample), ensure_ascii=False) + "\n", "utf-8")
    (res,) = run_tasks(runner, [tasks], tmp_path / "pred", progress=False)
    assert res.predicted == 1
    score = lb.score_directory(tmp_path / "pred", write=False)["multifieldqa_zh"]
    # The mini codec reads English only: its transcript of Chinese pages has no 竹.
    assert score == 0.0


def test_zh_files_run_end_to_end_through_a_vst_on_mini_zh(tmp_path):
    """`vst eval run --runner vst` on the zh sets: the Chinese prompt is rendered, encoded
    by `mini-zh`, continued by a (random, fresh) VST and read back by the same codec."""
    from codec import load_codec
    from eval.runners.common import run_tasks
    from eval.runners.vst_runner import VSTRunner
    from jobs.long_context import StudyConfig, fresh_vst_base

    codec = load_codec("mini-zh", mode="small")
    base = fresh_vst_base(StudyConfig(out=str(tmp_path), codec="mini-zh:small", vst_depth=1),
                          tmp_path, codec)
    runner = VSTRunner(base)  # the codec comes from the checkpoint: mini-zh, small
    assert runner.codec.name.startswith("mini-zh") and runner.codec.n == codec.n
    results = run_tasks(runner, [write_tasks(tmp_path / "tasks")], tmp_path / "pred",
                        progress=False)
    assert len(results) == 5
    assert sum(r.predicted for r in results) == sum(len(v) for v in ZH_SAMPLES.values())
    for r in results:
        recs = [json.loads(line) for line in r.path.read_text().splitlines()]
        assert all(isinstance(x["pred"], str) for x in recs)
