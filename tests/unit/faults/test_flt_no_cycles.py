"""No import cycle among the ``faultdrill.faults`` modules, function-local and ``TYPE_CHECKING`` imports included.

import-linter's layers keep the packages apart; inside ``faults`` nothing did, and three cycles had grown
(base/ledger/owned/registry, the Kubernetes dispatch, the proxy and its control). grimp sees every import
statement — at module level, inside a function, under ``if TYPE_CHECKING:`` — so a cycle "hidden" in a function
still fails here. It fails, naming the modules, if for instance ``faults/base.py`` imports
``faultdrill.faults.ledger`` again (inside ``FaultContext.create``, say: ledger imports base), or
``faults/proxy.py`` imports ``faultdrill.faults.proxy_control``; the second test shows the check finds such a loop.
"""

from __future__ import annotations

import grimp

PACKAGE = "faultdrill.faults"


def cycles(graph: grimp.ImportGraph, prefix: str = PACKAGE) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself) under ``prefix``."""
    modules = sorted(m for m in graph.modules if m == prefix or m.startswith(prefix + "."))
    edges = {m: sorted(d for d in graph.find_modules_directly_imported_by(m) if d in modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1 or module in edges[module]:
                found.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_flt_no_import_cycle_in_faults() -> None:
    graph = grimp.build_graph("faultdrill", cache_dir=None)  # TYPE_CHECKING imports included (grimp's default)
    assert "faultdrill.faults.base" in graph.modules and "faultdrill.faults.kube.actions" in graph.modules
    assert cycles(graph) == []


def test_flt_the_cycle_check_finds_a_function_local_loop() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("faultdrill.faults.base", "faultdrill.faults.records"),
                               ("faultdrill.faults.ledger", "faultdrill.faults.base"),
                               ("faultdrill.faults.base", "faultdrill.faults.ledger"),  # e.g. inside a function
                               ("faultdrill.experiments.x", "faultdrill.faults.base")]:  # fmt: skip
        graph.add_import(importer=importer, imported=imported)
    assert cycles(graph) == [["faultdrill.faults.base", "faultdrill.faults.ledger"]]
