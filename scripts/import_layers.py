"""The import structure of amsr: files, import edges (module level and lazy, inside functions), cycles, and
edges that go up the layers method → export → runtime → tools → CLI.

    python scripts/import_layers.py            # summary
    python scripts/import_layers.py --edges    # and every upward edge and cycle, by file

Read from the source with ``ast`` (nothing is imported), so it runs on any checkout. The layer of a module is
the first prefix of ``LAYERS`` it matches; ``amsr.export``/``amsr.runtime``/``amsr.plugins`` are the top-level
``export/``, ``runtime/`` and ``plugins/`` folders (pyproject's package-dir).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"amsr": ROOT / "amsr", "amsr.export": ROOT / "export", "amsr.runtime": ROOT / "runtime",
           "amsr.plugins": ROOT / "plugins"}
# Lowest first; a module may import its own layer and those below it. The plugins build on export's graphs.
# The method has layers of its own ("method/…"): the base, images, the mask, the networks, the sparse layers,
# the surgery and models that assemble them (top-level ``amsr``), and the row programs built from the result.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("method/core", ("amsr.core",)),
    ("method/io", ("amsr.io",)),
    ("method/masking", ("amsr.masking",)),
    ("method/zoo", ("amsr.zoo",)),
    ("method/sparse", ("amsr.sparse",)),
    ("method/assembly", ("amsr",)),
    ("method/rows", ("amsr.rows",)),
    ("export", ("amsr.export", "amsr.plugins")),
    ("runtime", ("amsr.runtime",)),
    ("tools", ("amsr.tools",)),
    ("cli", ("amsr.cli",)),
)


def modules() -> dict[str, Path]:
    """Module name → file, for every ``.py`` of the package (``__init__`` names its package)."""
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for f in sorted(folder.rglob("*.py")):
            rel = f.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *rel[:-1])) if rel[-1] == "__init__" else ".".join((package, *rel))
            found.setdefault(name, f)  # amsr.export lives in export/, not amsr/export/
    return found


def layer_of(module: str) -> int:
    best, depth = 0, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > depth:
                best, depth = i, len(p)
    return best


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported amsr module, line) for every import in the file, resolved to the longest known module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                yield t, node.lineno
                break


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_of(module: str, known: dict[str, Path]) -> str:
    """The package a module belongs to (itself for a package's ``__init__``)."""
    return module if known[module].name == "__init__.py" else module.rpartition(".")[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", action="store_true", help="list every upward edge and every cycle")
    a = ap.parse_args()
    known = modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    upward: list[tuple[str, str, int]] = []
    for m, f in known.items():
        for t, line in imports(m, f, known):
            graph[m].add(t)
            if layer_of(t) > layer_of(m):
                upward.append((m, t, line))
    packages: dict[str, set[str]] = {}
    for m, targets in graph.items():
        pm = package_of(m, known)
        packages.setdefault(pm, set()).update(package_of(t, known) for t in targets if package_of(t, known) != pm)
    per_layer = dict.fromkeys(dict.fromkeys(name.split("/")[0] for name, _ in LAYERS), 0)
    for m in known:
        top = LAYERS[layer_of(m)][0].split("/")[0]
        per_layer[top] += 1
    module_cycles, package_cycles = cycles(graph), cycles(packages)
    print(f"files {len(known)} ({', '.join(f'{k} {v}' for k, v in per_layer.items())}); "
          f"packages {len(packages)}; import edges {sum(map(len, graph.values()))}; "
          f"module cycles {len(module_cycles)}; package cycles {len(package_cycles)}; upward edges {len(upward)}")
    flat = {p: sum(1 for m in known if package_of(m, known) == p and known[m].name != "__init__.py")
            for p in packages}
    print("modules per package: " + ", ".join(f"{p} {n}" for p, n in sorted(flat.items())))
    if a.edges:
        for m, t, line in upward:
            print(f"up: {known[m].relative_to(ROOT)}:{line} {m} → {t} ({LAYERS[layer_of(m)][0]} → "
                  f"{LAYERS[layer_of(t)][0]})")
        for c in module_cycles:
            print("module cycle: " + " ↔ ".join(c))
        for c in package_cycles:
            print("package cycle: " + " ↔ ".join(c))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
