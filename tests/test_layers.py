"""Layers: every import inside the package points down (or sideways), never up.

Each module's source is parsed (ast), so imports inside functions (the lazy imports that keep
the CLI fast) count as much as top-level ones, and so does a string that is exactly a module path
(``"omicstwin.tl.de"`` in a lazy-export table for ``importlib.import_module``). The order,
lowest first, is DESIGN.md's:

    errors, schemas, scores, _stats, _logging, _optional -> io -> datasets -> pp -> parallel -> tl
    -> get, pl -> bench -> store -> report -> pipeline -> service, cli

Same-level imports are allowed. A top-level name that is not listed fails the test, so a new
subpackage has to be placed in the order before it can be imported from anywhere.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "omicstwin"

# lowest first; names are the first component under omicstwin (module or subpackage)
LAYERS: list[set[str]] = [
    {"errors", "schemas", "scores", "_stats", "_logging", "_optional"},
    {"io"},
    {"datasets"},
    {"pp"},
    {"parallel"},
    {"tl"},
    {"get", "pl"},
    {"bench"},
    {"store"},
    {"report"},
    {"pipeline"},  # omicstwin/pipeline.py or the omicstwin/pipeline/ package
    {"service", "cli", "cli_service", "demo"},  # cli.py or a future cli/ package
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}
MODULE_PATH = re.compile(r"omicstwin(\.[A-Za-z_][A-Za-z0-9_]*)+")  # lazy-export tables
ROOT = "__init__"  # omicstwin/__init__.py: version and lazy attribute access, above everything


def _component(path: Path) -> str:
    """The layer name of a module file: ``omicstwin/tl/de.py`` -> ``tl``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ["omicstwin", *parts]


def _imported(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every omicstwin import in a file, at any depth."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module == "omicstwin":  # from omicstwin import tl, __version__
                found += [(node.lineno, f"omicstwin.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _names_a_module(node.value):  # importlib.import_module("omicstwin.x.y")
                found.append((node.lineno, node.value))
    return [(line, name) for line, name in found if name.split(".")[0] == "omicstwin"]


def _names_a_module(text: str) -> bool:
    """Whether a string is the dotted path of a module of the package (not a logger name)."""
    if not MODULE_PATH.fullmatch(text):
        return False
    path = PACKAGE.joinpath(*text.split(".")[1:])
    return path.is_dir() or path.with_suffix(".py").is_file()


def _target(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_every_component_has_a_layer():
    components = {_component(p) for p in MODULES} - {ROOT}
    unplaced = sorted(components - set(LEVEL))
    assert not unplaced, f"place {unplaced} in LAYERS (tests/test_layers.py) and DESIGN.md"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path):
    source = _component(path)
    if source == ROOT:
        return
    upward = []
    for line, name in _imported(path):
        target = _target(name)
        if target is None or target == "__version__":
            continue  # the package itself (version metadata only)
        assert target in LEVEL, f"{path}:{line} imports {name}: place '{target}' in LAYERS"
        if LEVEL[target] > LEVEL[source]:
            upward.append(f"line {line}: {name} ({target} is above {source})")
    assert not upward, f"{path.relative_to(PACKAGE.parent)} imports upward: " + "; ".join(upward)


def test_the_checker_sees_lazy_and_relative_imports():
    code = (
        "from . import de\n"
        "from .grn import infer_grn\n"
        "def f():\n"
        "    from omicstwin.report import build_report\n"
        "    import omicstwin.store.db\n"
        "    from omicstwin import pipeline\n"
        "_EXPORTS = {'build_report': 'omicstwin.report.build', 'x': 'omicstwin.audited'}\n"
    )
    found = {name for _, name in _imported(PACKAGE / "tl" / "probe.py", code)}
    assert {"omicstwin.tl", "omicstwin.tl.grn", "omicstwin.report"} <= found
    assert {"omicstwin.store.db", "omicstwin.pipeline", "omicstwin.report.build"} <= found
    assert "omicstwin.audited" not in found  # a string that names no module (an event name)
