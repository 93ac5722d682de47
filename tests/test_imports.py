"""The shape of the code, read from its imports (AST, nothing is imported): no cycles, no gradio in
the core, and only the CLI package of `adapters` reaches into `evals`.

Every `import` and `from ... import` counts, at module level or inside a function: a lazy import
only moves a cycle to run time. `from pkg import name` points at the submodule `pkg.name` when
there is one, else at `pkg`. Importing `pkg.sub` is an edge to `pkg.sub` only, not to `pkg`'s
`__init__`, which Python also runs: a package that re-exports its modules would otherwise be a
cycle with each of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("adapters", "evals", "playground", "app.py")
CORE = ("adapters", "evals")  # never import gradio


def module_files(root: Path, sources=SOURCES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `sources`."""
    found = {}
    for source in sources:
        path = root / source
        for file in [path] if path.suffix == ".py" else sorted(path.rglob("*.py")):
            parts = list(file.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = file
    return found


def _imported(node: ast.AST, name: str, is_package: bool) -> list[str]:
    """The dotted names an import statement in module `name` refers to (submodules when they are)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = name if is_package else name.rpartition(".")[0]
    if node.level:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(root: Path, sources=SOURCES) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module -> project modules it imports, module -> top-level names of everything it imports)."""
    files = module_files(root, sources)
    graph, tops = {}, {}
    for name, file in files.items():
        is_package = file.name == "__init__.py"
        edges, names = set(), set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = _imported(node, name, is_package)
            names.update(t.split(".")[0] for t in (targets if isinstance(node, ast.Import) else targets[:1]))
            for target in targets:
                # the module itself, or the project module it is an attribute of
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name], tops[name] = edges, names
    return graph, tops


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, first == last) per strongly connected group of modules."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_within(graph, group) for group in groups]


def _path_within(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    start = min(group)
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in group)
        back = [w for w in nxt if w == start]
        if back and len(path) > 1:
            return path + [start]
        step = next((w for w in nxt if w not in seen), None) or nxt[0]
        if step in seen:
            return path[path.index(step):] + [step]
        path.append(step)
        seen.add(step)


def violations(root: Path, sources=SOURCES) -> list[str]:
    graph, tops = import_graph(root, sources)
    found = [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    for name, names in sorted(tops.items()):
        if name.split(".")[0] in CORE and "gradio" in names:
            found.append(f"{name} imports gradio (the core never does)")
        in_cli = name == "adapters.cli" or name.startswith("adapters.cli.")
        if name.split(".")[0] == "adapters" and not in_cli and "evals" in names:
            found.append(f"{name} imports evals (only adapters/cli/ may)")
    return found


def test_the_project_has_no_import_cycle_no_gradio_in_the_core_and_no_evals_below_the_cli():
    graph, _ = import_graph(ROOT)
    assert {"adapters.cli.main", "adapters.runfolder", "evals.votes", "playground.tab_compare", "app"} <= set(graph)
    assert "adapters.cli.common" in graph["adapters.cli.data"] and "adapters.runfolder" in graph["evals.votes"]
    found = violations(ROOT)
    assert not found, "\n".join(found)


def test_the_checks_catch_a_cycle_a_core_gradio_import_and_evals_below_the_cli(tmp_path):
    def write(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    write("adapters/__init__.py", "")
    write("adapters/a.py", "from .b import thing\n")
    write("adapters/b.py", "def thing():\n    from adapters import c\n")  # a lazy import still counts
    write("adapters/c.py", "import adapters.a\nimport os, gradio as gr\n")
    write("adapters/cli/__init__.py", "")
    write("adapters/cli/main.py", "from evals import votes\n")  # allowed: the CLI package
    write("adapters/cli_d.py", "from evals.votes import VoteStore\n")  # beside the CLI package, not in it
    write("evals/__init__.py", "")
    write("evals/votes.py", "import os, sqlite3\n")
    write("playground/__init__.py", "import gradio\n")  # allowed: the UI
    write("app.py", "from playground import x\n")
    found = violations(tmp_path)
    assert found == [
        "import cycle: adapters.a -> adapters.b -> adapters.c -> adapters.a",
        "adapters.c imports gradio (the core never does)",
        "adapters.cli_d imports evals (only adapters/cli/ may)",
    ], found
    write("evals/votes.py", "from adapters.cli import main\n")  # the module main, through its package
    assert "import cycle: adapters.cli.main -> evals.votes -> adapters.cli.main" in violations(tmp_path)


def test_reading_runs_and_votes_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, adapters.runfolder, adapters.runs, evals.votes; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def long_functions(folder: Path, limit: int = 60) -> list[str]:
    """Functions longer than `limit` lines under `folder` (the web app's handlers stay short)."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(folder.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_of_the_web_app_is_over_60_lines(tmp_path):
    assert long_functions(ROOT / "playground") == []
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "tab.py").write_text("def build():\n" + "    x = 1\n" * 60)
    assert long_functions(tmp_path / "ui") == ["ui/tab.py:1 build (61 lines)"]
