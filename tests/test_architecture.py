"""The package's shape: every public module declares its face, and no modules import each other.

Import circles are read from the source (imports inside functions included, ``TYPE_CHECKING``
blocks left out), so a circle hidden behind a function-level import is caught too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import medveil

PACKAGE = Path(medveil.__file__).parent
MODULES = sorted(
    ".".join(("medveil", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
        ".__init__"
    )
    for path in PACKAGE.rglob("*.py")
)


def _path(module: str) -> Path:
    parts = module.split(".")[1:]
    file = PACKAGE.joinpath(*parts).with_suffix(".py")
    return file if file.is_file() else PACKAGE.joinpath(*parts, "__init__.py")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str, module: str, known: set[str], *, is_package: bool = False) -> set[str]:
    """The medveil modules that ``source`` (the text of ``module``) imports, at any depth."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base in known:
                found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    found.discard(module)
    return found


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> the modules it imports), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (circle := walk(nxt)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (circle := walk(start)):
            return circle
    return None


def test_the_import_reader_sees_function_level_imports_and_circles() -> None:
    known = {"medveil.a", "medveil.b", "medveil.c", "medveil.pkg", "medveil.pkg.d"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import medveil.b\n"
        "from medveil.pkg import d\n"
        "if TYPE_CHECKING:\n"
        "    from medveil.c import Thing\n"
        "def f():\n"
        "    from medveil.c import other\n"
    )
    assert imports_of(source, "medveil.a", known) == {
        "medveil.b", "medveil.c", "medveil.pkg", "medveil.pkg.d"
    }
    assert imports_of("from . import d\n", "medveil.pkg", known, is_package=True) == {
        "medveil.pkg.d"
    }
    assert imports_of("from .a import x\n", "medveil.b", known) == {"medveil.a"}
    circle = {"medveil.a": {"medveil.b"}, "medveil.b": {"medveil.c"}, "medveil.c": {"medveil.a"}}
    assert find_circle(circle) == ["medveil.a", "medveil.b", "medveil.c", "medveil.a"]
    assert find_circle({"medveil.a": {"medveil.b"}, "medveil.b": set()}) is None


def test_no_module_imports_one_that_imports_it_back() -> None:
    known = set(MODULES)
    graph = {
        m: imports_of(_path(m).read_text(), m, known, is_package=_path(m).name == "__init__.py")
        for m in MODULES
    }
    assert find_circle(graph) is None


@pytest.mark.parametrize("name", [m for m in MODULES if not m.endswith("__main__")])
def test_every_module_declares_all_and_defines_each_name(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__ list"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__)


MAX_LINES = 450


def _lines(module: str) -> int:
    return len(_path(module).read_text().splitlines())


def test_no_module_is_longer_than_the_limit() -> None:
    too_long = {m: _lines(m) for m in MODULES if _lines(m) > MAX_LINES}
    assert too_long == {}
