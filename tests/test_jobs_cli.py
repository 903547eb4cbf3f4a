"""`fourd generate | run | resume | runs`: exit codes, JSON event stream, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.checkpoints import list_checkpoints
from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "steps=4", "--set", "image_size=12", "--set", "views_per_step=1", "--set", "samples_per_ray=12",
        "--set", "resolution=10", "--set", "preview_every=2", "--set", "preview_size=16"]


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_generate_prints_the_event_stream_and_the_run_is_listed(tmp_path, capsys):
    assert main(["generate", "toy-fit", "--seed", "3", "--out", str(tmp_path), "--json", *TINY]) == 0
    records = _json_lines(capsys.readouterr().out)
    assert records[-1]["type"] == "status" and records[-1]["status"] == "done"
    assert [r["step"] for r in records if r["type"] == "progress"] == [1, 2, 3, 4]
    assert any(r["type"] == "preview" and Path(r["path"]).is_file() for r in records)
    [run] = [p for p in tmp_path.iterdir()]
    assert "seed = 3" in (run / "spec.toml").read_text()

    assert main(["runs", "--root", str(tmp_path), "--json"]) == 0
    [listed] = _json_lines(capsys.readouterr().out)
    assert listed["status"] == "done" and listed["pipeline"] == "toy-fit" and listed["seed"] == 3

    # in an 80-column terminal the table still shows the whole name, which `fourd resume` / `export` take
    env = {**os.environ, "COLUMNS": "80"}
    table = subprocess.run([sys.executable, "-m", "pipelines.cli", "runs", "--root", str(tmp_path)],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=120).stdout
    assert run.name in table and "done" in table

    assert main(["resume", str(run)]) == 2
    assert "already finished" in capsys.readouterr().err
    assert main(["resume", str(tmp_path)]) == 2  # the --out folder, not the run in it
    assert f"folder of 1 run(s), not a run; name one, e.g. '{run}'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["generate", "toy-fit", "--set", "bogus=1"], "unknown config key 'bogus'"),
    (["generate", "toy-fit", "--set", "steps=lots"], "'steps' must be an integer"),
    (["generate", "toy-fit", "--preset", "huge"], "unknown preset 'huge'"),
    (["generate", "toy-fit", "extra-input"], "takes no inputs"),
    (["generate", "toy-fit", "--prior", "denoiser"], "--prior expects ROLE=NAME"),
    (["run", "missing.toml"], "does not exist"),
    (["resume", "no-such-run"], "is not a run folder"),
])
def test_bad_input_exits_2_with_one_clear_line_and_starts_nothing(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path)] if argv[0] != "resume" else argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_a_corrupt_spec_file_exits_2(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text("[run]\npipeline = 'toy-fit'\n[config]\nsteps = -1\n")
    assert main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 2
    assert "spec file" in capsys.readouterr().err


def test_ctrl_c_checkpoints_and_exits_130(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "generate", "toy-fit", "--out", str(tmp_path), "--json", *TINY,
         "--set", "steps=100000", "--set", "step_delay_s=0.02", "--set", "preview_every=100000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            record = json.loads(line)
            if record["type"] == "progress" and record["step"] >= 2:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert _json_lines(out)[-1]["status"] == "cancelled"
    [run] = list(tmp_path.iterdir())
    assert len(list_checkpoints(run / "checkpoints")) == 1


def needs_a_missing_model(inputs, config, priors):
    raise LookupError(f"model '{priors.get('denoiser', 'field-base')}' is not in the models folder; fetch it with "
                      "`fourd models pull field-base` on a connected machine.")


def test_a_failing_preflight_check_exits_2_before_any_work(tmp_path, capsys, monkeypatch):
    from pipelines import registry
    from pipelines.toy import ToyFitConfig

    monkeypatch.setitem(registry._REGISTRY, "toy-needs-model", registry.PipelineInfo(
        "toy-needs-model", "toy with a model check", ToyFitConfig, "pipelines.toy:run",
        preflight=f"{__name__}:needs_a_missing_model"))
    assert main(["generate", "toy-needs-model", "--prior", "denoiser=big-one", "--out", str(tmp_path)]) == 2
    assert "model 'big-one' is not in the models folder" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
