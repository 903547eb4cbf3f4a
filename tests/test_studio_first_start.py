"""First start: the studio opens on a prompt the bundled prior knows and on a result that job really gave."""

from __future__ import annotations

import torch
from studio_jobs_standin import RecordingViewer

from pipelines.models.vocabulary import unknown_words
from studio import first_start
from studio.model import StudioModel


def test_the_studio_opens_on_the_shipped_example_ready_to_generate(monkeypatch, tmp_path):
    monkeypatch.setenv("FOURD_HOME", str(tmp_path / "home"))
    model = StudioModel(viewer=RecordingViewer())
    caption = first_start.apply(model)
    info = first_start.about()
    assert info["pipeline"] == first_start.EXAMPLE.pipeline and info["preset"] == "preview"
    assert caption.startswith("Example: 4D-fy preview result for 'a red ball bouncing'") and "voxels" in caption
    assert model.scene_caption == caption and model.viewer.labels[-1] == "Example · 4D-fy preview"
    assert model.scene.kind == "voxels" and model.scene.frames > 1
    assert (model.form.pipeline, model.form.prompt, model.form.preset) == ("text-to-4d", "a red ball bouncing",
                                                                           "preview")
    assert not unknown_words(model.form.prompt)  # the bundled prior knows every word
    assert not model.has_unsaved_changes()  # nothing to save on a first start that changed nothing
    spec = model.build_spec()  # one click: the form is a valid job for the bundled priors
    info = model.pipeline_info()
    if info.preflight:
        from pipelines.registry import resolve

        resolve(info.preflight)(spec.inputs, spec.config, spec.priors)  # raises when a prior is missing


def test_the_shipped_scene_is_small_and_shows_the_red_object():
    from renderers.cameras import orbit_cameras

    folder = first_start.example_folder()
    assert folder is not None
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 600_000
    model = StudioModel()
    model.open_scene(folder / "scene")
    with torch.no_grad():
        out = model.scene.render(orbit_cameras(2.7, 20.0, 30.0, 40.0, 48, 48), 0.5)
    covered = out.alpha[0, ..., 0] > 0.5
    assert 0.05 < covered.float().mean() < 0.8  # an object in frame, not empty, not a wall
    red = out.rgb[0][covered]
    assert (red[:, 0] > 2 * red[:, 1]).float().mean() > 0.9  # "a red ball"


def test_field_to_voxels_keeps_a_field_scene_s_look():
    from renderers.cameras import orbit_cameras
    from renderers.field_scene import FieldScene

    field_scene = FieldScene.create("small", seed=3)  # the blob density prior: a soft sphere at the centre
    voxels = first_start.field_to_voxels(field_scene, resolution=16, frames=2)
    assert voxels.frames == 2 and voxels.resolution == (16, 16, 16)
    cams = orbit_cameras(2.7, 20.0, 30.0, 40.0, 32, 32)
    with torch.no_grad():
        a, b = field_scene.render(cams, 0.0).alpha, voxels.render(cams, 0.0).alpha
    assert (a > 0.5).any() and ((a > 0.5) == (b > 0.5)).float().mean() > 0.9


def test_without_the_shipped_scene_the_demo_ball_stands_in(monkeypatch):
    monkeypatch.setattr(first_start, "example_folder", lambda: None)
    model = StudioModel(viewer=RecordingViewer())
    caption = first_start.apply(model)
    assert caption == "Example: an analytic bouncing ball (not generated)" and model.scene.kind == "demo-ball"


def test_the_module_prints_the_caption(capsys):
    assert first_start.main([]) == 0
    assert "Example:" in capsys.readouterr().out


def test_field_to_voxels_keeps_the_frames_a_run_trained_on():
    """A field that jumps between two places at its frame times f / 4 (and cross-fades between them, as a 4D-fy
    field does): the voxel copy shows each frame where the field has it."""
    from types import SimpleNamespace

    from renderers.volume import OccupancyGrid

    def place(t: float) -> float:  # frames 0 and 2 down at z = 0, frames 1 and 3 up at z = 0.5
        return 0.5 * (round(4 * t) % 2)

    def density(points, t):
        centre = torch.tensor([0.0, 0.0, place(t)])
        return 20.0 * ((points - centre).norm(dim=-1) < 0.3).float()

    field = SimpleNamespace(density=density, albedo=lambda points, t: torch.full((len(points), 3), 0.5))
    scene = SimpleNamespace(field=field, time_range=(0.0, 1.0), occupancy=OccupancyGrid(8))  # all occupied
    voxels = first_start.field_to_voxels(scene, resolution=16, frames=4)
    axis = torch.linspace(-1, 1, 16)
    for f in range(4):
        sigma = torch.nn.functional.softplus(voxels.grid_at(f / 4)[0])        # [z, y, x]
        height = float((sigma.sum((1, 2)) * axis).sum() / sigma.sum())
        assert abs(height - place(f / 4)) < 0.1, (f, height)


def test_field_to_voxels_drops_what_the_occupancy_grid_skips():
    """A faint density everywhere, which the field's renderer skips (its occupancy grid marks it empty), must not
    become a grey haze over the whole voxel box; the copy's mesh level puts its surface on its outline."""
    from types import SimpleNamespace

    from renderers.cameras import orbit_cameras
    from renderers.volume import OccupancyGrid

    def density(points, t):
        return 0.05 + 6.0 * torch.exp(-(points.norm(dim=-1) / 0.3) ** 2)

    field = SimpleNamespace(density=density, albedo=lambda points, t: torch.full((len(points), 3), 0.2))
    occupancy = OccupancyGrid(8)
    occupancy.occupied.copy_(occupancy.cell_centres().norm(dim=-1) < 0.6)
    voxels = first_start.field_to_voxels(SimpleNamespace(field=field, time_range=(0.0, 1.0), occupancy=occupancy),
                                         resolution=16, frames=1)
    cams = orbit_cameras(3.0, 20.0, 30.0, 40.0, 32, 32)
    with torch.no_grad():
        alpha = voxels.render(cams, 0.0).alpha[0, ..., 0]
    assert float(alpha[0, 0]) < 1e-3 and float(alpha[16, 16]) > 0.5  # no haze in the corner, the ball in the middle
    assert voxels.mesh_threshold < 6.0 and not voxels.to_mesh(0.0, resolution=32).is_empty


def test_the_prompt_check_names_a_weak_motion_where_the_job_samples_the_field_prior(monkeypatch, tmp_path):
    monkeypatch.setenv("FOURD_HOME", str(tmp_path / "home"))
    model = StudioModel(viewer=RecordingViewer())
    assert "objects orbiting" in model.prompt_warning("a red ball that orbits", "text-to-4d", "preview")
    assert model.prompt_warning("a red ball bouncing", "text-to-4d", "preview") is None
    # public priors ('standard') and the text-to-3d model are not the field prior its evaluation speaks for
    assert model.prompt_warning("a red ball that orbits", "text-to-4d", "standard") is None
    assert model.prompt_warning("a red ball that orbits", "text-to-3d", model.presets("text-to-3d")[0]) is None
    assert "'dragon'" in model.prompt_warning("a red dragon that orbits", "text-to-3d", model.presets("text-to-3d")[0])
    assert model.prompt_warning("a red dragon", "text-to-4d", "standard") is None  # its public priors read English
