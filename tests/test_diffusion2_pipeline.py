"""Diffusion² end to end with a tiny random-weight in-house prior, the input handling, and the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from assets import asset_path
from pipelines.context import RunContext
from pipelines.diffusion2.config import Diffusion2Config
from pipelines.diffusion2.inputs import InputError, load_reference, recentre, select_frames
from pipelines.diffusion2.reconstruct import matrix_cameras
from pipelines.events import Artifact, Preview, Progress
from pipelines.registry import get_pipeline, resolve

TINY = {"resolution": 16, "sampling": {"views": 3, "frames": 3, "steps": 2, "rollback_steps": 1,
                                       "reference_steps": 2, "chunk": 2},
        "reconstruction": {"steps": 6, "warmup_steps": 3, "gaussians": 150, "images_per_step": 2,
                           "densify_interval": 3},
        "preview_every": 1, "fit_preview_every": 3, "scene_every": 3}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A random-weight FieldDiT saved as each in-house role the pipelines load."""
    from safetensors.torch import save_file

    from pipelines.models.field_dit import FieldDiT, FieldPriorArch
    from pipelines.models.text import PromptTokenizer

    arch = FieldPriorArch(resolution=16, downsample=4, width=32, depth=1, heads=2, text_width=32, text_layers=1,
                          vocab_size=PromptTokenizer(16).vocab_size, fourier_bands=4)
    torch.manual_seed(0)
    model = FieldDiT(arch)
    root = tmp_path_factory.mktemp("models")
    for name in ("inhouse-i2v", "inhouse-i2orbit", "inhouse-t2i"):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps({"arch": arch.to_dict()}))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / name / "model.safetensors")
    return root


def run_pipeline(name, inputs, run_dir, seed=0, config_changes=None):
    info = get_pipeline(name)
    config = Diffusion2Config.preset("preview").override(_flat(TINY) | (config_changes or {}))
    context = RunContext(run_dir, seed=seed, checkpoint_every_steps=1)
    gen = resolve(info.entry)(inputs, config, context)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        return stop.value, events


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = v
    return out


def test_image_to_4d_end_to_end(tiny_models, tmp_path, monkeypatch):
    import imageio.v3 as iio

    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    scene, events = run_pipeline("image-to-4d", {"image": str(asset_path("examples", "red_ball.png"))}, tmp_path)
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert stages[0] == "reference" and stages.count("sampling") == 2 and stages.count("reconstruction") == 6
    # the in-house priors get the reference described in their words (they follow captions better than images)
    assert any("described the reference as 'a red sphere'" in getattr(e, "message", "") for e in events)
    # and are told that one image names no motion
    assert any(getattr(e, "level", "") == "warning" and "shows no motion" in e.message for e in events)
    previews = [e for e in events if isinstance(e, Preview)]
    grids = [p for p in previews if p.grid == (3, 3)]
    assert grids and grids[-1].image.shape == (48, 48, 3)
    # Row 0 / column 0 of the matrix are the references: the input view itself sits at (0, 0).
    matrix = iio.imread(next(e.path for e in events if isinstance(e, Artifact) and e.kind == "matrix"))
    assert matrix.shape == (48, 48, 3)
    assert matrix[:16, :16, 0].mean() > 2 * matrix[:16, :16, 2].mean()  # the red ball
    with torch.no_grad():
        out = scene.render(matrix_cameras(3, 15.0, 2.7, 40.0, 16), 0.5)
    assert out.rgb.shape == (3, 16, 16, 3) and float(out.alpha.max()) > 0.1
    scene.save(tmp_path / "scene")
    from renderers.scene import load_scene
    assert load_scene(tmp_path / "scene").kind == "gaussians"
    assert sorted((tmp_path / "checkpoints").glob("*.safetensors"))


@pytest.mark.slow
def test_resume_mid_sampling_gives_the_same_matrix(tiny_models, tmp_path, monkeypatch):
    """A run stopped after one sampling step and resumed from its checkpoint draws the same matrix."""
    import imageio.v3 as iio

    from pipelines.checkpoints import list_checkpoints

    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    image = {"image": str(asset_path("examples", "blue_cube.png"))}
    run_pipeline("image-to-4d", image, tmp_path / "a")
    config = Diffusion2Config.preset("preview").override(_flat(TINY))
    gen = resolve(get_pipeline("image-to-4d").entry)(image, config,
                                                      RunContext(tmp_path / "b", checkpoint_every_steps=1))
    sampling = 0
    for event in gen:  # stop at the second sampling step: the checkpoint after the first one is on disk
        sampling += isinstance(event, Progress) and event.stage == "sampling"
        if sampling == 2:
            break
    gen.close()
    assert list_checkpoints(tmp_path / "b" / "checkpoints")[-1].name == "step-00000002.safetensors"
    _, events = run_pipeline("image-to-4d", image, tmp_path / "b")
    assert any("resumed from the checkpoint after step 2" in getattr(e, "message", "") for e in events)
    assert np.array_equal(iio.imread(tmp_path / "b" / "matrix.png"), iio.imread(tmp_path / "a" / "matrix.png"))


