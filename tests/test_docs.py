"""The README and docs/ stay true to the code: every module is in the layout, no stale names, no dead links.

Fast and offline: reads files only, imports nothing of the app.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DEVELOPMENT = DOCS / "development.md"
PACKAGES = ("backend", "ui", "api")
README_LIMIT = 20_000  # bytes: what a newcomer reads; the details live in docs/
FIRST_SCREEN = 80  # lines, front matter included
INSTALL = "pip install -r requirements.txt"

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ALTERNATIVES = "|".join(PACKAGES)
MODULE_PATH = re.compile(rf"^(?:{ALTERNATIVES})/(?:[\w.-]+/)*[\w.-]+\.py$")
DOTTED = re.compile(rf"(?<![\w./-])((?:{ALTERNATIVES})(?:\.\w+)+)")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def without_code_blocks(text: str) -> str:
    """The Markdown a reader sees as prose: no fenced blocks, no YAML front matter (its ``#`` lines are comments)."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        text = text[end + 5 :] if end >= 0 else text
    return FENCE.sub("", text)


def code_spans(text: str) -> list[str]:
    return [match.group(2).strip() for match in CODE_SPAN.finditer(without_code_blocks(text))]


def is_trivial_init(path: Path) -> bool:
    """An ``__init__.py`` that holds nothing but (at most) a docstring: its folder is the package."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return not body


def project_modules() -> set[str]:
    """Every Python file of backend/, ui/ and api/, as a path from the project root (trivial __init__.py left out)."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "__pycache__" in path.parts or is_trivial_init(path):
                continue
            found.add(path.relative_to(ROOT).as_posix())
    return found


def named_module_paths(text: str) -> set[str]:
    return {span for span in code_spans(text) if MODULE_PATH.match(span)}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation dropped, spaces → hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in without_code_blocks(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", without_code_blocks(path.read_text(encoding="utf-8")))
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto:
    ]


# --- (a) and (b): the layout in docs/development.md --------------------------------------------------------------


def test_every_module_is_named_in_the_layout():
    named = named_module_paths(DEVELOPMENT.read_text(encoding="utf-8"))
    missing = sorted(project_modules() - named)
    assert not missing, (
        "docs/development.md's layout does not name these modules; add each, in backticks, with a few words on "
        f"what it does: {missing}"
    )


def test_every_module_the_layout_names_exists():
    named = named_module_paths(DEVELOPMENT.read_text(encoding="utf-8"))
    stale = sorted(name for name in named if not (ROOT / name).is_file())
    assert not stale, f"docs/development.md names modules that do not exist (moved or removed?): {stale}"


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_stale_module_names_in_the_docs(doc):
    """Module paths (``backend/x/y.py``) and dotted names (``python -m backend.serving.logins``) still exist."""
    text = doc.read_text(encoding="utf-8")
    stale = sorted(name for name in named_module_paths(text) if not (ROOT / name).is_file())
    for span in code_spans(text) + [line for line in text.splitlines() if "python -m " in line]:
        for dotted in DOTTED.findall(span):
            if not resolves(dotted):
                stale.append(dotted)
    assert not stale, f"{doc.relative_to(ROOT)} names modules that do not exist: {sorted(set(stale))}"


def resolves(dotted: str) -> bool:
    """``a.b.c`` is a module or package, or a name defined at the top of one (``a.b`` with ``c`` in it)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:end])
        module = base.with_suffix(".py") if not base.is_dir() else base / "__init__.py"
        if not module.is_file():
            continue
        rest = parts[end:]
        if not rest:
            return True
        if len(rest) > 1:
            return False
        tree = ast.parse(module.read_text(encoding="utf-8"))
        return rest[0] in top_level_names(tree)
    return False


def top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


# --- (c): the README a newcomer reads ----------------------------------------------------------------------------


def test_readme_is_short():
    size = README.stat().st_size
    assert size < README_LIMIT, f"README.md is {size} bytes; keep it under {README_LIMIT} and move details to docs/"


def test_readme_first_screen_has_install_run_and_test():
    first = "\n".join(README.read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN])
    commands = (INSTALL, "python app.py", "python app.py --offline", "pytest", "pytest -m slow", "pytest -m browser")
    for needed in commands:
        assert needed in first, f"README.md's first {FIRST_SCREEN} lines must show {needed!r}"


def test_readme_starts_with_the_space_configuration():
    assert README.read_text(encoding="utf-8").startswith("---\n")


# --- (d): links ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_existing_files_and_headings(doc):
    broken = []
    for target in relative_links(doc):
        file_part, _, fragment = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target} (no such heading in {linked.relative_to(ROOT)})")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(README)}
    orphans = sorted(page.name for page in DOCS.glob("*.md") if page.resolve() not in linked)
    assert not orphans, f"README.md links to no docs page named {orphans}"
