"""The errors a user can act on: the one set of types every layer raises on purpose.

    from data.errors import BadInput, MissingPath
    raise MissingPath(f"corpus path does not exist: {path}", hint="check --corpus")

`vst` (jobs/errors.py) prints any `UserError` as one line, `error: <what> (<what to do>)`,
and exits with status 2, like a usage error; every other exception is a bug and keeps its
traceback (status 1). The type decides, never the message: a mistake the user can fix is
raised as one of these types, so the command line can tell it from a bug.

Each type that stands for a built-in error also subclasses it (`BadInput` is a
`ValueError`, `MissingPath` a `FileNotFoundError`), so code and tests that catch the
built-in go on working. This module sits below every layer (docs/CONTRACTS.md): it imports
nothing from the project, and every package may import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional


class UserError(Exception):
    """A mistake the user can fix: a bad path, option or input, a corrupt or mismatched
    store or checkpoint, a missing optional dependency.

    `hint` says what to do; `str()` shows it after the message, in parentheses.
    """

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.hint = hint  # kept in __dict__: it survives pickling (Ray workers, subprocesses)

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} ({self.hint})" if self.hint else message


class BadInput(UserError, ValueError):
    """An option, spec or input that cannot be used: an unknown name, a value out of range,
    an input with nothing in it."""


class MissingPath(UserError, FileNotFoundError):
    """A path the user gave (or a default one) that does not exist."""


class BadStore(UserError):
    """A visual-token store that is missing, corrupt, or does not match what is asked of it."""


class BadCheckpoint(UserError, ValueError):
    """A checkpoint that is corrupt, or of the wrong kind for the command."""


class MissingDependency(UserError):
    """An optional dependency (a package, a system library, a browser) that is not installed."""


def existing_path(path: str | Path, what: str, hint: Optional[str] = None) -> Path:
    """`path` as a Path when it exists, else `MissingPath` naming `what` it was meant to be."""
    path = Path(path)
    if not path.exists():
        raise MissingPath(f"{what} does not exist: {path}", hint=hint)
    return path
