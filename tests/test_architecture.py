"""The house stays livable: no import circle, no hidden imports, small files and functions, a stable public face.

Read from the source with ``ast`` (nothing is run but the public-face imports), so these checks are fast.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backend", "ui", "api")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
# Functions over the limit because a flat table reads best there: "file:function" → why.
LONG_FUNCTIONS: dict[str, str] = {}


def product_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, tree: ast.Module, known: set[str]) -> set[str]:
    """Project modules ``path`` imports at module level (``from a.b import c`` counts a.b.c when c is a module)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    # Module level, including under ``if TYPE_CHECKING:`` (an import for annotations ties modules as well).
    top = [n for node in tree.body for n in ([node, *node.body, *node.orelse] if isinstance(node, ast.If) else [node])]
    for node in top:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in product_files()}
    known = set(files)
    graph = {}
    for name, path in files.items():
        # A package's own __init__ is imported with each of its modules: an edge there is not a circle of code.
        edges = imported_modules(path, ast.parse(path.read_text()), known)
        graph[name] = {other for other in edges if other != name and not name.startswith(other + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle():
    graph = import_graph()
    assert "backend.schema.validate" in graph and graph["backend.generation.engine"], "the graph was not read"
    assert circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_inside_a_function():
    """Function-level imports of project code hide circles; there are none in backend/, ui/ or api/."""
    hidden = []
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    project = isinstance(inner, ast.ImportFrom) and (inner.module or "").split(".")[0] in PACKAGES
                    if project or (isinstance(inner, ast.ImportFrom) and inner.level):
                        hidden.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert hidden == []


def test_backend_never_imports_gradio():
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "backend").rglob("*.py")
        if any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "gradio" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "gradio")
            for n in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert offenders == []


def test_files_and_functions_are_small():
    long_files = [
        f"{path.relative_to(ROOT)} ({lines})"
        for path in product_files()
        if (lines := len(path.read_text().splitlines())) > MAX_FILE_LINES
    ]
    long_functions = []
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                where = f"{path.relative_to(ROOT)}:{node.name}"
                if length > MAX_FUNCTION_LINES and where not in LONG_FUNCTIONS:
                    long_functions.append(f"{where} ({length})")
    assert long_files == []
    assert long_functions == []


def test_schema_imports_nothing_heavy():
    code = (
        "import sys, backend.schema.requests, backend.schema.catalog, backend.schema.samplers;"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'gradio') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "name",
    ["Engine", "Settings", "Txt2ImgRequest", "Img2ImgRequest", "InpaintRequest", "ControlNetRequest", "GridRequest",
     "ValidationError"],
)
def test_public_face(name):
    import backend

    assert getattr(backend, name).__name__ == name
    assert name in backend.__all__
