"""The package's import structure: no circles inside a subpackage, the demo on top.

The graph is built from the source with :mod:`ast`, so it sees every import: at module
level, inside functions (a function-local import that only dodges a circle is still a
circle) and under ``if TYPE_CHECKING:``. ``from pkg import name`` counts as importing the
submodule ``pkg.name`` when that is a module, else the module ``pkg``'s ``__init__`` takes
``name`` from (a re-export is followed to where the name lives), else ``pkg``; relative
imports are resolved against the importing module. A package's own ``__init__``
re-exporting its submodules is not a circle with them: edges from a package ``__init__``
into its own subtree are left out.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import conceptlens

PACKAGE = "conceptlens"
ROOT = Path(conceptlens.__file__).resolve().parent
# the layers allowed to know about the demo package
DEMO = f"{PACKAGE}.demo"
DEMO_AWARE = (f"{PACKAGE}.cli", DEMO)


def _module_files() -> dict[str, Path]:
    """Map every module name of the package to its source file."""
    modules: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[:3] == [PACKAGE, "demo", "weights"]:  # data: the demo model's files
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def _resolve(module: str, level: int, target: str | None) -> str:
    """Resolve a (possibly relative) import of ``target`` made inside ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".") if module in PACKAGES else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _owner(name: str) -> str | None:
    """The longest module of the package that ``name`` is or lies inside."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"))


@cache
def _reexports(package: str) -> dict[str, str]:
    """Name -> module it comes from, for every name a package's ``__init__`` imports."""
    names: dict[str, str] = {}
    for node in ast.walk(_tree(package)):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(package, node.level, node.module)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                names[alias.asname or alias.name] = sub if sub in MODULES else source
    return names


def _target(source: str, name: str) -> str | None:
    """The module ``from source import name`` depends on: the submodule ``source.name``, else
    the module a package's ``__init__`` takes ``name`` from (followed through re-exports),
    else ``source`` itself."""
    sub = f"{source}.{name}"
    if sub in MODULES:
        return sub
    seen: set[str] = set()
    while source in PACKAGES and source not in seen:
        seen.add(source)
        origin = _reexports(source).get(name)
        if origin is None or _owner(origin) is None:
            break
        if f"{origin}.{name}" in MODULES:
            return f"{origin}.{name}"
        source = _owner(origin)
    return _owner(source)


def _imports(module: str) -> Iterator[str]:
    """Every module of the package that ``module`` imports, anywhere in its source."""
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found = _owner(alias.name)
                    if found:
                        yield found
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node.level, node.module)
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                found = _target(source, alias.name)
                if found:
                    yield found


def _graph() -> dict[str, set[str]]:
    """The import graph, without a package ``__init__``'s edges into its own subtree."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        edges = set(_imports(module)) - {module}
        if module in PACKAGES:
            edges = {e for e in edges if not e.startswith(module + ".")}
        graph[module] = edges
    return graph


def _subpackage(module: str) -> str:
    """The direct subpackage of the package a module belongs to (``conceptlens.vocab``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, component) for component in components]


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete cycle through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return component  # pragma: no cover - a component always holds a cycle


def test_the_walker_sees_relative_function_local_and_from_imports() -> None:
    graph = _graph()
    # `from .configuration_conceptclip import ConceptCLIPConfig` (relative, module level)
    assert ("conceptlens.models.reference.configuration_conceptclip"
            in graph["conceptlens.models.reference.modeling_conceptclip"])
    # `from conceptlens.models.hub import hub_error` (absolute, module level)
    assert "conceptlens.models.hub" in graph["conceptlens.models._hf_common"]
    # an import inside a function counts too
    assert "conceptlens.models.base" in graph["conceptlens.explain.report.workflows"]
    # the CLI imports the demo package
    assert any(e.startswith(DEMO) for e in graph["conceptlens.cli.demo"])
    # `from conceptlens.vocab import scorer`-style imports resolve to the submodule
    assert _resolve("conceptlens.vocab.scorer", 1, None) == "conceptlens.vocab"
    assert _resolve("conceptlens.vocab", 1, "scorer") == "conceptlens.vocab.scorer"
    assert _resolve("conceptlens.vocab.formats.obo", 2, "concept") == "conceptlens.vocab.concept"
    # a name re-exported by a package's __init__ counts as its defining module
    assert _target("conceptlens.models", "load_backbone") == "conceptlens.models.factory"
    assert _target("conceptlens.models", "registry") == "conceptlens.models.registry"
    assert _target("conceptlens", "__version__") == "conceptlens"


