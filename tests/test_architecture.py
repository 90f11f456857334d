"""The dependency direction of docs/ARCHITECTURE.md, held by reading every module's imports.

    alloy (CLI, pipeline)  ->  distill  ->  training  ->  policies, envs

Every `import` / `from ... import` statement of the five code packages counts, wherever it is: at module level,
inside a function (a lazy import runs as soon as the function is called) or inside `try:`. So does
`importlib.import_module("<constant>")`. Imports under `if TYPE_CHECKING:` are allowed and ignored by both checks:
they never run, so they neither load the other package nor close a cycle at run time.

Checked: (1) no package imports one it may not (`training` never imports `distill`, `envs` and `policies` never
import each other, nothing below `alloy` imports `alloy`); (2) no import cycle between modules, within a package or
across packages. Edges go to the module an import names (`from a.b import c` is an edge to `a.b.c` when that is a
module, else to `a.b`); the package `__init__`s that Python runs on the way are not edges, so a package's
`__init__` importing its own submodules is not a cycle, while a submodule importing names from its own package's
`__init__` (which imports it back) is. benchmarks/ and tests/ are outside the rule. (3) Every third-party module
the code packages import comes from a distribution declared in pyproject.toml.

`check_imports(graph)` takes any graph (module -> modules it imports), so the tests below also plant wrong imports
and cycles and check that they are reported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> the other top-level packages it may import (docs/ARCHITECTURE.md, "Packages and dependency direction")
ALLOWED: dict[str, frozenset[str]] = {
    "alloy": frozenset({"distill", "training", "policies", "envs"}),
    "distill": frozenset({"training", "policies", "envs"}),
    "training": frozenset({"policies", "envs"}),
    "policies": frozenset(),
    "envs": frozenset(),
}
PACKAGES = tuple(ALLOWED)


# ----------------------------------------------------------------------------- reading imports


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def repo_modules(root: Path = REPO) -> dict[str, Path]:
    """Module name -> file for every .py file of the code packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path, root)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except those under the body of an `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the else branch does run
            stack.append(node.test)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute dotted names a module's source imports at run time (lazy imports included, TYPE_CHECKING not).

    `from a.b import c` yields `a.b.c`; `resolve` turns it into `a.b` when `c` is a name rather than a module."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(p for p in base_parts + [node.module or ""] if p)
            else:
                base = node.module or ""
            names.update(base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def resolve(names: set[str], modules: set[str]) -> set[str]:
    """The repo modules `names` refer to: each name if it is a module, else its longest module prefix.
    Third-party and standard-library names drop out."""
    out = set()
    for name in names:
        if name.split(".")[0] not in ALLOWED:
            continue
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """module -> repo modules it imports (run-time imports only), for every module of the code packages."""
    files = repo_modules(root)
    graph = {}
    for name, path in files.items():
        names = imported_names(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
        graph[name] = resolve(names, set(files)) - {name}
    return graph


# ----------------------------------------------------------------------------- the checks


def _top(module: str) -> str:
    return module.split(".")[0]


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module in sorted(graph):
        src = _top(module)
        for target in sorted(graph[module]):
            dst = _top(target)
            if dst != src and dst in ALLOWED and dst not in ALLOWED.get(src, frozenset()):
                problems.append(f"{module} imports {target}: {src} may not import {dst} "
                                f"(docs/ARCHITECTURE.md: alloy -> distill -> training -> policies, envs)")
    return problems


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the first module of a strongly connected component (shortest, by BFS)."""
    members, start = set(component), component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, node, start]
                if child in members and child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    return component  # not reached: a component of two or more modules always has a cycle through each member


def cycles(graph: dict[str, set[str]]) -> list[str]:
    return [f"import cycle: {' -> '.join(_cycle_in(c, graph))}" for c in _strongly_connected(graph)]


def check_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every problem of an import graph (module -> modules it imports): wrong-direction imports, then cycles."""
    return direction_violations(graph) + cycles(graph)


# ----------------------------------------------------------------------------- tests


def test_the_repo_follows_the_dependency_direction_and_has_no_import_cycle():
    graph = import_graph()
    assert {"alloy.cli", "distill.consistency", "training.evaluation.policy_loader", "envs.nav.env"} <= set(graph)
    problems = check_imports(graph)
    assert not problems, "\n".join(problems)


def test_a_planted_wrong_direction_import_is_reported():
    graph = {"training.x": {"distill.y", "policies.z"}, "distill.y": {"training.x"}, "policies.z": set(),
             "envs.a": {"policies.z"}, "policies.b": {"alloy.cli"}, "alloy.cli": {"distill.y"}}
    problems = direction_violations(graph)
    assert any(p.startswith("training.x imports distill.y: training may not import distill") for p in problems)
    assert any(p.startswith("envs.a imports policies.z: envs may not import policies") for p in problems)
    assert any(p.startswith("policies.b imports alloy.cli: policies may not import alloy") for p in problems)
    assert len(problems) == 3  # distill -> training, training -> policies and alloy -> distill are allowed


def test_a_planted_cycle_is_reported_within_and_across_packages():
    within = {"envs.nav.env": {"envs.nav.teacher"}, "envs.nav.teacher": {"envs.nav.planner"},
              "envs.nav.planner": {"envs.nav.env"}, "envs.nav.layout": set()}
    assert cycles(within) == ["import cycle: envs.nav.env -> envs.nav.teacher -> envs.nav.planner -> envs.nav.env"]
    across = {"training.a": {"policies.b"}, "policies.b": {"training.a"}, "policies.c": {"policies.b"}}
    problems = check_imports(across)
    assert "import cycle: policies.b -> training.a -> policies.b" in problems
    assert any(p.startswith("policies.b imports training.a") for p in problems)
    assert cycles({"envs": {"envs.nav"}, "envs.nav": {"envs.nav.env"}, "envs.nav.env": {"envs.errors"},
                   "envs.errors": set()}) == []  # a package importing its own submodules is no cycle


def test_lazy_imports_count_and_type_checking_imports_do_not():
    source = '''
from __future__ import annotations
import importlib
from typing import TYPE_CHECKING
from .layout import Layout
if TYPE_CHECKING:
    from distill.consistency import Student
else:
    import policies.policy

def load(path):
    from distill.consistency import load_student
    try:
        import envs.nav.teacher as teacher
    except ImportError:
        teacher = None
    return importlib.import_module("alloy.cli")
'''
    names = imported_names(source, "training.evaluation.policy_loader")
    modules = {"training.evaluation.layout", "distill.consistency", "policies.policy", "envs.nav.teacher",
               "alloy.cli", "distill", "envs", "envs.nav"}
    edges = resolve(names, modules)
    assert edges == {"training.evaluation.layout", "distill.consistency", "policies.policy", "envs.nav.teacher",
                     "alloy.cli"}
    assert "distill.consistency.Student" not in names  # the TYPE_CHECKING import is not read
    problems = direction_violations({"training.evaluation.policy_loader": edges})
    assert len(problems) == 2 and all("may not import distill" in p or "may not import alloy" in p for p in problems)
    # relative imports resolve against the package, also from an __init__
    known = {"envs", "envs.nav", "envs.nav.teacher", "envs.errors"}
    assert resolve(imported_names("from .teacher import X", "envs.nav", is_package=True), known) == {"envs.nav.teacher"}
    assert resolve(imported_names("from ..errors import EnvError", "envs.nav.env"), known) == {"envs.errors"}
    names = imported_names("from envs import nav, errors", "envs.registry")
    assert resolve(names, known) == {"envs.nav", "envs.errors"}


def _third_party_imports(root: Path = REPO) -> dict[str, set[str]]:
    """Top-level third-party module name -> modules of the code packages that import it (lazy imports included)."""
    import sys

    found: dict[str, set[str]] = {}
    for name, path in repo_modules(root).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in ALLOWED and top != "__future__":
                    found.setdefault(top, set()).add(name)
    return found


def test_every_third_party_import_is_a_declared_dependency():
    import importlib.metadata
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    def norm(dist: str) -> str:
        return re.sub(r"[-_.]+", "-", dist).lower()

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {norm(re.match(r"[A-Za-z0-9_.-]+", req).group(0)) for req in project["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    missing = []
    for top, users in sorted(_third_party_imports().items()):
        dists = {norm(d) for d in providers.get(top, [])}
        if not dists & declared:
            missing.append(f"{top} (imported by {', '.join(sorted(users)[:3])}; provided by "
                           f"{', '.join(sorted(dists)) or 'nothing installed'}) is not in pyproject.toml dependencies")
    assert not missing, "\n".join(missing)
