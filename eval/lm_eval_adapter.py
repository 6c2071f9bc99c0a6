"""The project's models as an lm-evaluation-harness `LM` (registered as "vst").

Every request goes through a runner from `eval.runners`:

- `generate_until` -> `runner.generate(context, max_new_tokens=max_gen_toks, stop=until)`;
  for the VST this is text -> render -> encode -> VST -> decode -> text.
- `loglikelihood` -> `runner.loglikelihood(context, continuation)`: the model's own
  likelihood for text models; for the VST, -NLL of the continuation under the frozen
  codec decoder given the VST-predicted tokens after the rendered context; for a
  transcribing codec reader, the answerer's likelihood given the transcript.
- `loglikelihood_rolling` -> `runner.loglikelihood_rolling(text)` (text models only).

Importing this module imports lm_eval (heavy); nothing imports it eagerly. Usage:

    from eval.lm_eval_adapter import evaluate_local
    evaluate_local(["ruler_niah_single_1"], include_path="eval/tasks",
                   runner="hf", model="/models/qwen2.5-0.5b")

or `vst eval lm-eval --tasks ... --runner ... --model ...`. With lm-eval's own CLI the
model is only found once this module is imported (e.g. `python -c` wrapper).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from eval.runners.common import Runner

DEFAULT_MAX_GEN_TOKS = 256


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


@register_model("vst")
class VSTLM(LM):
    """model_args: runner=hf|vst-text|codec|vst, model=PATH, codec=NAME, codec_path=PATH,
    answerer=PATH, max_length=INT, max_visual_tokens=INT, chat=BOOL, device=cpu,
    max_gen_toks=INT. A ready `Runner` object can be passed as `runner_obj`."""

    def __init__(
        self,
        runner: str = "vst",
        model: str | None = None,
        pretrained: str | None = None,  # lm-eval's usual spelling of `model`
        codec: str | None = None,
        codec_path: str | None = None,
        answerer: str | None = None,
        max_length: int | str | None = None,
        max_visual_tokens: int | str | None = None,
        chat: bool | str | None = None,
        device: str | None = "cpu",
        dtype: str = "auto",
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        runner_obj: Runner | None = None,
        batch_size: Any = None,  # accepted for lm-eval compatibility; requests run one by one
        **_: Any,
    ) -> None:
        super().__init__()
        if runner_obj is None:
            from eval.runners.factory import make_runner

            runner_obj = make_runner(
                runner, model or pretrained, codec=codec, codec_path=codec_path, answerer=answerer,
                max_length=None if max_length is None else int(max_length),
                max_visual_tokens=None if max_visual_tokens is None else int(max_visual_tokens),
                chat=_bool(chat), device=device or "cpu", dtype=dtype,
            )
        self.runner = runner_obj
        self.max_gen_toks = int(max_gen_toks)

    @property
    def tokenizer_name(self) -> str:  # used by lm-eval's request cache keys
        return self.runner.name.replace("/", "__")

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in tqdm(requests, desc=f"{self.runner.name} generate", disable=disable_tqdm):
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            if isinstance(until, str):
                until = [until]
            n = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            text = self.runner.generate(context, max_new_tokens=n, stop=until)
            out.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return out

    def loglikelihood(
        self, requests: list[Any], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        out = []
        for req in tqdm(requests, desc=f"{self.runner.name} loglikelihood", disable=disable_tqdm):
            context, continuation = req.args
            res = self.runner.loglikelihood(context, continuation)
            out.append(res)
            self.cache_hook.add_partial("loglikelihood", (context, continuation), res)
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in tqdm(requests, desc=f"{self.runner.name} rolling", disable=disable_tqdm):
            (text,) = req.args
            out.append(self.runner.loglikelihood_rolling(text))
        return out


def evaluate_local(
    tasks: Sequence[str],
    *,
    include_path: str | Path | Sequence[str | Path] | None = None,
    include_defaults: bool = False,
    limit: int | float | None = None,
    runner_obj: Runner | None = None,
    log_samples: bool = False,
    **model_args: Any,
) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` on local task YAMLs with a project model; returns results.

    include_defaults=False indexes only `include_path` (fast, offline-friendly).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    if isinstance(include_path, (str, Path)):
        include_path = [include_path]
    paths = [str(p) for p in include_path or []]
    tm = TaskManager(include_path=paths or None, include_defaults=include_defaults)
    lm = VSTLM(runner_obj=runner_obj, **model_args)
    return lm_eval.simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=tm, limit=limit, log_samples=log_samples,
        bootstrap_iters=0,
    )