def test_resume_mid_reconstruction_goes_on_from_the_fit(tiny_models, tmp_path, monkeypatch):
    """A run stopped after its fourth fitting step (past warm-up: the deformation field is in the checkpoint)
    resumes the fit from that checkpoint and runs only the remaining steps."""
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    image = {"image": str(asset_path("examples", "red_ball.png"))}
    config = Diffusion2Config.preset("preview").override(_flat(TINY))
    gen = resolve(get_pipeline("image-to-4d").entry)(image, config, RunContext(tmp_path, checkpoint_every_steps=1))
    fitting = 0
    for event in gen:  # the fifth fitting step's Progress comes before its checkpoint: the fourth one's is saved
        fitting += isinstance(event, Progress) and event.stage == "reconstruction"
        if fitting == 5:
            break
    gen.close()
    scene, events = run_pipeline("image-to-4d", image, tmp_path)
    assert any("resumed from the checkpoint after step 7 of 9" in getattr(e, "message", "") for e in events)
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert stages == ["reconstruction"] * 2
    assert scene.deformation is not None


def test_two_sampling_processes_give_the_one_process_matrix(tiny_models, tmp_path, monkeypatch):
    """sampling.processes=2: the job's process is rank 0 of a gloo group and spawns its follower; the matrix
    (and so the whole run) is the one a single process samples, and the follower is gone afterwards."""
    import multiprocessing

    import imageio.v3 as iio

    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    image = {"image": str(asset_path("examples", "blue_cube.png"))}
    fewer = {"reconstruction.steps": 1, "reconstruction.warmup_steps": 1}
    run_pipeline("image-to-4d", image, tmp_path / "one", config_changes=fewer)
    _, events = run_pipeline("image-to-4d", image, tmp_path / "two", config_changes=fewer | {"sampling.processes": 2})
    assert any("sampling the matrix in 2 processes" in getattr(e, "message", "") for e in events)
    one, two = (iio.imread(tmp_path / name / "matrix.png").astype(int) for name in ("one", "two"))
    assert np.abs(one - two).max() <= 1  # float sums may differ in the last bit between batch layouts
    assert not multiprocessing.active_children()
    # A job stopped in the middle of sampling (cancel) takes its follower with it.
    config = Diffusion2Config.preset("preview").override(_flat(TINY) | fewer | {"sampling.processes": 2})
    gen = resolve(get_pipeline("image-to-4d").entry)(image, config, RunContext(tmp_path / "stopped"))
    next(e for e in gen if isinstance(e, Progress) and e.stage == "sampling")
    assert multiprocessing.active_children()
    gen.close()
    assert not multiprocessing.active_children()


def test_motion_candidates_are_what_the_full_run_starts_from(tiny_models, tmp_path, monkeypatch):
    from pipelines.diffusion2.pipeline import motion_candidates

    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    image = {"image": str(asset_path("examples", "red_ball.png"))}
    config = Diffusion2Config.preset("preview").override(_flat(TINY))
    clips = dict(item for item in motion_candidates("image", image, config, [11, 12], RunContext(tmp_path / "c"))
                 if isinstance(item, tuple))
    assert sorted(clips) == [11, 12] and clips[11].shape == (3, 16, 16, 3)
    assert not torch.equal(clips[11], clips[12])
    _, events = run_pipeline("image-to-4d", image, tmp_path / "r", config_changes={"motion_seed": 12})
    ref = next(e for e in events if isinstance(e, Preview) and e.name.startswith("reference")).image
    assert np.abs(ref[:16].astype(int) - _tile(clips[12])).max() <= 1


def _tile(clip):
    return (torch.cat(list(clip), 1).clamp(0, 1) * 255).round().numpy().astype(int)


