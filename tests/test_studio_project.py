"""Projects (save / open a folder, recent list) and the prompt check, through the Qt-free model."""

from __future__ import annotations

import shutil
import tomllib

import pytest
from studio_jobs_standin import JobRunner, finish

from pipelines.models.vocabulary import prompt_vocabulary, prompt_warning, unknown_words
from studio.model import StudioError
from studio.project import PROJECT_FILE, SCHEMA_VERSION, read_project, recent_projects


def test_a_saved_project_reopens_with_its_runs_inputs_and_view(make_studio_model, tmp_path):
    model = make_studio_model()
    model.form.pipeline, model.form.prompt, model.form.seed = "ball", "a red ball bouncing", 7
    image = tmp_path / "elsewhere" / "input.png"
    image.parent.mkdir()
    shutil.copy(__import__("studio.model").model.example_inputs("image")[0], image)
    model.form.inputs["image"] = str(image)
    view = model.generate()
    finish(model, view)
    model.timeline.fps, model.timeline.loop = 12.0, False
    model.set_frame(30)
    model.set_camera("side")
    folder = model.save_project(tmp_path / "my project")

    document = tomllib.loads((folder / PROJECT_FILE).read_text())
    assert document["schema_version"] == SCHEMA_VERSION and document["kind"] == "fourd-studio-project"
    assert document["form"]["inputs"]["image"] == "inputs/input.png"  # copied in, stored relative
    assert (folder / "inputs" / "input.png").read_bytes() == image.read_bytes()
    assert not list(folder.glob("*.tmp-*"))

    other = make_studio_model()
    assert other.open_project(folder) == []
    assert other.form.prompt == "a red ball bouncing" and other.form.seed == 7 and other.form.pipeline == "ball"
    assert other.form.inputs["image"] == str(folder / "inputs" / "input.png")
    assert other.timeline.fps == 12.0 and not other.timeline.loop and other.timeline.frame == 30
    assert other.camera == "side" and other.viewer.cameras[-1] == "side"
    assert other.scene is not None and other.scene.kind == "demo-ball"
    assert other.viewer.times[-1] == pytest.approx(30 / 47)
    assert other.project_runs == [view.job.run_dir.resolve()]
    assert recent_projects()[0] == folder

    # with another runs folder the library still lists the project's run
    elsewhere = make_studio_model(runner=JobRunner(tmp_path / "other runs"))
    elsewhere.open_project(folder)
    runs = elsewhere.library()
    assert [r.run_dir.resolve() for r in runs] == [view.job.run_dir.resolve()]


def test_a_project_whose_scene_moved_still_opens_and_says_so(make_studio_model, tmp_path):
    model = make_studio_model()
    model.form.pipeline, model.form.prompt = "ball", "a ball"
    view = model.generate()
    finish(model, view)
    folder = model.save_project(tmp_path / "p")
    shutil.rmtree(model.scene_source)
    other = make_studio_model()
    notes = other.open_project(folder)
    assert len(notes) == 1 and other.scene is None and other.form.prompt == "a ball"


@pytest.mark.parametrize("content, words", [
    (None, "has no project.toml"),
    ("this is [not toml", "damaged"),
    ('kind = "something-else"\nschema_version = 1\n', "not a fourd studio project"),
    ('kind = "fourd-studio-project"\nschema_version = 99\n', "newer fourd studio"),
    ('kind = "fourd-studio-project"\nschema_version = 1\n[view]\nfps = "fast"\n', "wrong type"),
])
def test_a_corrupt_or_foreign_folder_is_one_sentence(make_studio_model, tmp_path, content, words):
    folder = tmp_path / "bad"
    folder.mkdir()
    if content is not None:
        (folder / PROJECT_FILE).write_text(content)
    with pytest.raises(StudioError, match=words) as err:
        make_studio_model().open_project(folder)
    message = str(err.value)
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message


def test_save_needs_a_folder_and_new_project_clears(make_studio_model, tmp_path):
    model = make_studio_model()
    with pytest.raises(StudioError, match="Save As"):
        model.save_project()
    model.form.prompt = "a cube"
    folder = model.save_project(tmp_path / "a")
    model.form.prompt = "a blue cube"
    assert model.save_project() == folder  # saves in place
    assert read_project(folder).form.prompt == "a blue cube"
    model.new_project()
    assert model.project_folder is None and model.form.prompt == "" and model.scene is None


def test_recent_projects_are_most_recent_first_without_duplicates_or_gone_folders(make_studio_model, tmp_path):
    model = make_studio_model()
    a = model.save_project(tmp_path / "a")
    b = model.save_project(tmp_path / "b")
    model.open_project(a)
    assert recent_projects() == [a, b]
    shutil.rmtree(b)
    assert recent_projects() == [a]


def test_the_scene_title_names_the_run(tmp_path):
    from studio.model import scene_title

    class Kind:
        kind = "voxels"

    assert scene_title(None, None) == "no scene"
    assert scene_title(Kind(), None) == "voxels" and scene_title(Kind(), "example: ball") == "example: ball"
    (tmp_path / "run-1" / "scenes" / "step-00000070").mkdir(parents=True)
    (tmp_path / "run-1" / "result").mkdir()
    assert scene_title(Kind(), str(tmp_path / "run-1" / "scenes" / "step-00000070")) == "run-1 · step-00000070"
    assert scene_title(Kind(), str(tmp_path / "run-1" / "result")) == "run-1"


def test_unknown_prompt_words_are_named_in_order():
    vocabulary = set(prompt_vocabulary())
    assert {"ball", "red", "bouncing", "torus", "spinning"} <= vocabulary
    assert unknown_words("a red ball bouncing") == []
    assert unknown_words("A Red DRAGON breathing fire, a dragon!") == ["dragon", "breathing", "fire"]
    assert prompt_warning("a shiny teal torus spinning") is None
    warning = prompt_warning("a purple dragon flying")
    assert "'dragon', 'flying'" in warning and "ignore them" in warning
