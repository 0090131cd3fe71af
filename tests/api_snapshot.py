"""The public API surface as data: Gradio's ``view_api`` and the A1111 routes' OpenAPI schema.

``tests/test_a1111_api.py::test_api_surface_matches_the_snapshot`` compares a running app with the files in
``tests/snapshots``; after a deliberate API change, rewrite them with
``SDSTUDIO_WRITE_SNAPSHOTS=1 pytest tests/test_a1111_api.py -k snapshot`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SNAPSHOTS = Path(__file__).parent / "snapshots"


def gradio_surface(view_api: dict[str, Any]) -> dict[str, Any]:
    """The named endpoints, their parameters (name, default, type, component) and returns; nothing run-specific."""
    surface = {}
    for name, endpoint in sorted(view_api["named_endpoints"].items()):
        surface[name] = {
            "parameters": [
                {
                    "name": p["parameter_name"],
                    "has_default": p["parameter_has_default"],
                    "default": p.get("parameter_default"),
                    "type": p["python_type"]["type"],
                    "component": p["component"],
                }
                for p in endpoint["parameters"]
            ],
            "returns": [{"type": r["python_type"]["type"], "component": r["component"]} for r in endpoint["returns"]],
        }
    return surface


def a1111_surface(openapi: dict[str, Any]) -> dict[str, Any]:
    """The /sdapi/v1 paths with their methods, and every schema they use."""
    paths = {path: sorted(methods) for path, methods in sorted(openapi["paths"].items()) if path.startswith("/sdapi")}
    return {"paths": paths, "schemas": openapi.get("components", {}).get("schemas", {})}


def check(name: str, surface: dict[str, Any]) -> None:
    """Compare with the snapshot file ``name`` (or write it, when asked to)."""
    path = SNAPSHOTS / f"{name}.json"
    text = json.dumps(surface, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("SDSTUDIO_WRITE_SNAPSHOTS"):
        path.write_text(text)
        return
    expected = json.loads(path.read_text())
    assert json.loads(text) == expected, f"the API changed: compare with {path} (see tests/api_snapshot.py)"
