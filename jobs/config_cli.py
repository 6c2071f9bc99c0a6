"""A typer command derived from a config dataclass: the dataclass is the single source of
flags, defaults and help (`field(metadata={"help": ...})`), so nothing is re-typed;
`metadata={"flags": ("--name",)}` names a flag other than --field-name.

    @dataclass
    class RunConfig:
        out: str = field(default="runs/x", metadata={"help": "run directory"})
        steps: int = 10

    app.command("run")(config_command(RunConfig, lambda cfg: do(cfg)))
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Annotated, Any, Callable, Optional

import typer


def _annotation(tp: Any) -> Any:
    """typer-friendly annotation of a field type (`X | None` -> Optional[X])."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", ())) and len(args) == 1:
        return Optional[args[0]]
    return tp


def config_command(cls: type, run: Callable[[Any], Any], doc: str | None = None) -> Callable:
    """A function whose signature is `cls`'s fields; calling it builds `cls` and runs it."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
            default = default if default else None
        else:
            default = inspect.Parameter.empty
        # metadata["flags"]: flag names other than --field-name (a singular name for a
        # repeatable option, a "--yes/--no" pair) that users already type.
        option = typer.Option(*f.metadata.get("flags", ()), help=f.metadata.get("help", ""))
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
            annotation=Annotated[_annotation(hints[f.name]), option]))

    def command(**kwargs: Any) -> Any:
        kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
        kwargs = {k: ([] if v is None and _is_list(hints[k]) else v) for k, v in kwargs.items()}
        return run(cls(**kwargs))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc or cls.__doc__
    command.__name__ = cls.__name__
    return command


def _is_list(tp: Any) -> bool:
    return typing.get_origin(_annotation(tp)) is list or list in typing.get_args(tp)
