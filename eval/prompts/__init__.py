"""Prompt templates and per-dataset settings, stored as data (see README.md for sources)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

PROMPTS_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def load(name: str) -> Any:
    """Parse `eval/prompts/<name>.json` once; callers must not mutate the result."""
    with open(PROMPTS_DIR / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)
