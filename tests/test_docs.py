"""The docs hold together: README.md stays a short page for a newcomer whose links all resolve, and
docs/architecture.md names exactly the source files.

The architecture page's rule: every `*.py` and `*.sh` file outside tests/ that git tracks, or would
track (a new file it does not ignore), has a line of its own on the page, by its exact path (app.py,
adapters/, evals/, playground/, benchmarks/, scripts/); and every path the page names exists, tests
and data included (these may be named by a pattern, such as `tests/test_data_*.py`). A line of the
page's file tree is a path, then what the file is for, inside a fenced block.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
README_MAX_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def _local_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def _broken_links(page: Path) -> list[str]:
    broken = []
    for target in _local_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no such heading)")
    return broken


def test_the_readme_is_short_and_keeps_the_two_quickstart_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    text = "\n".join(lines)
    assert "make run" in text and "make test" in text  # CI runs the README's test command
    assert "docs/compare-tab.png" in text


def test_every_link_of_the_readme_and_the_docs_resolves():
    broken = {page.name: _broken_links(page) for page in [README, *sorted(DOCS.glob("*.md"))]}
    assert not {name: b for name, b in broken.items() if b}


def test_the_readme_leads_to_every_docs_page():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in _local_links(README)}
    orphans = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link to: {orphans}"


def _repository_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout: {e}")
    return sorted({f for f in out.splitlines() if (ROOT / f).is_file()})


def _is_source(path: str) -> bool:
    return path.endswith((".py", ".sh")) and not path.startswith("tests/")


def _architecture_paths() -> list[str]:
    paths, fenced = [], False
    for line in ARCHITECTURE.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced and line.strip():
            paths.append(line.split()[0])
    return paths


def test_the_architecture_page_lists_exactly_the_source_files():
    listed = _architecture_paths()
    files = _repository_files()
    sources = {f for f in files if _is_source(f)}
    exact = [p for p in listed if "*" not in p]
    assert len(sources) > 100 and len(exact) == len(set(exact)), "a path listed twice"
    missing = sorted(sources - set(exact))
    assert not missing, f"source files without a line on docs/architecture.md: {missing}"
    gone = [p for p in listed if not any(fnmatch.fnmatchcase(f, p) for f in files)]
    assert not gone, f"docs/architecture.md names files that are not there: {gone}"
