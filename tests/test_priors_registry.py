"""The model registry: lookup order, the missing-model sentence, offline download, `fourd models`."""

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.priors import cli_models
from pipelines.priors.registry import (
    ModelNotFound,
    NoNetwork,
    download,
    find_model,
    get_model_spec,
    installed_path,
    list_models,
)

ROOT = Path(__file__).resolve().parents[1]


def _run_cli(*argv):
    parser = argparse.ArgumentParser(prog="fourd")
    cli_models.add_parser(parser.add_subparsers(dest="command"))
    return cli_models.run(parser.parse_args(["models", *argv]))


def test_the_published_priors_are_registered():
    names = {s.name for s in list_models()}
    assert {"sd21-base", "mvdream-sd21", "zeroscope-v2-576w", "svd-xt", "sv3d-p"} <= names
    with pytest.raises(ModelNotFound, match="no prior named 'sd3'.*sd21-base"):
        get_model_spec("sd3")


def test_missing_model_names_model_places_and_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFound) as err:
        find_model("svd-xt")
    message = str(err.value)
    assert "'svd-xt'" in message and "fourd models download svd-xt" in message
    assert str(tmp_path / "models" / "svd-xt") in message
    assert str(tmp_path / "hf" / "models--stabilityai--stable-video-diffusion-img2vid-xt") in message
    assert message.count(".") >= 1 and "\n" not in message


def test_lookup_order_explicit_then_models_dir_then_hf_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    repo = tmp_path / "hf" / "models--stabilityai--stable-diffusion-2-1-base"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert find_model("sd21-base") == snap
    local = tmp_path / "models" / "sd21-base"
    local.mkdir(parents=True)
    (local / "model_index.json").write_text("{}")
    assert find_model("sd21-base") == local
    explicit = tmp_path / "elsewhere"
    explicit.mkdir()
    (explicit / "model_index.json").write_text("{}")
    assert find_model("sd21-base", explicit) == explicit
    with pytest.raises(ModelNotFound, match="not at .*nowhere.*fourd models download sd21-base"):
        find_model("sd21-base", tmp_path / "nowhere")


def test_offline_download_fails_fast_without_touching_the_network(monkeypatch, tmp_path):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_connections(*args, **kwargs):
        raise AssertionError("a network connection was attempted while offline")
    monkeypatch.setattr(socket, "create_connection", no_connections)
    with pytest.raises(NoNetwork, match="HF_HUB_OFFLINE.*fourd models download zeroscope-v2-576w"):
        download("zeroscope-v2-576w")
    assert _run_cli("download", "zeroscope-v2-576w") == 2
    assert not (tmp_path / "models" / "zeroscope-v2-576w").exists()


def test_unreachable_hub_is_reported_not_waited_on(monkeypatch, tmp_path):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tmp_path / "models"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FOURD_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("no route")
    monkeypatch.setattr(socket, "create_connection", refused)
    with pytest.raises(NoNetwork, match="cannot be reached"):
        download("sd21-base", timeout=2)


def test_models_cli_list_and_path(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    (tmp_path / "models" / "svd-xt").mkdir(parents=True)
    (tmp_path / "models" / "svd-xt" / "model_index.json").write_text("{}")
    assert _run_cli("list") == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert str(tmp_path / "models" / "svd-xt") in lines["svd-xt"]
    assert "not installed" in lines["sv3d-p"]
    assert _run_cli("path", "svd-xt") == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "models" / "svd-xt")
    assert _run_cli("path", "sv3d-p") == 2
    assert "fourd models download sv3d-p" in capsys.readouterr().err
    assert installed_path("sv3d-p") is None


def test_importing_priors_loads_no_diffusion_library():
    code = ("import sys, pipelines.priors, pipelines.priors.cli_models, pipelines.priors.guidance\n"
            "print(','.join(m for m in ('diffusers', 'transformers', 'huggingface_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_models_cli_lists_the_bundled_priors_words_and_checks_a_prompt(capsys):
    from pipelines.models.vocabulary import grammar_words

    assert _run_cli("words") == 0
    listing = capsys.readouterr().out
    assert "torus (ring, donut)" in listing and "orbit (orbiting" in listing
    assert set(grammar_words()) - {"a", "an", "that"} <= set(listing.replace(",", " ").replace("(", " ")
                                                             .replace(")", " ").replace(";", " ").split())
    assert _run_cli("words", "a pink dragon that orbits") == 0
    out = capsys.readouterr().out
    assert "'dragon'" in out and "objects orbiting" in out
    assert _run_cli("words", "a red ball spinning") == 0
    assert "knows every word" in capsys.readouterr().out
