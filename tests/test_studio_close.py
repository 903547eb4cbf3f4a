"""Closing the studio: what must be asked (running jobs, unsaved project) is decided by the Qt-free model."""

from __future__ import annotations

import pytest
from studio_jobs_standin import JobRunner, finish

from studio.demo_scene import BouncingBall
from studio.model import CloseQuestions


class RecordingRunner(JobRunner):
    """The stand-in runner, remembering how it was shut down."""

    shutdowns: list[bool]

    def shutdown(self, cancel_running: bool = True) -> None:
        self.shutdowns = [*getattr(self, "shutdowns", []), cancel_running]
        if cancel_running:
            for job in getattr(self, "jobs", []):
                job.cancel()
        for job in getattr(self, "jobs", []):
            job.wait(20)

    def submit(self, spec, run_dir=None):
        job = super().submit(spec, run_dir)
        self.jobs = [*getattr(self, "jobs", []), job]
        return job


@pytest.fixture
def model(make_studio_model, tmp_path):
    return make_studio_model(runner=RecordingRunner(tmp_path / "runs"), viewer=False)


def test_a_fresh_studio_closes_without_questions(model):
    assert model.close_questions() == CloseQuestions(running=0, unsaved=False)
    assert not model.close_questions().any


def test_looking_around_is_not_an_edit_but_changing_the_form_is(model, tmp_path):
    BouncingBall(count=30).save(tmp_path / "ball")
    model.open_scene(tmp_path / "ball")
    assert model.has_unsaved_changes()  # the scene a project shows is part of it
    model.save_project(tmp_path / "project")
    assert not model.has_unsaved_changes()
    model.set_frame(20)
    assert not model.close_questions().unsaved
    model.form.prompt = "a blue cube spinning"
    assert model.close_questions() == CloseQuestions(running=0, unsaved=True)
    model.save_project()
    assert not model.has_unsaved_changes()


def test_a_running_job_asks_both_and_stopping_cancels_it(model, tmp_path):
    model.form.pipeline, model.form.prompt, model.form.preset = "ball", "a ball", "standard"  # 40 steps of 50 ms
    view = model.generate()
    questions = model.close_questions()
    assert questions.running == 1 and questions.unsaved  # a new run that no saved project holds yet
    model.decide_running_jobs(keep=False)
    model.shutdown()
    assert model.runner.shutdowns == [True]
    model.poll_jobs()
    assert view.status == "cancelled" and view.resumable


def test_keeping_jobs_lets_them_finish_before_the_studio_exits(model, tmp_path):
    model.form.pipeline, model.form.prompt, model.form.preset = "ball", "a ball", "standard"
    view = model.generate()
    model.save_project(tmp_path / "project")
    assert model.close_questions() == CloseQuestions(running=1, unsaved=False)  # saved: only the job is asked
    model.decide_running_jobs(keep=True)
    model.shutdown()
    assert model.runner.shutdowns == [False]
    finish(model, view)
    # the finished job's result now shows in the viewer: the project's view changed
    assert model.close_questions() == CloseQuestions(running=0, unsaved=True)


def test_opening_and_new_project_start_clean(model, tmp_path):
    model.form.prompt = "a red ball bouncing"
    model.save_project(tmp_path / "p")
    model.form.prompt = "changed"
    assert model.has_unsaved_changes()
    model.open_project(tmp_path / "p")
    assert not model.has_unsaved_changes() and model.form.prompt == "a red ball bouncing"
    model.form.prompt = "changed again"
    model.new_project()
    assert not model.has_unsaved_changes()
