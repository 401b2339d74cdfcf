#!/usr/bin/env python3
"""The package's import graph against its declared levels: no circle, no upward import, no stage
importing another stage.

Every module of ``src/interp_playground`` is given a level by the first pattern of ``LEVELS`` that
matches its name (``*`` matches within one dotted part, ``**`` any rest). A module may import
modules of its own level or below. Stages (level ``stages``) are side by side: one stage (a
module, or a package with its submodules) never imports another. Every import statement counts,
inside functions too.

Lazy exports: a package whose ``__init__.py`` defines a module-level dict literal ``_EXPORTS``
(public name -> ``"sub.module"`` or ``"sub.module:attribute"``, relative to that package; leading
dots climb as in a relative import) loads the named submodule on first use. So
``from .judge import make_judge_backend`` counts as an import of the submodule that ``_EXPORTS``
names (``judge.setup``), followed through further ``_EXPORTS`` tables; an imported name that is
neither a submodule nor in ``_EXPORTS`` counts as an import of the package itself. Only
``from ... import`` statements are resolved this way, not attribute access after ``import``.

Usage: ``python tools/check_imports.py [SRC]``; prints each problem on one line and exits 1 when
there is one.
"""

from __future__ import annotations

import ast
import fnmatch
import sys
from pathlib import Path

PACKAGE = "interp_playground"

#: (level, module patterns), lowest level first.
LEVELS: list[tuple[str, list[str]]] = [
    ("values", ["_version", "_lazy", "errors", "io", "conditions", "settings", "settings.*", "rows", "rows.*", "rundir", "distributed",
                "questions", "chat", "tiny", "stats", "vector_names", "judge", "judge.scoring", "judge.prompts",
                "judge.identity"]),
    ("infrastructure", ["models", "steering", "data", "transforms", "vector_file", "activations", "extract", "engine", "engine.**",
                        "judge.backends", "judge.backends.**", "judge.cache", "judge.digits",
                        "judge.runner", "judge.batch", "judge.batch_files", "judge.api", "judge.agreement",
                        "judge.setup", "judge.testing", "judge.testing_batch", "measures", "measures_rows", "metrics",
                        "plot_style", "run_environment", "preflight"]),
    ("stages", ["stages", "stages.*"]),
    ("orchestration", ["pipeline", "outputs", "seed_api", "demo", "commands", "commands.**", "cli", "__main__", ""]),
]

#: Modules that form one stage together (the stage's name -> its modules' patterns); a stage not
#: listed is its module alone (named without the ``stages.`` prefix).
STAGES: dict[str, list[str]] = {
    "vectors": ["stages.vectors", "stages.vector_plots"],
    "plots": ["stages.plots", "stages.measure_plots"],
    "report": ["stages.report", "stages.report_table"],
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _matches(name: str, pattern: str) -> bool:
    if pattern.endswith(".**"):
        return name.startswith(pattern[:-3] + ".")
    return fnmatch.fnmatchcase(name, pattern) and name.count(".") == pattern.count(".")


def level_of(name: str) -> int | None:
    """The index of ``name``'s level in :data:`LEVELS` (name relative to the package), or None."""
    for i, (_, patterns) in enumerate(LEVELS):
        if any(_matches(name, p) for p in patterns):
            return i
    return None


def stage_of(name: str) -> str:
    for stage, patterns in STAGES.items():
        if any(_matches(name, p) for p in patterns):
            return stage
    return name.removeprefix("stages.")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except what stands under ``if TYPE_CHECKING:`` (imports for
    annotations only, never run)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and (getattr(test, "id", None) == "TYPE_CHECKING"
                                     or getattr(test, "attr", None) == "TYPE_CHECKING"):
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def exports_of(path: Path) -> dict[str, str]:
    """The module-level ``_EXPORTS`` dict literal of the ``__init__.py`` at ``path`` ({} if none)."""
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        if value is not None and any(getattr(t, "id", None) == "_EXPORTS" for t in targets):
            try:
                table = ast.literal_eval(value)
            except ValueError:
                return {}
            return table if isinstance(table, dict) else {}
    return {}


def _resolve(package: str, attr: str, known: set[str], exports: dict[str, dict[str, str]]) -> str:
    """The module that ``from <package> import <attr>`` loads (names relative to the top package):
    the submodule ``attr``, else the one ``package``'s ``_EXPORTS`` names (followed further), else
    ``package`` itself."""
    seen: set[tuple[str, str]] = set()
    while (package, attr) not in seen:
        seen.add((package, attr))
        sub = f"{package}.{attr}" if package else attr
        if sub in known:
            return sub
        entry = exports.get(package, {}).get(attr)
        if entry is None:
            return package
        module, _, renamed = entry.partition(":")
        rest = module.lstrip(".")
        up = max(len(module) - len(rest) - 1, 0)  # "sub" and ".sub": a child; "..sub": a sibling
        parts = package.split(".") if package else []
        package = ".".join(parts[: max(len(parts) - up, 0)] + [rest])
        attr = renamed or attr
    return package


def imports_of(path: Path, name: str, known: set[str],
               exports: dict[str, dict[str, str]] | None = None) -> dict[str, int]:
    """The package modules ``name`` imports -> the line of the first such import (names relative
    to the package, ``""`` being the package itself). ``exports``: each package's ``_EXPORTS``."""
    full = f"{PACKAGE}.{name}" if name else PACKAGE
    base = full.split(".") if path.name == "__init__.py" else full.split(".")[:-1]
    out: dict[str, int] = {}
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if prefix == PACKAGE or prefix.startswith(PACKAGE + "."):
                package = prefix[len(PACKAGE) + 1:]
                resolved = (_resolve(package, a.name, known, exports or {}) for a in node.names)
                targets = [f"{PACKAGE}.{r}" if r else PACKAGE for r in resolved]
            else:
                targets = []
        else:
            continue
        for target in targets:
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            target = target[len(PACKAGE) + 1:]
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target != name and not (name and target.startswith(name + ".")):
                out.setdefault(target, node.lineno)
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def problems(src: Path) -> list[str]:
    """Every violation of the declared layering in the package under ``src``, one line each."""
    root = src / PACKAGE
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    exports = {n: exports_of(p) for n, p in files.items() if p.name == "__init__.py"}
    out: list[str] = []
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = imports_of(path, name, known, exports)
        # a package's __init__ re-exporting its own children is not an upward arrow
        graph[name] = {t for t in edges if not (name == "" or t.startswith(name + "."))}
        here = level_of(name)
        if here is None:
            out.append(f"{path}: module {name or PACKAGE!r} has no level in tools/check_imports.py LEVELS")
            continue
        for target, line in sorted(edges.items()):
            there = level_of(target)
            if there is None or name == "" or target.startswith(name + "."):
                continue
            where = f"{path}:{line}"
            if there > here:
                out.append(f"{where}: {name} ({LEVELS[here][0]}) imports {target} ({LEVELS[there][0]}), a level above")
            elif there == here and LEVELS[here][0] == "stages" and stage_of(name) != stage_of(target):
                out.append(f"{where}: stage {stage_of(name)} imports stage {stage_of(target)} ({target})")
    for comp in circles(graph):
        out.append("import circle: " + " <-> ".join(comp))
    return out


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "src"
    found = problems(src)
    for line in found:
        print(line)
    if not found:
        print(f"imports: no circle, no upward import, no stage importing another ({src / PACKAGE})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
