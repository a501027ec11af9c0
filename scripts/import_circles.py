"""Report evertrain modules that import each other in a circle, lazy imports included.

import-linter's layers contract (``lint-imports``, configured in pyproject.toml) keeps
the parts in order but does not look inside a part, where two modules may still import
each other. This finds every strongly connected group of more than one module in the
import graph that grimp builds (it counts imports inside functions too). The package
root is left out as an importer: it only re-exports, lazily.

Run it with the package to check on the path; exit 0 when there is no circle, 1 with
one line per circle otherwise::

    PYTHONPATH=src python scripts/import_circles.py
"""

from __future__ import annotations

import sys

import grimp

PACKAGE = "evertrain"


def import_graph(package: str = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules of the package it imports."""
    graph = grimp.build_graph(package, cache_dir=None)
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules if m != package}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def main() -> int:
    found = circles(import_graph())
    for group in found:
        print(f"modules importing each other in a circle: {', '.join(group)}")
    print(f"{len(found)} circle(s) of imports in {PACKAGE}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
