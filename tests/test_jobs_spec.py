"""Job specs and run folders: round trips, clear errors, inputs copied in, no two runs per folder."""

import threading

import pytest

from pipelines.jobs import JobSpec, RunFolderError, SpecError, list_runs, read_spec
from pipelines.jobs.run_folder import init_run_folder, new_run_dir, resolve_inputs
from pipelines.toy import ToyFitConfig


def test_spec_round_trips_through_toml(tmp_path):
    spec = JobSpec.create("toy-fit", "standard", seed=7, priors={"denoiser": "field-tiny"},
                          overrides={"steps": 5, "lr": 0.01})
    assert isinstance(spec.config, ToyFitConfig) and spec.config.steps == 5 and spec.config.resolution == 48
    back = JobSpec.load(spec.save(tmp_path / "spec.toml"))
    assert back == spec
    assert 'fourd_version = "' in spec.to_toml()


@pytest.mark.parametrize(("text", "match"), [
    ("[run\npipeline = 'toy-fit'", "not a valid spec file \\(bad TOML"),
    ("[config]\nsteps = 3\n", "no \\[run\\] table"),
    ("[run]\npipeline = 'no-such-thing'\n", "unknown pipeline 'no-such-thing'"),
    ("[run]\npipeline = 'toy-fit'\n[config]\nsteps = 'many'\n", "'steps' must be an integer"),
    ("[run]\npipeline = 'toy-fit'\n[config]\nstepz = 3\n", "unknown config key 'stepz'"),
    ("[run]\npipeline = 'toy-fit'\nseed = 1.5\n", "run.seed must be an integer"),
    ("[run]\npipeline = 'toy-fit'\n[schema]\nversion = 99\n", "newer version"),
])
def test_a_corrupt_spec_gives_a_clear_error_naming_the_file(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=match) as info:
        JobSpec.load(path)
    assert "bad.toml" in str(info.value) and "\n" not in str(info.value).strip()


def test_run_folder_copies_file_inputs_and_refuses_a_second_run(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG fake")
    spec = JobSpec("toy-fit", {"image": str(image), "prompt": "a red ball"}, ToyFitConfig())
    run = tmp_path / "run"
    stored = init_run_folder(run, spec)
    assert stored.inputs == {"image": "inputs/image.png", "prompt": "a red ball"}
    assert (run / "inputs" / "image.png").read_bytes() == b"\x89PNG fake"
    assert resolve_inputs(run, read_spec(run))["image"] == str(run / "inputs" / "image.png")
    with pytest.raises(RunFolderError, match="already holds a run"):
        init_run_folder(run, spec)
    with pytest.raises(SpecError, match="does not exist"):
        init_run_folder(tmp_path / "other", JobSpec("toy-fit", {"image": "missing.png"}, ToyFitConfig()))


def test_runs_started_at_once_in_one_root_get_their_own_folders(tmp_path):
    spec = JobSpec.create("toy-fit")
    made, barrier = [], threading.Barrier(8)

    def make():
        barrier.wait()
        made.append(new_run_dir(tmp_path, spec))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8
    for path in made:
        init_run_folder(path, spec)
    runs = list_runs(tmp_path)
    # nobody owns these queued runs: they show as interrupted (resumable)
    assert len(runs) == 8 and {r.status for r in runs} == {"failed-resumable"}
    assert {r.status for r in list_runs(tmp_path / "none")} == set()
