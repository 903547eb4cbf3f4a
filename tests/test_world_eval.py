"""The evaluation harness: strict suite files, scoring against the ground truth, and whole suite runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.world.grammar import COLOURS, MATERIALS, MOTIONS, SHAPES, SIZES, WorldSpec, sample_spec
from pipelines.world.suites import SuiteError, load_suite, parse_suite

GOOD = """\
# a comment
[suite]
name = "tiny"
resolution = 32

[[case]]
shape = "sphere"
colour = "red"
motion = "bounce"

[[case]]
world_seed = 7
seed = 3
size = "small"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


# -------------------------------------------------------------------- parsing
def test_good_suite_parses_with_specs_prompts_seeds_and_lines(tmp_path):
    suite = load_suite(_write(tmp_path, GOOD))
    assert suite.name == "tiny" and suite.resolution == 32 and len(suite.cases) == 2
    first, second = suite.cases
    assert first.spec == WorldSpec("sphere", "red", "bounce") and first.prompt == "a matte red sphere bouncing"
    assert first.name == "01-red-sphere-bounce" and first.seed == 0 and first.line == 6
    expected = sample_spec(7)
    assert second.spec.shape == expected.shape and second.spec.yaw == expected.yaw and second.spec.size == "small"
    assert second.seed == 3 and second.line == 11


def test_bundled_suites_resolve_by_name_and_cover_the_world():
    smoke = load_suite("smoke")
    assert 2 <= len(smoke.cases) <= 3
    standard = load_suite("standard")
    assert 12 <= len(standard.cases) <= 20
    specs = [c.spec for c in standard.cases]
    for attribute, values in (("shape", SHAPES), ("colour", COLOURS), ("motion", MOTIONS),
                              ("material", MATERIALS), ("size", SIZES)):
        assert {getattr(s, attribute) for s in specs} == set(values), attribute


def test_unknown_shape_names_its_line(tmp_path):
    text = GOOD + '\n[[case]]\nname = "typo"\nshape = "sphear"\ncolour = "red"\nmotion = "spin"\n'
    line = text.splitlines().index('shape = "sphear"') + 1
    message = _error(tmp_path, text)
    assert f"line {line}:" in message and "unknown shape 'sphear'" in message and "sphere" in message


def test_unknown_motion_and_impossible_motion_name_their_lines(tmp_path):
    text = GOOD.replace('motion = "bounce"', 'motion = "jog"')
    message = _error(tmp_path, text)
    assert "line 9:" in message and "unknown motion 'jog'" in message
    message = _error(tmp_path, GOOD.replace('motion = "bounce"', 'motion = "walk"'))
    assert "line 9:" in message and "cannot walk" in message


def test_unknown_colour_key_and_table_name_their_lines(tmp_path):
    assert "line 8:" in _error(tmp_path, GOOD.replace('colour = "red"', 'colour = "mauve"'))
    message = _error(tmp_path, GOOD.replace("seed = 3", "sed = 3"))
    assert "line 13:" in message and "unknown case key 'sed'" in message
    message = _error(tmp_path, GOOD + "\n[extras]\nx = 1\n")
    assert "line 16:" in message and "'extras'" in message
    message = _error(tmp_path, GOOD.replace("resolution = 32", "resolution = 'big'"))
    assert "line 4:" in message


def test_incomplete_case_and_missing_suite_are_one_sentence(tmp_path):
    message = _error(tmp_path, '[[case]]\nshape = "cube"\n')
    assert "line 1:" in message and "colour, motion" in message
    with pytest.raises(SuiteError, match="no suite 'nonesuch'.*smoke"):
        load_suite("nonesuch")
    with pytest.raises(SuiteError, match="line 2"):
        parse_suite('[[case]]\nname = "a b"\nshape = "cube"\ncolour = "red"\nmotion = "spin"\n')


# -------------------------------------------------------------------- scoring
def test_ground_truth_scores_perfectly_and_a_wrong_scene_does_not():
    from pipelines.world.classifier import load_classifier
    from pipelines.world.evaluate import score_scene
    from pipelines.world.scene import WorldScene

    spec = WorldSpec("torus", "green", "sway", "glossy", "large", yaw=-30.0)
    classifier = load_classifier()
    perfect = score_scene(WorldScene(spec), spec, spec.caption(), resolution=32, classifier=classifier)
    assert perfect["psnr"] >= 99.0 and perfect["ssim"] > 0.999 and perfect["mask_iou"] == 1.0
    assert perfect["attributes"]["expected"] == {"shape": "torus", "colour": "green", "motion": "sway"}
    recoloured = score_scene(WorldScene(WorldSpec("torus", "blue", "sway", "glossy", "large", yaw=-30.0)), spec,
                             spec.caption(), resolution=32, classifier=classifier)
    assert recoloured["psnr"] < 30.0 and recoloured["mask_iou"] == 1.0
    assert recoloured["attributes"]["correct"]["colour"] is False
    reshaped = score_scene(WorldScene(WorldSpec("cube", "green", "sway", "glossy", "large")), spec, spec.caption(),
                           resolution=32)
    assert reshaped["mask_iou"] < 0.8 and "attributes" not in reshaped


