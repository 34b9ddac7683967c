"""The package's import graph, read from its source with `ast`, and the rules it must keep.

Every ``import`` counts: at module level, inside functions (lazy imports) and under
``if TYPE_CHECKING:``, because each of them is a dependency someone can follow. The
rules are the ones `docs/architecture.md` draws; `tests/test_architecture.py` holds
the package to them and shows, on synthetic trees, that each rule can fail.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Modules that import nothing of ours but errors: anyone may use them (stdlib, numpy at most).
FOUNDATION = frozenset({"errors", "version", "levels", "progress", "durable", "retry",
                        "signals", "datadir", "tokens", "pinning", "links"})

#: unit → the units it may import (besides itself and `FOUNDATION`). A unit is a
#: subpackage or a top-level module of the package; ``__init__`` is the root facade.
ALLOWED: Mapping[str, frozenset[str]] = {
    "__init__": frozenset({"config", "lab"}),
    "__main__": frozenset({"cli"}),
    "config": frozenset(),
    "protocol": frozenset(),
    "storage": frozenset(),
    "audio": frozenset(),
    "discovery": frozenset(),
    "hub": frozenset({"protocol"}),
    "server": frozenset({"hub", "storage", "audio", "discovery", "protocol", "config"}),
    "agent": frozenset({"protocol", "discovery", "config"}),
    "client": frozenset({"protocol"}),
    "widgets": frozenset({"protocol", "audio"}),
    "lab": frozenset({"client", "server", "audio", "widgets", "protocol", "config"}),
    "dashboard": frozenset({"lab", "server", "agent", "config"}),
    "cli": frozenset({"dashboard", "lab", "server", "agent", "discovery", "client",
                      "config"}),
    **{name: frozenset() for name in FOUNDATION},
}

#: Third-party (or stdlib) packages a unit must never import.
FORBIDDEN_EXTERNAL: Mapping[str, frozenset[str]] = {
    "hub": frozenset({"tornado", "sqlite3"}),
    "agent": frozenset({"tornado"}),
    "widgets": frozenset({"tornado", "sqlite3"}),
}

#: What the agent and everything it imports may use beyond the standard library: the
#: base install (`pip install vocalink-lab`) that fits a Raspberry Pi, plus [mic].
AGENT_INSTALL = frozenset({"websockets", "zeroconf", "ifaddr", "msgspec", "numpy",
                           "soundfile", "sounddevice"})


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's dependency: who imports what, where."""

    source: str  # the importing module, dotted
    target: str  # the imported module, dotted
    name: str | None  # the imported name for ``from x import name``
    file: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path, root: Path, package: str) -> tuple[str, bool]:
    """The dotted name of the module at ``path`` and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join([package, *parts]), is_package


def read_imports(root: Path, package: str | None = None) -> list[Import]:
    """Every import in the package whose directory is ``root`` (lazy and TYPE_CHECKING too)."""
    package = package or root.name
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        source, is_package = module_name(path, root, package)
        here = source.split(".") if is_package else source.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(Import(source, alias.name, None, path, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:
                    found.append(Import(source, target, alias.name, path, node.lineno))
    return found


def unit_of(module: str, package: str) -> str | None:
    """The unit (subpackage or top-level module) of a dotted name; None outside the package."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def target_unit(imp: Import, root: Path, package: str) -> str | None:
    """The unit an import reaches: ``from . import lab`` reaches ``lab``, not the root."""
    unit = unit_of(imp.target, package)
    if unit == "__init__" and imp.name is not None and (
            (root / f"{imp.name}.py").is_file() or (root / imp.name).is_dir()):
        return imp.name
    return unit


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(root: Path, package: str | None = None, *,
               allowed: Mapping[str, frozenset[str]] = ALLOWED,
               foundation: frozenset[str] = FOUNDATION,
               forbidden_external: Mapping[str, frozenset[str]] = FORBIDDEN_EXTERNAL,
               agent_install: frozenset[str] = AGENT_INSTALL) -> list[str]:
    """Every way the package at ``root`` breaks the import rules, one line each."""
    package = package or root.name
    imports = read_imports(root, package)
    problems: list[str] = []
    edges: dict[str, dict[str, Import]] = {}
    external: dict[str, dict[str, Import]] = {}
    units = {unit_of(module_name(p, root, package)[0], package) for p in root.rglob("*.py")}
    for unit in sorted(u for u in units if u is not None):
        if unit not in allowed:
            problems.append(f"{unit}: a unit the architecture does not place "
                            "(add it to docs/architecture.md and to ALLOWED)")
    for imp in imports:
        source = unit_of(imp.source, package)
        assert source is not None
        target = target_unit(imp, root, package)
        if target is None:
            top = imp.target.split(".")[0]
            external.setdefault(source, {}).setdefault(top, imp)
            if top in forbidden_external.get(source, ()):
                problems.append(f"{imp.where}: {source} imports {top}, which it must never do")
            continue
        if target == source:
            continue
        edges.setdefault(source, {}).setdefault(target, imp)
        if source in foundation and target != "errors":
            problems.append(f"{imp.where}: {source} is a foundation module and imports "
                            f"{target} (foundation modules import nothing of ours but errors)")
        elif target not in allowed.get(source, frozenset()) | foundation:
            problems.append(f"{imp.where}: {source} imports {target}, which the architecture "
                            f"does not allow ({source} → {_show(allowed.get(source))})")
        private = [part for part in imp.target.split(".")[1:] if _private(part)]
        if imp.name is not None and _private(imp.name):
            private.append(imp.name)
        if private:
            problems.append(f"{imp.where}: {source} imports the private {', '.join(private)} "
                            f"of {target}")
    problems += [f"import cycle between units: {' → '.join(cycle)}"
                 for cycle in cycles({s: set(t) for s, t in edges.items()})]
    reach = closure("agent", {s: set(t) for s, t in edges.items()})
    if "agent" in units:
        for unit in sorted(reach):
            for top, imp in sorted(external.get(unit, {}).items()):
                if top not in sys.stdlib_module_names and top not in agent_install:
                    problems.append(f"{imp.where}: {unit} (which the agent imports) needs "
                                    f"{top}, not in the agent's install")
    return problems


