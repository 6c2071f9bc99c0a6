"""The layers of docs/CONTRACTS.md hold: imports point down the data flow, with no cycles.

data.errors (the errors a user can act on, imported by every layer) -> data.corpus ->
render -> codec -> data.store -> vst -> eval, and jobs on top. Every import counts,
function-local ones included (a cycle hidden inside a function is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["data.errors", "data.corpus", "render", "codec", "data.store", "vst", "eval", "jobs"]
PACKAGES = ("data", "render", "codec", "vst", "eval", "jobs")


def layer_of(module: str) -> str | None:
    for name in sorted(LAYERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    if module == "data.cli":  # the commands of both data layers, mounted by jobs
        return "data.store"
    return None


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules a file imports (the longest known prefix of each imported name)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for k in range(len(parts), 0, -1):
                if ".".join(parts[:k]) in known:
                    found.add(".".join(parts[:k]))
                    break
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for src, targets in graph().items():
        for dst in targets:
            a, b = layer_of(src), layer_of(dst)
            if a and b and LAYERS.index(b) > LAYERS.index(a):
                upward.append(f"{src} ({a}) imports {dst} ({b})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles_between_modules():
    g = graph()
    # a package's __init__ re-exporting its own modules is not a cycle of the design
    g = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in g.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path):
    """The two checks can fail: an eval module imported by vst is upward, a->b->a a cycle."""
    assert layer_of("eval.metrics") == "eval" and layer_of("vst.train") == "vst"
    assert LAYERS.index(layer_of("eval.metrics")) > LAYERS.index(layer_of("vst.train"))
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from b import g\n")
    b.write_text("import a\n")
    assert imports_of(a, {"a", "b"}) == {"b"} and imports_of(b, {"a", "b"}) == {"a"}