def test_video_to_4d_uses_the_frames_as_row_zero(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    _, events = run_pipeline("video-to-4d", {"video": str(asset_path("examples", "yellow_walker.mp4"))}, tmp_path)
    logs = " ".join(getattr(e, "message", "") for e in events)
    assert "separated from its background" in logs
    # a clip's caption for the in-house priors names its motion as well (read before recentring)
    caption = logs.split("described the reference as '")[1].split("'")[0]
    assert caption.startswith("a yellow walker ") and "shows no motion" not in logs
    ref = next(e for e in events if isinstance(e, Preview) and e.name.startswith("reference"))
    row0 = ref.image[:16].astype(float)
    assert row0[..., 0].mean() > row0[..., 2].mean() + 5  # yellow subject on black in every frame


def test_a_finer_fit_takes_the_reference_view_from_the_input(tiny_models, tmp_path, monkeypatch):
    """Fitting at twice the matrix's size, the reference view's targets are the video's own frames at that size
    (recentred as the priors saw them), not the matrix's 16-pixel copy of them scaled up."""
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    video = str(asset_path("examples", "yellow_walker.mp4"))
    _, events = run_pipeline("video-to-4d", {"video": video}, tmp_path,
                             config_changes={"reconstruction.resolution": 32})
    fit = [e for e in events if isinstance(e, Preview) and e.name == "matrix vs fit"][-1].image
    target = fit[:32, :32].astype(float) / 255  # the reference view at the middle frame (1 of 3)
    frames = recentre(load_reference(video, "video", frames=3), 32, fill=0.6)
    sharp = frames.composite(0.0)[1].numpy()
    blurred = torch.nn.functional.interpolate(recentre(load_reference(video, "video", frames=3), 16, fill=0.6)
                                              .composite(0.0)[1:2].permute(0, 3, 1, 2), size=(32, 32),
                                              mode="bilinear", antialias=True).permute(0, 2, 3, 1)[0].numpy()
    assert np.abs(target - sharp).max() < 1 / 255 + 1e-6
    assert np.abs(target - blurred).mean() > 0.01


def test_text_to_4d_runs_through_an_image(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    try:
        scene, events = run_pipeline("text-to-4d-d2", {"prompt": "a red ball bouncing"}, tmp_path)
    except InputError as err:  # a random-weight prior may draw no separable subject: the message says so
        assert "generated image" in str(err)
        return
    assert scene.kind == "gaussians"


def test_bad_inputs_get_one_sentence(tmp_path):
    import imageio.v3 as iio

    clear = np.zeros((32, 32, 4), np.uint8)
    iio.imwrite(tmp_path / "clear.png", clear)
    with pytest.raises(InputError, match="transparent everywhere"):
        load_reference(tmp_path / "clear.png", "image")
    noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    iio.imwrite(tmp_path / "noise.png", noise)
    with pytest.raises(InputError, match="not one plain colour"):
        load_reference(tmp_path / "noise.png", "image")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="Cannot read the image"):
        load_reference(tmp_path / "broken.png", "image")
    with pytest.raises(InputError, match="does not exist"):
        load_reference(tmp_path / "missing.mp4", "video", frames=4)
    idx, note = select_frames(3, 5)
    assert idx == [0, 0, 1, 2, 2] and "fewer" in note


def test_an_unreadable_file_is_refused_before_the_run_starts(tiny_models, tmp_path, monkeypatch):
    """The preflight reads the image / video the user named, so the message names their file (not the copy in
    the run folder) and no run folder is made."""
    from pipelines.jobs import JobRunner, JobSpec, PreflightError

    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    notes = tmp_path / "notes.md"
    notes.write_text("# not a video\n")
    with JobRunner(tmp_path / "runs", device="cpu") as runner:
        for pipeline, name, kind in (("video-to-4d", "video", "video"), ("image-to-4d", "image", "image")):
            spec = JobSpec.create(pipeline, inputs={name: str(notes)})
            with pytest.raises(PreflightError, match=f"Cannot read the {kind} notes.md"):
                runner.submit(spec)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_white_background_video_is_separated_and_recentred():
    ref = load_reference(asset_path("examples", "pink_ball_bounce.mp4"), "video", frames=4)
    assert ref.rgb.shape[0] == 4 and 0.01 < float((ref.alpha > 0.5).float().mean()) < 0.5
    centred = recentre(ref, 32, fill=0.6)
    m = (centred.alpha[..., 0] > 0.5).any(0)
    rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
    # The union of the subject over all frames is centred and stays inside the frame ...
    assert abs((rows[0] + rows[-1]) / 2 - 15.5) <= 1.5 and abs((cols[0] + cols[-1]) / 2 - 15.5) <= 1.5
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 0.97 * 32
    # ... while the ball in each frame is about 0.6 of the frame, as a still image of it would be.
    still = recentre(load_reference(asset_path("examples", "red_ball.png"), "image"), 32, fill=0.6)
    for alpha in (centred.alpha, still.alpha):
        for frame in alpha[..., 0] > 0.5:
            r, c = torch.nonzero(frame.any(1)).flatten(), torch.nonzero(frame.any(0)).flatten()
            assert 0.5 * 32 <= max(r[-1] - r[0], c[-1] - c[0]) + 1 <= 0.7 * 32


def test_presets_round_trip_and_paper_values():
    from pipelines.config import config_from_toml, config_to_toml

    for name in ("preview", "standard", "paper"):
        config = Diffusion2Config.preset(name)
        assert config_from_toml(Diffusion2Config, config_to_toml(config)) == config
    paper = Diffusion2Config.preset("paper")
    assert (paper.sampling.views, paper.sampling.frames, paper.resolution, paper.sampling.steps) == (21, 25, 576, 50)
    assert (paper.sampling.rollback_steps, paper.sampling.composition_weight) == (5, 0.5)
    assert (paper.reconstruction.steps, paper.reconstruction.warmup_steps, paper.fovy) == (5000, 3000, 33.8)
    with pytest.raises(ValueError, match="sampling.views"):
        Diffusion2Config.preset("preview").override({"sampling.views": 1})


def test_matrix_fit_puts_the_frames_at_the_given_times():
    """A clip the in-house video prior drew has its frames at f / F (its loop), a reference video at f / (F - 1)."""
    from pipelines.diffusion2.config import ReconstructionConfig
    from pipelines.diffusion2.reconstruct import matrix_fit, matrix_times

    images, masks = torch.zeros(2, 4, 8, 8, 3), torch.zeros(2, 4, 8, 8, 1)
    masks[:, :, 2:6, 2:6] = 1.0
    cameras = matrix_cameras(2, 15.0, 2.7, 40.0, 8)
    config = ReconstructionConfig(gaussians=50)
    assert matrix_fit(images, masks, cameras, config, 0.0).times == matrix_times(4) == [0.0, 1 / 3, 2 / 3, 1.0]
    loop = [0.0, 0.25, 0.5, 0.75]
    assert list(matrix_fit(images, masks, cameras, config, 0.0, times=loop).times) == loop
    with pytest.raises(ValueError, match="3 frame times for a matrix of 4 frames"):
        matrix_fit(images, masks, cameras, config, 0.0, times=loop[:3])


def test_the_result_stands_where_the_input_shows_the_subject():
    """A small subject low and left in the input is recentred and enlarged for the priors; the fitted scene (here
    a ball at the centre, as large as the recentred subject) is put back: seen from the reference camera it
    covers the input's disc again (placement 'input'). With 'centred', the default, it stays as the priors saw it."""
    from pipelines.diffusion2.inputs import Reference
    from pipelines.diffusion2.pipeline import place
    from renderers.gaussian_scene import DeformableGaussianScene
    from renderers.splats import GaussianSet, rgb_to_sh_dc

    size, (cy, cx), radius = 64, (38.0, 24.0), 12.0
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    disc = (((yy - cy) ** 2 + (xx - cx) ** 2).sqrt() < radius).float()[None, ..., None]
    reference = recentre(Reference(torch.full((1, size, size, 3), 0.5), disc), 32, fill=0.6)
    side, right, down = reference.framing
    assert side == pytest.approx(2 * radius / 0.6 / size, rel=0.05)

    config = Diffusion2Config.preset("preview")
    g = torch.Generator().manual_seed(0)
    n = 6000
    d = torch.randn(n, 3, generator=g)
    ball = 0.6 * config.distance * np.tan(np.radians(config.fovy / 2))  # fills 0.6 of the view, as recentred
    means = d / d.norm(dim=-1, keepdim=True) * ball * torch.rand(n, 1, generator=g) ** (1 / 3)
    sh = rgb_to_sh_dc(torch.tensor([0.5, 0.5, 0.5])).expand(n, 1, 3).clone()
    scene = DeformableGaussianScene(GaussianSet(means, torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).clone(),
                                                torch.full((n, 3), -4.0), torch.full((n,), 4.0), sh))
    camera = matrix_cameras(1, config.elevation, config.distance, config.fovy, size)
    with torch.no_grad():
        centred = place(scene, reference.framing, config).render(camera, 0.0)  # the default
        placed = place(scene, reference.framing, config.override({"placement": "input"})).render(camera, 0.0)
    rows, cols = torch.nonzero(centred.alpha[0, ..., 0] > 0.5, as_tuple=True)
    assert abs(float(rows.float().mean()) - 31.5) < 1.5 and abs(float(cols.float().mean()) - 31.5) < 1.5
    assert len(rows) > 2 * float(disc.sum())  # as large as the priors saw it (0.6 of the view)
    covered = placed.alpha[0, ..., 0] > 0.5
    rows, cols = torch.nonzero(covered, as_tuple=True)
    assert abs(float(rows.float().mean() + 0.5) - cy) < 1.5 and abs(float(cols.float().mean() + 0.5) - cx) < 1.5
    iou = float((covered & (disc[0, ..., 0] > 0.5)).sum() / (covered | (disc[0, ..., 0] > 0.5)).sum())
    assert iou > 0.75, (iou, int(covered.sum()), float(disc.sum()))
