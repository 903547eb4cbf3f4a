"""Layers point one way (studio -> pipelines -> renderers) and heavy libraries load lazily."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("PySide6", "diffusers", "transformers", "gsplat", "nerfacc", "tinycudann")


@pytest.mark.parametrize("package", ["renderers", "pipelines", "pipelines.cli", "renderers.cameras",
                                     "renderers.scene", "pipelines.config", "pipelines.events"])
def test_importing_a_lower_layer_pulls_in_no_heavy_library(package):
    code = (f"import sys, {package}\n"
            f"bad = [m for m in {HEAVY + ('studio',)!r} if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"importing {package} imported {out.stdout.strip()}"


def _imported_top_levels(package: str) -> dict[str, set[str]]:
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("renderers", {"pipelines", "studio", "PySide6"}),
    ("pipelines", {"studio", "PySide6"}),
])
def test_no_module_imports_an_upper_layer(package, forbidden):
    offenders = {path: names & forbidden for path, names in _imported_top_levels(package).items()
                 if names & forbidden}
    assert not offenders, f"upper-layer imports in {package}: {offenders}"


def test_only_studio_imports_qt():
    for package in ("renderers", "pipelines", "assets"):
        for path, names in _imported_top_levels(package).items():
            assert "PySide6" not in names, path