# -------------------------------------------------------------------- whole suites
def _check_report(out: Path, cases: int) -> dict:
    for name in ("report.json", "report.md", "contact_sheet.png", "suite.toml"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert len(report["cases"]) == cases
    from PIL import Image

    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape[0] > cases * 160 and sheet.std() > 10  # tiles, not a blank page
    return report


@pytest.mark.slow
def test_smoke_suite_through_the_job_runner(tmp_path):
    """The shipped smoke suite end to end through job workers: the oracle's results are the ground truth
    (PSNR 100, IoU 1); a real fit (toy-fit, tiny, in this process) gives finite, imperfect figures."""
    from pipelines.world.evaluate import evaluate_suite

    lines: list[str] = []
    report = evaluate_suite(load_suite("smoke"), "world-oracle", out_dir=tmp_path / "oracle", log=lines.append)
    report = _check_report(tmp_path / "oracle", 3)
    assert report["mean"]["done"] == 3 and report["mean"]["psnr"] == pytest.approx(100.0)
    assert report["mean"]["mask_iou"] == 1.0 and report["mean"]["shape_accuracy"] == 1.0
    for case in report["cases"]:
        assert (tmp_path / "oracle" / case["result_dir"] / "scene.json").is_file()
        assert (tmp_path / "oracle" / "cases" / case["name"] / "truth" / "scene.json").is_file()
    assert any("[3/3] yellow-walker-walk: done" in line and "suite ETA" in line for line in lines)

    report = evaluate_suite(load_suite("smoke"), "toy-fit", out_dir=tmp_path / "toy", limit=1, log=lines.append,
                            overrides={"steps": 3, "resolution": 8, "image_size": 12, "preview_every": 3},
                            in_process=True)
    report = _check_report(tmp_path / "toy", 1)
    figures = report["cases"][0]["figures"]
    assert report["overrides"] == {"steps": 3, "resolution": 8, "image_size": 12, "preview_every": 3}
    assert all(math.isfinite(figures[k]) for k in ("psnr", "ssim", "mask_iou"))
    assert figures["psnr"] < 40.0 and figures["mask_iou"] < 0.9


def test_failed_case_is_recorded_and_the_suite_goes_on(tmp_path, capsys):
    from pipelines.cli import main

    suite = _write(tmp_path, '[[case]]\nname = "blob"\nshape = "cube"\ncolour = "red"\nmotion = "spin"\n'
                             'prompt = "a mysterious blob"\n\n[[case]]\nshape = "capsule"\ncolour = "pink"\n'
                             'motion = "still"\n[suite]\nresolution = 16\n')
    out = tmp_path / "report"
    code = main(["eval", str(suite), "--pipeline", "world-oracle", "--out", str(out), "--in-process"])
    assert code == 1
    report = _check_report(out, 2)
    blob, capsule = report["cases"]
    assert blob["status"] == "failed" and "a mysterious blob" in blob["error"] and "figures" not in blob
    assert capsule["status"] == "done" and capsule["figures"]["psnr"] == pytest.approx(100.0)
    assert report["mean"]["failed"] == 1 and report["mean"]["mask_iou"] == 1.0
    assert "## Failed cases" in (out / "report.md").read_text()
    assert "[1/2] blob: failed" in capsys.readouterr().out


def test_bad_command_lines_start_nothing(tmp_path, capsys):
    from pipelines.cli import main

    bad = _write(tmp_path, GOOD.replace('shape = "sphere"', 'shape = "blob"'))
    assert main(["eval", str(bad), "--pipeline", "world-oracle", "--out", str(tmp_path / "a")]) == 2
    assert "line 7" in capsys.readouterr().err
    assert main(["eval", "smoke", "--pipeline", "no-such", "--out", str(tmp_path / "b")]) == 2
    assert "unknown pipeline 'no-such'" in capsys.readouterr().err
    assert main(["eval", "smoke", "--pipeline", "toy-fit", "--set", "nonsense=1", "--out", str(tmp_path / "c")]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main(["eval", "smoke", "--pipeline", "toy-fit", "--preset", "huge", "--out", str(tmp_path / "d")]) == 2
    assert not any((tmp_path / name).exists() for name in "abcd")
