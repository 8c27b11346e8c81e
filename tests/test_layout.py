"""The layout is the data's path: stage packages that import only from the stages before them.

source -> parsers -> classify -> state -> persistence -> exposition, with the read path's join
(pipeline), the configuration, and the wiring (app, cli) above them all. A newcomer finds the room
for a change from ``ls``; these tests keep it so.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from .corpus import REPO

PACKAGE = REPO / "bounce_exporter"
# rank of each top-level part of the package: imports go to the same or a lower rank only
RANKS = {
    "__init__": 0, "errors": 0, "event": 0, "checks": 0,
    "sources": 1, "parsers": 2, "classify": 3, "state": 4, "persistence": 5, "exposition": 6, "report": 6,
    "pipeline": 7, "config": 7, "app": 8, "oneshot": 8, "cli": 9, "__main__": 10,
}
STAGES = ("sources", "parsers", "classify", "state", "persistence", "exposition", "report")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    return {".".join(path.relative_to(REPO).with_suffix("").parts): path
            for path in sorted(PACKAGE.rglob("*.py"))}


def part(module: str) -> str:
    return module.split(".")[1]


def imports(path: Path) -> set[str]:
    """bounce_exporter modules imported by this file (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if ours(node.module):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if ours(a.name))
    return found


def ours(name: str) -> bool:
    """A module of the package (not the C extension bounce_exporter_fastscan, a module of its own)."""
    return name == "bounce_exporter" or name.startswith("bounce_exporter.")


def test_the_c_extension_is_imported_in_one_place():
    """parsers.accel chooses between the compiled scan and pure Python; nothing else imports it."""
    found = [module for module, path in modules().items()
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import)
             for alias in node.names if alias.name == "bounce_exporter_fastscan"]
    assert found == ["bounce_exporter.parsers.accel"]


def test_the_top_level_lists_the_stages_and_a_handful_of_modules():
    listing = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", ".")))
    packages = [name for name in listing if (PACKAGE / name).is_dir() and name != "data"]
    top_modules = [name for name in listing if name.endswith(".py")]
    assert packages == sorted(STAGES)
    assert len(top_modules) <= 8, top_modules  # the wiring: app (serve) and oneshot (parse, report, backfill)


def test_every_package_is_installed():
    """``pip install .`` installs the packages pyproject.toml lists: a package left out works in
    the source tree (where the tests run) and is missing once installed (``report`` was)."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(path.parent.relative_to(REPO).parts) for path in PACKAGE.rglob("__init__.py")}
    assert found - listed == set()


def test_imports_go_only_to_the_same_or_an_earlier_stage():
    upward = []
    for module, path in modules().items():
        for target in imports(path):
            if target == "bounce_exporter":
                continue  # __version__
            if RANKS[part(target)] > RANKS[part(module)]:
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_parsers_know_nothing_of_state_persistence_or_exposition():
    found = [f"{module} imports {target}" for module, path in modules().items()
             if part(module) == "parsers" for target in imports(path)
             if target != "bounce_exporter"
             and part(target) in ("state", "persistence", "exposition", "classify")]
    assert found == []


def test_only_the_exposition_knows_prometheus_client_and_http():
    outside = ("prometheus_client", "http", "socketserver", "ssl")
    found = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if part(module) != "exposition" and any(n.split(".")[0] in outside for n in names):
                found.append(f"{module} imports {names}")
    assert found == []


def test_there_is_no_import_cycle():
    graph = {module: {t for t in imports(path) if t in modules() or t + ".__init__" in modules()}
             for module, path in modules().items()}
    visiting, done, cycles = set(), set(), []

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(trail[trail.index(node):] + [node])
            return
        visiting.add(node)
        for target in sorted(graph.get(node, ())):
            visit(target, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


def test_no_module_over_500_lines_and_no_function_over_60():
    long_modules = {module: n for module, path in modules().items()
                    if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    long_functions = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{module}.{node.name}: {lines}")
    assert long_modules == {}
    assert long_functions == []


def test_no_private_re_internals():
    found = [module for module, path in modules().items()
             if "re._parser" in path.read_text() or "re._constants" in path.read_text()
             or "from re import _" in path.read_text()]
    assert found == []
