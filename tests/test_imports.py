"""The shape of the code, read from its imports (AST, nothing is imported): no cycles, no gradio in
the core or the CLI, `adapters/` by stage (a stage imports only earlier stages and the shared modules
at its root), `evals/` above `adapters/`, and the CLI (`loraeq/`) and the web app (`playground/`)
above both, never imported by them.

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
SOURCES = ("adapters", "evals", "loraeq", "playground", "app.py")
CORE = ("adapters", "evals", "loraeq")  # never import gradio
# The stages of `adapters/`, in data-flow order: a module imports only its own and earlier stages,
# and the shared modules at the package's root (which import no stage).
STAGES = ("files", "base", "data", "shape", "train", "share", "infer")
# Which top-level packages each may import (besides itself): the layers above the core. The web app
# may run the CLI in its own process (on ZeroGPU, where a subprocess gets no GPU).
LAYERS = {"adapters": set(), "evals": {"adapters"}, "loraeq": {"adapters", "evals"},
          "playground": {"adapters", "evals", "loraeq"}, "app": {"playground", "adapters"}}


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


def stage_of(name: str) -> int | None:
    """A module's place in `adapters/`'s order: -1 for the shared root modules, None outside."""
    parts = name.split(".")
    if parts[0] != "adapters":
        return None
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES):
        return STAGES.index(parts[1]) if parts[1] in STAGES else None
    return -1


def violations(root: Path, sources=SOURCES) -> list[str]:
    graph, tops = import_graph(root, sources)
    found = [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    for name, names in sorted(tops.items()):
        top = name.split(".")[0]
        if top in CORE and "gradio" in names:
            found.append(f"{name} imports gradio (the core never does)")
        allowed = LAYERS.get(top, set())
        for other in sorted(names & set(LAYERS) - allowed - {top}):
            found.append(f"{name} imports {other} (a layer above it)")
    for name, edges in sorted(graph.items()):
        mine = stage_of(name)
        for target in sorted(edges):
            theirs = stage_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                where = STAGES[theirs]
                found.append(f"{name} imports {target} (stage {where} comes after "
                             f"{STAGES[mine] if mine >= 0 else 'the shared root'})")
    return found


def test_the_project_has_no_import_cycle_no_gradio_in_the_core_and_its_stages_in_order():
    graph, _ = import_graph(ROOT)
    assert {"loraeq.main", "adapters.train.runfolder", "evals.votes", "playground.tab_compare", "app"} <= set(graph)
    assert "loraeq.common" in graph["loraeq.data"] and "adapters.train.runfolder" in graph["evals.votes"]
    assert {stage_of(n) for n in graph} >= set(range(-1, len(STAGES))) | {None}  # every stage has modules
    loose = [n for n in graph if stage_of(n) == -1 and n != "adapters" and not n.startswith("adapters.data")]
    assert len(loose) <= 5, loose  # a few shared modules at the root, the rest by stage
    found = violations(ROOT)
    assert not found, "\n".join(found)


def test_the_checks_catch_a_cycle_gradio_a_layer_upside_down_and_a_stage_out_of_order(tmp_path):
    def write(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    write("adapters/__init__.py", "")
    write("adapters/errors.py", "")
    write("adapters/base/__init__.py", "")
    write("adapters/base/a.py", "from .b import thing\nfrom adapters.errors import E\n")
    write("adapters/base/b.py", "def thing():\n    from adapters.base import c\n")  # a lazy import still counts
    write("adapters/base/c.py", "import adapters.base.a\nimport os, gradio as gr\n")
    write("adapters/train/__init__.py", "")
    write("adapters/train/run.py", "from adapters.base.a import thing\n")  # an earlier stage: fine
    write("adapters/shape/__init__.py", "")
    write("adapters/shape/eq.py", "from adapters.train.run import thing\n")  # a later stage
    write("adapters/limits.py", "from adapters.shape import eq\n")  # the root imports no stage
    write("loraeq/__init__.py", "")
    write("loraeq/main.py", "from evals import votes\nfrom adapters.train import run\n")  # the CLI: above both
    write("adapters/data/__init__.py", "from evals.votes import VoteStore\n")  # the core reaching up
    write("evals/__init__.py", "")
    write("evals/votes.py", "import os, sqlite3\n")
    write("playground/__init__.py", "import gradio\n")  # allowed: the UI
    write("app.py", "from playground import x\n")
    found = violations(tmp_path)
    assert found == [
        "import cycle: adapters.base.a -> adapters.base.b -> adapters.base.c -> adapters.base.a",
        "adapters.base.c imports gradio (the core never does)",
        "adapters.data imports evals (a layer above it)",
        "adapters.limits imports adapters.shape (stage shape comes after the shared root)",
        "adapters.limits imports adapters.shape.eq (stage shape comes after the shared root)",
        "adapters.shape.eq imports adapters.train.run (stage train comes after shape)",
    ], found
    write("evals/votes.py", "from loraeq import main\n")  # the module main, through its package
    found = violations(tmp_path)
    assert "evals.votes imports loraeq (a layer above it)" in found
    assert "import cycle: evals.votes -> loraeq.main -> evals.votes" in found


def test_reading_runs_and_votes_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, adapters.train.runfolder, adapters.train.runs, evals.votes; "
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
