"""A typer command derived from a config dataclass: the dataclass is the single source of
flags, defaults and help, so nothing is re-typed beside it.

    @dataclass
    class RunConfig:
        out: str = "runs/x"  # run directory
        steps: int = field(default=10, metadata={"help": "optimizer steps"})

    app.command("run")(config_command(RunConfig, lambda cfg: do(cfg)))

A field's help is its `metadata["help"]`, else the comment on its line, continued by comment
lines right below it that are indented deeper than the field (as tyro reads comments).
`metadata={"cli": False}` keeps a field off the command line (e.g. a test hook). A config
class with a `recipe` field and a `from_recipe(name, **overrides)` classmethod gets
recipes: the flags given explicitly win, the recipe fills the rest.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from functools import lru_cache
from typing import Annotated, Any, Callable, Optional

import typer


def _annotation(tp: Any) -> Any:
    """typer-friendly annotation of a field type (`X | None` -> Optional[X])."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", ())) and len(args) == 1:
        return Optional[args[0]]
    return tp


@lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, str]:
    """{field: help} from the comments beside a dataclass's fields in its source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (built at run time): no comment help
        return {}
    comments: dict[int, tuple[int, str]] = {}  # line -> (column, text)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.start[1], tok.string.lstrip("#").strip())
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        parts = [comments[n][1] for n in range(node.lineno, node.end_lineno + 1)
                 if n in comments and comments[n][0] > node.col_offset]
        n = node.end_lineno + 1
        while n in comments and comments[n][0] > node.col_offset and \
                not lines[n - 1][: comments[n][0]].strip():  # a comment-only, deeper line
            parts.append(comments[n][1])
            n += 1
        if parts:
            out[node.target.id] = " ".join(parts)
    return out


def _help(cls: type, f: dataclasses.Field) -> str:
    if "help" in f.metadata:
        return f.metadata["help"]
    for klass in cls.__mro__:  # a subclass may inherit documented fields
        if dataclasses.is_dataclass(klass) and f.name in field_comments(klass):
            return field_comments(klass)[f.name]
    return ""


def config_command(cls: type, run: Callable[[Any], Any], doc: str | None = None) -> Callable:
    """A function whose signature is `cls`'s fields; calling it builds `cls` and runs it."""
    hints = typing.get_type_hints(cls)
    cli_fields = [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY,
                                annotation=typer.Context)]
    for f in cli_fields:
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
            default = default if default else None
        else:
            default = inspect.Parameter.empty
        # metadata["flags"]: flag names other than --field-name (a singular name for a
        # repeatable option, a "--yes/--no" pair) that users already type.
        option = typer.Option(*f.metadata.get("flags", ()), help=_help(cls, f))
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
            annotation=Annotated[_annotation(hints[f.name]), option]))
    recipes = "recipe" in hints and hasattr(cls, "from_recipe")

    def command(ctx: typer.Context, **kwargs: Any) -> Any:
        kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
        kwargs = {k: ([] if v is None and _is_list(hints[k]) else v) for k, v in kwargs.items()}
        if recipes and kwargs.get("recipe"):
            given = {k: v for k, v in kwargs.items() if k != "recipe" and _given(ctx, k)}
            return run(cls.from_recipe(kwargs["recipe"], **given))
        return run(cls(**kwargs))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc or cls.__doc__
    command.__name__ = cls.__name__
    return command


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether a flag was typed (or set by environment), not left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _is_list(tp: Any) -> bool:
    return typing.get_origin(_annotation(tp)) is list or list in typing.get_args(tp)
