"""The one door through which anything builds a codec: `load_codec`.

    from codec import load_codec
    codec = load_codec("mini")                              # shipped weights, default mode
    codec = load_codec("mini:tiny")                         # name:mode shorthand
    codec = load_codec("deepseek-ocr2", path="/models/ocr2", device="cuda")
    codec = load_codec("my_pkg.codecs:build", options=["width=64"])   # outside the registry

Backends register a factory under a name (`register_codec`); the factory takes the
keyword arguments below that are set, plus the backend's own `options`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from codec.base import Codec
from data.errors import BadInput, MissingDependency

CodecFactory = Callable[..., Codec]
_REGISTRY: dict[str, CodecFactory] = {}
# Backends register themselves on import; importing them lazily keeps `import codec` light.
_BACKENDS = ("codec.mini", "codec.toy", "codec.deepseek_ocr2", "codec.deepseek_ocr")


def register_codec(name: str) -> Callable[[CodecFactory], CodecFactory]:
    def wrap(factory: CodecFactory) -> CodecFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_codecs() -> list[str]:
    _import_backends()
    return sorted(_REGISTRY)


def parse_codec_options(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """["k=v", ...] -> {k: v}; a value is JSON when it parses (true, 3, "x"), else text."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            out[item[0]] = item[1]
            continue
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise BadInput(f"a codec option needs KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def load_codec(
    spec: str | Codec = "mini",
    *,
    mode: str | None = None,
    path: str | None = None,
    options: Sequence[str] | Mapping[str, Any] | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    random_init: bool = False,
    **backend_kwargs: Any,
) -> Codec:
    """Build a frozen codec.

    spec: a registered name (`available_codecs()`), `name:mode`, or `package.module:factory`
    for a codec outside the registry; a codec object is returned as it is. `mode`,
    `path` (local weights), `device`, `trust_remote_code` (only when the user asked for it)
    and `random_init` reach the factory only when set; `options` (KEY=VALUE strings or a
    mapping, or plain keyword arguments) are the backend's own keyword arguments.
    """
    if not isinstance(spec, str):  # a codec already built (or a test's stand-in)
        return spec
    _import_backends()
    name, factory = _resolve(spec)
    if name != spec and mode is None:  # "name:mode"
        mode = spec.partition(":")[2]
    kw = {**parse_codec_options(options), **backend_kwargs}
    if mode is not None and mode != "default":
        kw["mode"] = mode
    if path is not None:
        kw["path"] = str(path)
    if device is not None and device != "auto":
        kw["device"] = device
    if trust_remote_code is not False:  # most factories do not take it: only when asked
        kw["trust_remote_code"] = trust_remote_code  # the backend checks that it is True
    if random_init:
        kw["random_init"] = True
    return factory(**kw)


def _resolve(spec: str) -> tuple[str, CodecFactory]:
    if spec in _REGISTRY:
        return spec, _REGISTRY[spec]
    head, sep, tail = spec.partition(":")
    if sep and head in _REGISTRY:
        return head, _REGISTRY[head]
    if sep and tail:
        try:
            module = importlib.import_module(head)
        except ModuleNotFoundError as err:
            raise BadInput(f"codec {spec!r}: cannot import module {head!r} ({err})") from err
        factory = getattr(module, tail, None)
        if not callable(factory):
            raise BadInput(f"codec {spec!r}: {head!r} has no callable {tail!r}")
        return spec, factory
    raise BadInput(f"unknown codec {spec!r}; available: {', '.join(sorted(_REGISTRY))} "
                   "(or name:mode, or package.module:factory)")


def _import_backends() -> None:
    for module in _BACKENDS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency, not an absent backend
                raise MissingDependency(f"codec backend {module} needs {err.name!r}, which is "
                                        "not installed", hint=f"pip install {err.name}") from err