def _show(units: Iterable[str] | None) -> str:
    listed = sorted(units or ())
    return "{" + ", ".join(listed) + "}" if listed else "nothing but the foundation"


def closure(start: str, edges: Mapping[str, set[str]]) -> set[str]:
    """``start`` and every unit it reaches."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_cycle_through(sorted(component), edges))

    for node in sorted(set(edges) | {t for ts in edges.values() for t in ts}):
        if node not in index:
            visit(node)
    return found


def _cycle_through(component: list[str], edges: Mapping[str, set[str]]) -> list[str]:
    """The shortest cycle from the component's first unit back to itself: a → b → a."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(edges.get(node, set()) & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start, start]  # unreachable for a strongly connected component


def contract_literals(root: Path, values: Iterable[str], *, outside: str = "protocol",
                      exclude: Iterable[str] = ()) -> list[str]:
    """String literals equal to one of ``values`` in modules outside ``root/outside``.

    Parameters
    ----------
    root : Path
        The package's directory.
    values : iterable of str
        The contract's strings (event topics, job states).
    outside : str
        The subpackage where they are defined, which is not searched.
    exclude : iterable of str
        Files and folders (relative to ``root``) where the same words mean something else.
    """
    wanted = set(values)
    skipped = [root / outside, *(root / p for p in exclude)]
    found = []
    for path in sorted(root.rglob("*.py")):
        if any(path == s or s in path.parents for s in skipped):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and node.value in wanted:
                found.append(f"{path}:{node.lineno}: {node.value!r}")
    return found
