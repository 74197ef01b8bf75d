"""The README's and docs/'s Python examples run as written, and the results files they cite exist.

Every ```python block of README.md and docs/*.md is compiled; each one is also executed, in a
fresh namespace and an empty working folder, unless the line just before its fence is a
``<!-- not run: REASON -->`` comment (a sketch with names of the reader's own, or one that
needs data files).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\s*$")
NOT_RUN = re.compile(r"^<!-- not run: (.+\S) -->$")


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, source, reason_not_run)`` of each ```python block of ``path`` (1-based line of
    the fence; ``reason_not_run`` None for a block to execute)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for n, line in enumerate(lines):
        if not FENCE.match(line):
            continue
        end = next((m for m in range(n + 1, len(lines)) if lines[m].startswith("```")), None)
        if end is None:
            raise ValueError(f"{path.name}:{n + 1}: a ```python block without its closing fence")
        marker = NOT_RUN.match(lines[n - 1]) if n else None
        blocks.append((n + 1, "\n".join(lines[n + 1:end]) + "\n",
                       marker.group(1) if marker else None))
    return blocks


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(path, *block) for path in DOCS for block in python_blocks(path)]


def test_the_docs_have_examples_to_run():
    """The collection finds the examples (a broken pattern would pass every test below)."""
    assert sum(reason is None for *_, reason in BLOCKS) >= 6
    assert any(path.name == "README.md" and reason is None for path, *_, reason in BLOCKS)


@pytest.mark.parametrize(("path", "line", "source", "reason"), BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, *_ in BLOCKS])
def test_example_runs(path, line, source, reason, tmp_path, monkeypatch):
    code = compile(source, f"{path.relative_to(ROOT)}:{line}", "exec")
    if reason is not None:
        return  # compiled only: SyntaxError above is the check
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs" / "img").mkdir(parents=True)  # where docs/mru.md draws its figures
    exec(code, {"__name__": "__docs_example__"})


def test_blocks_are_found_with_their_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n<!-- not run: needs data -->\n```python\n"
                    "load()\n```\n```bash\nls\n```\n")
    assert python_blocks(page) == [(2, "x = 1\n", None), (6, "load()\n", "needs data")]
    page.write_text("```python\nx = 1\n")
    with pytest.raises(ValueError, match="page.md:1: a ```python block without its closing"):
        python_blocks(page)


CITED = re.compile(r"results/[A-Za-z0-9_.{},\-]+?\.(?:md|json|png)")


def cited_results(text: str) -> list[str]:
    """The ``results/...`` files that ``text`` names, a brace pattern expanded into every file it
    stands for (``results/a_{x,y}.md``: ``results/a_x.md``, ``results/a_y.md``)."""
    def expand(name: str) -> list[str]:
        group = re.search(r"\{([^{}]*)\}", name)
        if group is None:
            return [name]
        return [full for alt in group.group(1).split(",")
                for full in expand(name[:group.start()] + alt + name[group.end():])]
    return [name for match in CITED.finditer(text) for name in expand(match.group(0))]


def test_cited_results_expand_their_brace_patterns():
    assert cited_results("see `results/a_{x,y}_{1,2}.md` and results/b.json.") == [
        "results/a_x_1.md", "results/a_x_2.md", "results/a_y_1.md", "results/a_y_2.md",
        "results/b.json"]


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_results_file_the_docs_cite_exists(path):
    missing = [name for name in cited_results(path.read_text(encoding="utf-8"))
               if not (ROOT / name).is_file()]
    assert not missing, f"{path.name} cites results files that are not there: {missing}"
