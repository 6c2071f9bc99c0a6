"""The one error path of the `vst` command tree, and the errors that come back from Ray.

An expected error (a `data.errors.UserError`, or a usage error of the command line) prints
one line on stderr and exits with status 2:

    error: corpus path does not exist: /data/x.jsonl (check --corpus)

Any other exception is a bug: it keeps its traceback and status 1. `vst --debug ...` or
VST_DEBUG=1 shows the traceback of an expected error too (before its line; still status 2).

The handling sits in the root click command (`ReportsErrors`), so it covers every
subcommand, with or without a process around it (`CliRunner` tests see the same lines and
status as a shell does). Errors raised in Ray tasks and actors arrive wrapped in Ray's
own types; `remote_cause` unwraps them, so a worker's `UserError` reaches the driver as
itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Any, Iterator, NoReturn, Optional

import typer
from typer import Context
# typer vendors click (typer==0.29 is pinned): its commands raise these classes, not click's.
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperCommand, TyperGroup

from data.errors import UserError

DEBUG_ENV = "VST_DEBUG"


def debugging(ctx: Optional[Context] = None) -> bool:
    """Whether to show tracebacks of expected errors: --debug on the root command, or
    VST_DEBUG=1 in the environment."""
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        return True
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def error_line(err: BaseException) -> str:
    """`error: <what> (<what to do>)` of an expected error, on one line."""
    if isinstance(err, UsageError):
        command = err.ctx.command_path if err.ctx is not None else "vst"
        text = f"{err.format_message()} (see '{command} --help')"
    else:
        text = str(err)
    return "error: " + " ".join(text.split())  # one line, whatever the message held


@contextlib.contextmanager
def reported(ctx: Context) -> Iterator[None]:
    """Run a command's parsing or body; an expected error becomes its line and status 2."""
    try:
        yield
    except NoArgsIsHelpError:
        raise  # `vst corpus` alone: click prints the group's help
    except (UsageError, UserError) as err:
        if debugging(ctx):
            traceback.print_exception(err)
        typer.echo(error_line(err), err=True)
        raise typer.Exit(2) from None


class ReportsErrors:
    """Mixin for a root click command: its parsing and its invocation (which runs every
    subcommand below it) go through `reported`."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        with reported(ctx):
            return super().parse_args(ctx, args)  # type: ignore[misc]

    def invoke(self, ctx: Context) -> Any:
        with reported(ctx):
            return super().invoke(ctx)  # type: ignore[misc]


class ReportingGroup(ReportsErrors, TyperGroup):
    """The `vst` tree's root: `typer.Typer(cls=ReportingGroup)`."""


class ReportingCommand(ReportsErrors, TyperCommand):
    """A one-command app (`vst-train`, `python -m jobs.convert`): `app.command(cls=...)`."""


def debug_option(debug: bool = typer.Option(
        False, "--debug", help=f"Show the traceback of any error (also: {DEBUG_ENV}=1).")) -> None:
    """The root command's callback: --debug is read back from the context by `debugging`."""


def raise_remote(err: BaseException) -> NoReturn:
    """Re-raise an error that came back from Ray: a user's mistake as itself (one line at
    the command line), anything else as Ray's wrapper, whose message holds the remote
    traceback of the bug."""
    cause = remote_cause(err)
    if isinstance(cause, UserError):
        raise cause from None
    raise err


def remote_cause(err: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, unwrapped from Ray's `RayTaskError`, which
    holds the original (pickled with its type and fields) as `.cause`.

    Unwrapping matters: the wrapper is an instance of the cause's class too, but its message
    is the remote traceback."""
    exceptions = sys.modules.get("ray.exceptions")  # not imported: no Ray error can exist
    while (exceptions is not None and isinstance(err, exceptions.RayTaskError)
           and err.cause is not None):
        err = err.cause
    return err