def test_the_circle_finder_reports_a_planted_circle() -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert _circles(graph) == [["p.a", "p.b", "p.c", "p.a"]]


def test_the_demo_check_tells_names_from_messages() -> None:
    assert _names_the_demo("conceptlens.demo") and _names_the_demo("conceptlens.demo.weights_io")
    assert not _names_the_demo("conceptlens.demo.DEMO_WEIGHTS_DIR or load_backbone('demo')")
    assert not _names_the_demo("conceptlens.demonstration")
    assert not _below_the_demo("conceptlens.cli.demo") and not _below_the_demo("conceptlens")
    assert _below_the_demo("conceptlens.models.factory")


def test_no_import_circle_inside_a_subpackage() -> None:
    graph = _graph()
    within = {
        module: {e for e in edges if _subpackage(e) == _subpackage(module)}
        for module, edges in graph.items()
    }
    circles = _circles(within)
    assert not circles, "import circles inside a package:\n" + "\n".join(
        " -> ".join(circle) for circle in circles
    )


def _below_the_demo(module: str) -> bool:
    return module != PACKAGE and not module.startswith(DEMO_AWARE)


def _names_the_demo(value: object) -> bool:
    """Whether ``value`` is the dotted name of the demo package or one of its modules."""
    return isinstance(value, str) and re.fullmatch(rf"{re.escape(DEMO)}(\.\w+)*", value) is not None


def test_nothing_below_cli_and_demo_imports_the_demo() -> None:
    graph = _graph()
    offenders = sorted(
        f"{module} -> {target}"
        for module, edges in graph.items()
        if _below_the_demo(module)
        for target in edges
        if _names_the_demo(target)
    )
    assert not offenders, "modules below cli/demo import the demo:\n" + "\n".join(offenders)


def test_nothing_below_cli_and_demo_reaches_the_demo_by_name() -> None:
    """``importlib.import_module("conceptlens.demo")``, ``resources.files("conceptlens.demo")``
    and the like: a call given the demo package's dotted name (messages do not count)."""
    offenders = sorted(
        f"{module}:{node.lineno}"
        for module in MODULES
        if _below_the_demo(module)
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.Call)
        and any(isinstance(arg, ast.Constant) and _names_the_demo(arg.value)
                for arg in [*node.args, *(k.value for k in node.keywords)])
    )
    assert not offenders, "modules below cli/demo name the demo package:\n" + "\n".join(offenders)


# the layers, lowest first: a subpackage may import its own layer and the ones below
LAYERS = [
    {f"{PACKAGE}.errors", f"{PACKAGE}._deprecation", f"{PACKAGE}._jsonable", f"{PACKAGE}._io",
     f"{PACKAGE}._html", PACKAGE},
    {f"{PACKAGE}.models"},
    {f"{PACKAGE}.vocab"},
    {f"{PACKAGE}.concepts"},
    {f"{PACKAGE}.explain"},
    {f"{PACKAGE}.train"},
    {f"{PACKAGE}.demo", f"{PACKAGE}.cli", f"{PACKAGE}.__main__"},
]


def _layer(module: str) -> int:
    sub = _subpackage(module)
    for rank, members in enumerate(LAYERS):
        if sub in members:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add {sub} to LAYERS")


def test_layers_import_only_downwards() -> None:
    """models <- vocab <- concepts <- explain <- train <- demo / cli; the shared base
    (errors, deprecation helpers, safe I/O, the report document model) below them all.
    ``conceptlens/__init__`` itself may import anything (it is the public face)."""
    offenders = sorted(
        f"{module} -> {target}"
        for module, edges in _graph().items()
        if module != PACKAGE
        for target in edges
        if _subpackage(target) != PACKAGE and _layer(target) > _layer(module)
    )
    assert not offenders, "imports pointing up the layers:\n" + "\n".join(offenders)
