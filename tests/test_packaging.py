import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import assets
from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_asset_path_finds_bundled_folders_and_names_missing_ones():
    assert assets.asset_path("examples").is_dir()
    with pytest.raises(FileNotFoundError, match="no_such_file.png"):
        assets.asset_path("no_such_file.png")


def test_markers_are_registered_centrally():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    markers = " ".join(config["tool"]["pytest"]["ini_options"]["markers"])
    for marker in ("slow", "gpu", "qt"):
        assert f"{marker}:" in markers


def test_fourd_help_and_doctor(capsys):
    assert main([]) == 0
    assert "doctor" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "doctor"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    for key in ("torch", "device", "gsplat", "nerfacc", "tiny-cuda-nn", "models", "runs", "bundled models"):
        assert key in out.stdout
    assert "inhouse-field-prior (" in out.stdout and "text-to-3d-autodecoder (" in out.stdout


def test_console_scripts_are_installed():
    bindir = Path(sys.executable).parent
    assert (bindir / "fourd").exists() and (bindir / "fourd-studio").exists()
    out = subprocess.run([str(bindir / "fourd"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "doctor" in out.stdout
