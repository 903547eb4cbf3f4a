"""4D-fy (`text-to-4d`): Algorithm 1's schedule, gradients per parameter group, an end-to-end run, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines.config import config_from_toml, config_to_toml
from pipelines.context import RunContext
from pipelines.events import Log, Preview, Progress, SceneUpdate
from pipelines.fourdfy.config import INHOUSE_PRIORS, FourDfyConfig
from pipelines.fourdfy.schedule import (
    UPDATE_3D,
    UPDATE_IMG,
    UPDATE_VID,
    StagePlateau,
    choose_update,
    plan_step,
    stage_of,
)

TINY = dict(steps_stage1=4, steps_stage2=4, steps_stage3=8, samples_per_ray=16, occupancy_resolution=8,
            occupancy_every=4, render_3d=16, render_3d_start=16, native_3d=16, render_img=16, native_img=16,
            render_video=(16, 16), native_video=(16, 16), video_frames=3, preview_every=8, preview_size=16,
            preview_count=3, scene_every=8, camera_fovy=(40.0, 40.0))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A models folder holding a tiny random-weight in-house prior under each of the three role names."""
    from pipelines.models.field_dit import FieldDiT, FieldPriorArch
    from pipelines.models.text import PromptTokenizer

    torch.manual_seed(0)
    arch = FieldPriorArch(resolution=16, downsample=4, width=32, depth=1, heads=2, text_width=32, text_layers=1,
                          vocab_size=PromptTokenizer().vocab_size)
    model = FieldDiT(arch)
    for p in model.parameters():  # break the zero init so the prior's output depends on its input
        p.data.add_(0.05 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("models")
    for name in INHOUSE_PRIORS.values():
        (root / name).mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / name / "model.safetensors")
        (root / name / "config.json").write_text(json.dumps({"arch": arch.to_dict()}))
    return root


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tiny_models))
    return tiny_models


def tiny_config(**changes) -> FourDfyConfig:
    return FourDfyConfig.preset("preview").replace(**{**TINY, **changes})


def run_to_end(gen):
    """All events of a pipeline generator and its return value."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


# -------------------------------------------------------------------- Algorithm 1 as a schedule
def test_paper_preset_states_the_papers_values():
    c = FourDfyConfig.preset("paper")
    assert (c.steps_stage1, c.steps_stage2, c.steps_stage3) == (10_000, 10_000, 100_000)
    assert (c.p_3d, c.p_img) == (0.5, 0.5)
    assert (c.lr_static, c.lr_dynamic, c.lr_mlp, c.lr_static_stage3) == (0.01, 0.01, 0.001, 1e-4)
    assert (c.views_3d, c.render_3d, c.native_3d, c.render_img, c.native_img) == (4, 256, 256, 256, 512)
    assert (c.video_frames, c.render_video, c.native_video) == (16, (160, 288), (320, 576))
    assert (c.prior_multiview, c.prior_image, c.prior_video) == ("mvdream-sd21", "sd21-base", "zeroscope-v2-576w")
    for name in ("preview", "standard", "paper"):
        preset = FourDfyConfig.preset(name)
        assert config_from_toml(FourDfyConfig, config_to_toml(preset)) == preset


def test_stages_follow_algorithm_1():
    c = FourDfyConfig.preset("paper")
    assert stage_of(0, c) == (1, 0) and stage_of(9_999, c) == (1, 9_999)
    assert stage_of(10_000, c) == (2, 0) and stage_of(20_000, c) == (3, 0)
    draws = torch.rand(20_000, generator=torch.Generator().manual_seed(0)).tolist()
    for stage, expected in ((1, {UPDATE_3D: 1.0}), (2, {UPDATE_3D: 0.5, UPDATE_IMG: 0.5}),
                            (3, {UPDATE_3D: 0.5, UPDATE_IMG: 0.25, UPDATE_VID: 0.25})):
        kinds = [choose_update(stage, u, c.p_3d, c.p_img) for u in draws]
        for kind, share in expected.items():
            assert kinds.count(kind) / len(kinds) == pytest.approx(share, abs=0.02)
        assert set(kinds) == set(expected)
    # line 2: dynamic grid frozen (not even evaluated) in stages 1-2; line 11: static rate drops; line 14
    first, second = plan_step(5, 0.9, c), plan_step(15_000, 0.9, c)
    assert (first.dynamic_mode, first.lr_static) == ("off", 0.01)
    assert (second.update, second.dynamic_mode, second.lr_static) == (UPDATE_IMG, "off", 0.01)
    vid, img3 = plan_step(30_000, 0.9, c), plan_step(30_000, 0.6, c)
    assert (vid.update, vid.dynamic_mode, vid.lr_static) == (UPDATE_VID, "train", 1e-4)
    assert (img3.update, img3.dynamic_mode) == (UPDATE_IMG, "frozen")


# -------------------------------------------------------------------- gradients per parameter group
def _grads(hybrid):
    f = hybrid.field
    mlp = [*f.density_mlp.parameters(), *f.albedo_mlp.parameters()]
    return {"static": f.static_grid.table.grad, "dynamic": f.dynamic_grid.table.grad,
            "mlp": mlp[0].grad}


def _has(grad):
    return grad is not None and bool(grad.abs().sum() > 0)


def test_each_update_trains_the_groups_the_paper_says(models_env):
    from pipelines.fourdfy.hybrid import HybridSDS, load_priors, prior_names

    def make(**changes):
        config = tiny_config(**changes)
        priors = load_priors(prior_names(config), torch.device("cpu"), config.lora_rank)
        return HybridSDS("a red ball bouncing", config, priors, seed=0)

    hybrid = make()
    plan, losses = hybrid.step(0, torch.Generator().manual_seed(0))   # stage 1: 3D-aware SDS
    g = _grads(hybrid)
    assert plan.update == UPDATE_3D and "sds_3d" in losses
    assert _has(g["static"]) and _has(g["mlp"]) and g["dynamic"] is None

    hybrid = make(p_3d=0.0)                                            # stage 2, P_3D = 0: VSD + LoRA step
    lora_before = {k: v.clone() for k, v in hybrid.priors.lora.lora_state_dict().items()}
    plan, losses = hybrid.step(4, torch.Generator().manual_seed(1))
    g = _grads(hybrid)
    assert plan.update == UPDATE_IMG and {"vsd", "lora"} <= set(losses)
    assert _has(g["static"]) and _has(g["mlp"]) and g["dynamic"] is None
    after = hybrid.priors.lora.lora_state_dict()
    assert any(not torch.equal(lora_before[k], after[k]) for k in after), "Eq. 5 fine-tuning step missing"

    plan, losses = hybrid.step(8, torch.Generator().manual_seed(2))    # stage 3, P_3D = 0: video SDS
    g = _grads(hybrid)
    assert plan.update == UPDATE_VID and {"sds_video", "temporal"} <= set(losses)
    assert _has(g["dynamic"]) and _has(g["static"]) and _has(g["mlp"])
    lrs = {group["name"]: group["lr"] for group in hybrid.optimizer.param_groups}
    assert lrs["static_grid"] == hybrid.config.lr_static_stage3 and lrs["dynamic_grid"] == hybrid.config.lr_dynamic

    hybrid = make(p_3d=1.0)                                            # stage 3, P_3D = 1: image-based only
    table_before = hybrid.field.dynamic_grid.table.detach().clone()
    plan, _ = hybrid.step(8, torch.Generator().manual_seed(3))
    assert plan.update == UPDATE_3D and hybrid.field.dynamic_mode == "frozen"
    assert _grads(hybrid)["dynamic"] is None
    assert torch.equal(hybrid.field.dynamic_grid.table, table_before)


def test_video_update_renders_at_the_video_priors_frame_times(models_env):
    """The in-house prior's frame f of F is at t = f / F (the world's motions loop over [0, 1)): the field is
    rendered at those times, so the motion it learns is in phase with the prior's and the world's."""
    from pipelines.fourdfy.hybrid import HybridSDS, load_priors, prior_names

    config = tiny_config(p_3d=0.0)
    hybrid = HybridSDS("a red ball bouncing", config, load_priors(prior_names(config), torch.device("cpu"),
                                                                  config.lora_rank), seed=0)
    times, render = [], hybrid.render

    def spy(cameras, t, generator=None):
        times.append(t)
        return render(cameras, t, generator)

    hybrid.render = spy
    plan, _ = hybrid.step(8, torch.Generator().manual_seed(2))
    assert plan.update == UPDATE_VID
    frames = config.video_frames
    assert times == [f / frames for f in range(frames)] == hybrid.priors.video.frame_times(frames)


# -------------------------------------------------------------------- the pipeline
def test_preview_run_end_to_end(models_env, tmp_path):
    from pipelines.registry import get_pipeline, resolve
    from renderers.field_scene import FieldScene
    from renderers.scene import load_scene

    info = get_pipeline("text-to-4d")
    config = tiny_config()
    run = resolve(info.entry)
    context = RunContext(tmp_path / "run", seed=0, checkpoint_every_steps=None, checkpoint_every_s=None)
    events, scene = run_to_end(run({"prompt": "a red ball bouncing"}, config, context))
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.step for p in progress] == list(range(1, config.total_steps + 1))
    stages = [int(p.metrics["stage"]) for p in progress]
    assert stages == [1] * 4 + [2] * 4 + [3] * 8
    assert all(np.isfinite(p.metrics["loss"]) for p in progress) and progress[-1].eta_s is not None
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 4 and previews[0].image.shape == (16, 48, 3) and previews[0].image.dtype == np.uint8
    assert any(isinstance(e, SceneUpdate) for e in events)
    from PIL import Image

    out = tmp_path.parent / "fourdfy_previews"
    out.mkdir(exist_ok=True)
    for i, p in enumerate(previews):
        Image.fromarray(p.image).resize((p.image.shape[1] * 4, p.image.shape[0] * 4)).save(out / f"preview_{i}.png")
    assert isinstance(scene, FieldScene)
    scene.save(tmp_path / "result")
    again = load_scene(tmp_path / "result")
    from renderers.cameras import orbit_cameras

    cams = orbit_cameras(2.7, 15.0, 0.0, 40.0, 16, 16)
    assert torch.allclose(again.render(cams, 0.5).rgb, scene.render(cams, 0.5).rgb, atol=1e-5)
    # The surface sits where the renders put the object, so the viewer's proxy and the exports have one.
    assert again.isosurface_threshold == scene.isosurface_threshold
    assert any("mesh surface at density" in e.message for e in events if isinstance(e, Log))
    assert (scene.render(cams, 0.0).alpha > 0.5).any() and not scene.to_mesh(0.0, resolution=32).is_empty


def test_plateau_detector_waits_for_every_loss_to_stop_falling():
    falling = StagePlateau(patience=5, tolerance=0.01)
    assert not any(falling.update(UPDATE_3D, 1.0 / (1 + i)) for i in range(200))
    flat = StagePlateau(patience=5, tolerance=0.01)
    noise = torch.Generator().manual_seed(0)
    stops = [flat.update(UPDATE_3D, 1.0 + 0.001 * float(torch.randn((), generator=noise))) for i in range(40)]
    assert not any(stops[:5]) and any(stops)  # never before `patience` updates, then yes
    # Two kinds: a flat 3D loss does not end the stage while the VSD loss still falls.
    mixed = StagePlateau(patience=5, tolerance=0.01)
    assert not any([mixed.update(UPDATE_3D, 1.0) or mixed.update(UPDATE_IMG, 1.0 / (1 + i)) for i in range(60)])
    assert not StagePlateau(patience=0).update(UPDATE_3D, 1.0)


def test_early_stop_ends_a_stage_and_keeps_the_schedule(models_env, tmp_path):
    """With a patience no SDS loss survives, stage 1 ends early with one log line; stage 2 still starts at its
    planned step (the schedule is a function of the step) and the run ends at the total."""
    from pipelines.events import Log
    from pipelines.registry import get_pipeline, resolve

    config = tiny_config(steps_stage1=12, steps_stage2=2, steps_stage3=2, early_stop_patience=2,
                         early_stop_tolerance=0.9, preview_every=100, scene_every=100)
    context = RunContext(tmp_path / "run", seed=0, checkpoint_every_steps=None, checkpoint_every_s=None)
    events, _ = run_to_end(resolve(get_pipeline("text-to-4d").entry)({"prompt": "a red ball"}, config, context))
    steps = [(e.step, int(e.metrics["stage"])) for e in events if isinstance(e, Progress)]
    notes = [e.message for e in events if isinstance(e, Log) and "stopped falling" in e.message]
    assert notes and notes[0].startswith("1/3 3D SDS: the guidance losses stopped falling")
    stage1 = [step for step, stage in steps if stage == 1]
    assert len(stage1) < 12 and stage1[-1] == 12 and stage1[:3] == [1, 2, 3]
    assert [step for step, stage in steps if stage == 2][0] == 13
    assert [step for step, stage in steps if stage == 3][0] == 15 and steps[-1][0] == config.total_steps


class _CancelAfter:
    """A cancel flag that turns on at its ``n``-th query (RunContext.step_done asks once per step)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


def test_resume_mid_stage_reproduces_an_uninterrupted_run(models_env, tmp_path):
    from pipelines.context import Cancelled
    from pipelines.fourdfy.pipeline import run

    config = tiny_config(steps_stage3=4, preview_every=100, scene_every=100)
    plain = RunContext(tmp_path / "plain", seed=3, checkpoint_every_steps=None, checkpoint_every_s=None)
    _, reference = run_to_end(run({"prompt": "a blue cube spinning"}, config, plain))

    interrupted = tmp_path / "interrupted"
    first = RunContext(interrupted, seed=3, cancel=_CancelAfter(6), checkpoint_every_steps=None,
                       checkpoint_every_s=None)
    with pytest.raises(Cancelled):
        run_to_end(run({"prompt": "a blue cube spinning"}, config, first))
    assert first.last_checkpoint().step == 6  # in the middle of stage 2
    second = RunContext(interrupted, seed=3, checkpoint_every_steps=None, checkpoint_every_s=None)
    events, resumed = run_to_end(run({"prompt": "a blue cube spinning"}, config, second))
    assert [e.step for e in events if isinstance(e, Progress)] == [7, 8, 9, 10, 11, 12]
    for key, value in reference.field.state_dict().items():
        assert torch.equal(resumed.field.state_dict()[key], value), key


def test_bad_input_fails_before_any_work(tmp_path, monkeypatch):
    from pipelines.fourdfy.pipeline import run
    from pipelines.priors.registry import ModelNotFound

    monkeypatch.setenv("FOURD_MODELS_DIR", str(tmp_path / "empty"))
    context = RunContext(tmp_path / "run")
    with pytest.raises(ValueError, match="needs a prompt"):
        next(run({"prompt": "  "}, tiny_config(), context))
    with pytest.raises(ModelNotFound, match="mvdream-sd21"):
        next(run({"prompt": "a red ball"}, FourDfyConfig.preset("paper"), context))
    assert not (tmp_path / "run").exists()


def test_settings_that_flatten_motion_are_named():
    from pipelines.fourdfy.hybrid import motion_warnings, prior_names

    paper = FourDfyConfig.preset("paper")
    assert motion_warnings(paper, prior_names(paper)) == []
    low = paper.replace(video_frames=4)
    assert any("flatten the motion" in w for w in motion_warnings(low, prior_names(low)))
    still = paper.replace(p_3d=1.0)
    assert any("will not move" in w for w in motion_warnings(still, prior_names(still)))
    frozen = paper.replace(motion_strength=0.0)
    assert any("will not move" in w for w in motion_warnings(frozen, prior_names(frozen)))


@pytest.mark.slow
def test_static_field_can_start_from_a_3d_sample(models_env):
    """The Sherpa3D-style switch: the static field is fitted to a given scene before stage 1."""
    from pipelines.fourdfy.hybrid import HybridSDS, initialise_from_scene, load_priors, prior_names
    from renderers.analytic_scene import render_analytic
    from renderers.cameras import orbit_cameras

    class Analytic:  # the Scene protocol's render is all the initialisation needs
        def render(self, cameras, t):
            return render_analytic(cameras, t)

    config = tiny_config(samples_per_ray=32, camera_distance=(3.0, 3.0))
    priors = load_priors(prior_names(config), torch.device("cpu"), config.lora_rank)
    hybrid = HybridSDS("a red ball", config, priors, seed=0)
    held_out = orbit_cameras(3.0, 25.0, 45.0, 40.0, 24, 24)
    want = render_analytic(held_out, 0.0).alpha > 0.5

    def iou():
        got = hybrid.scene.render(held_out, 0.0).alpha > 0.5
        return float((got & want).sum() / (got | want).sum())

    before = iou()
    initialise_from_scene(hybrid, Analytic(), steps=80, rays=512, seed=0)
    after = iou()
    assert after > max(0.6, before + 0.2), (before, after)


@pytest.mark.slow
def test_the_3d_start_can_be_sampled_from_the_text_to_3d_model(models_env, tmp_path):
    """``init_text_to_3d``: the bundled text-to-3d autodecoder draws an object for the prompt, and the static
    field is fitted to it before stage 1 (with no SDS steps the result is that fit)."""
    from pipelines.autodecoder.pipeline import TextTo3DConfig, sample_for_prompt
    from pipelines.events import Log
    from pipelines.fourdfy.pipeline import run
    from renderers.cameras import orbit_cameras

    config = tiny_config(init_text_to_3d=True, init_steps=80, steps_stage1=0, steps_stage2=0, steps_stage3=0)
    context = RunContext(tmp_path / "run", seed=0, checkpoint_every_steps=None, checkpoint_every_s=None)
    events, scene = run_to_end(run({"prompt": "a red ball bouncing"}, config, context))
    lines = [e.message for e in events if isinstance(e, Log)]
    assert any("text-to-3d autodecoder, conditioned on shape sphere, colour red" in line for line in lines), lines
    sample, _ = sample_for_prompt("a red ball bouncing", TextTo3DConfig(), "cpu", context.generator(offset=-1))
    cams = orbit_cameras(2.7, 25.0, torch.tensor([45.0, 200.0]), 40.0, 24, 24)
    with torch.no_grad():
        want, got = sample.render(cams, 0.0), scene.render(cams, 0.0)
    iou = float(((got.alpha > 0.5) & (want.alpha > 0.5)).sum() / ((got.alpha > 0.5) | (want.alpha > 0.5)).sum())
    assert iou > 0.6, iou
    assert float((got.rgb - want.rgb).abs().mean()) < 0.05


def test_the_starting_density_blob_follows_the_config(models_env):
    from pipelines.config import ConfigError
    from pipelines.fourdfy.hybrid import HybridSDS, load_priors, prior_names

    config = tiny_config(density_blob_scale=3.0, density_blob_std=0.4)
    hybrid = HybridSDS("a red ball", config, load_priors(prior_names(config), torch.device("cpu"), config.lora_rank))
    bias = hybrid.field.density_bias(torch.tensor([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0]]))
    assert torch.allclose(bias, torch.tensor([3.0, 0.0]), atol=1e-6)
    with pytest.raises(ConfigError, match="density_blob_std"):
        tiny_config(density_blob_std=0.0)


def test_dark_matter_loss_empties_density_only_where_it_shows_no_colour(models_env):
    """Black matter is invisible over the prior's black background: the loss removes its density and leaves
    the albedo alone (brightening it would be the cheap way out), and it ignores matter that shows a colour."""
    from pipelines.config import ConfigError
    from pipelines.fourdfy.hybrid import HybridSDS, load_priors, prior_names

    config = tiny_config(lambda_dark=10.0)
    hybrid = HybridSDS("a red ball", config, load_priors(prior_names(config), torch.device("cpu"), config.lora_rank))
    field, centre = hybrid.field, torch.zeros(1, 3)
    last = field.albedo_mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(4.0)  # a bright albedo everywhere: nothing to remove
    assert float(hybrid._dark_matter(0.0, torch.Generator().manual_seed(0))) == 0.0
    with torch.no_grad():
        last.bias.fill_(-8.0)  # a black albedo everywhere: the starting blob is black matter
    before = float(field.density(centre, 0.0))
    optimizer = torch.optim.Adam(field.param_groups(0.02, 0.02, 0.005), betas=(0.9, 0.99), eps=1e-15)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        optimizer.zero_grad(set_to_none=True)
        loss = hybrid._dark_matter(0.0, generator)
        loss.backward()
        assert last.bias.grad is None or float(last.bias.grad.abs().max()) == 0.0
        optimizer.step()
    assert before > 5.0 and float(field.density(centre, 0.0)) < 0.1 * before
    assert torch.equal(last.bias, torch.full((3,), -8.0))
    with pytest.raises(ConfigError, match="dark_albedo"):
        tiny_config(dark_albedo=0.0)


def test_white_steps_render_over_white_and_tell_the_priors(models_env):
    """p_white: a step renders over white instead of the scene's black with that chance, and every prior the
    step asks is told the background it sees (Conditioning.background); video updates only with white_video."""
    from pipelines.fourdfy.hybrid import HybridSDS, background_warnings, load_priors, multiview_cameras, prior_names

    def run(steps: int = 8, **changes) -> tuple[HybridSDS, dict[str, set]]:
        config = tiny_config(**changes)
        priors = load_priors(prior_names(config), torch.device("cpu"), config.lora_rank)
        seen: dict[str, set] = {}
        for prior in {id(d): d for d in (priors.multiview, priors.image, priors.video)}.values():
            def spy(x_t, level, cond, real=prior.forward, name=prior.name):
                seen.setdefault(name, set()).add(cond.background)
                return real(x_t, level, cond)
            prior.forward = spy
        hybrid = HybridSDS("a red ball", config, priors)
        generator = torch.Generator().manual_seed(0)
        for step in range(steps):
            hybrid.step(step, generator)
        return hybrid, seen

    video = tiny_config().prior_video
    hybrid, seen = run(16, p_white=1.0, white_video=True)
    assert video in seen and all(levels == {1.0} for levels in seen.values())
    hybrid, seen = run(16, p_white=1.0)
    assert seen.pop(video) == {0.0} and seen and all(levels == {1.0} for levels in seen.values())
    generator = torch.Generator().manual_seed(1)
    assert hybrid._pick_backdrop(generator) == 1.0
    out = hybrid.render(multiview_cameras(hybrid.config, 16, generator), 0.0, generator)
    empty = out.alpha[..., 0] < 0.01
    assert empty.any() and torch.allclose(out.rgb[empty], torch.ones(3), atol=0.02)
    assert set().union(*run(p_white=0.5)[1].values()) == {0.0, 1.0}
    hybrid, seen = run(4, p_white=0.0)
    assert set().union(*seen.values()) == {0.0} and hybrid.backdrop is hybrid.scene.background
    # the tiny priors learned black only: a run that asks for white steps is told so, naming them
    warning = background_warnings(hybrid.config.replace(p_white=0.5), hybrid.priors)
    assert len(warning) == 1 and "inhouse-t2mv" in warning[0] and "black backgrounds only" in warning[0]
    assert background_warnings(hybrid.config, hybrid.priors) == []


def test_the_3d_start_is_checked_before_the_run(tmp_path):
    from pipelines.config import ConfigError
    from pipelines.fourdfy.hybrid import preflight

    with pytest.raises(ConfigError, match="set one"):
        tiny_config(init_text_to_3d=True, init_scene=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a saved scene"):
        preflight({"prompt": "a red ball"}, tiny_config(init_scene=str(tmp_path / "nowhere")))
    preflight({"prompt": "a red ball"}, tiny_config(init_text_to_3d=True))  # the bundled autodecoder is there


class _OracleMultiView:
    """A 'perfect' multi-view prior for the analytic scene: its x0 prediction is the exact render of the
    ball-and-box scene from the conditioning cameras, so 3D-aware SDS must pull the field towards that
    scene. It checks the wiring (camera conventions, latent layout, gradient sign), not a learned prior."""

    def __new__(cls):
        from pipelines.priors.denoiser import Conditioning, Denoiser
        from pipelines.priors.inhouse import cosine_schedule
        from renderers.analytic_scene import render_analytic
        from renderers.cameras import Cameras, intrinsics_from_fov

        class Oracle(Denoiser):
            name = "inhouse-oracle"  # in-house camera conditioning: flattened c2w
            parameterization = "sample"
            latent_channels, downsample = 3, 1

            def __init__(self):
                super().__init__()
                self.schedule = cosine_schedule()
                self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

            def encode_prompt(self, prompts):
                return Conditioning(text=torch.zeros(len(prompts), 1, 1))

            def encode_images(self, images, chunk=8):
                return images

            def forward(self, x_t, level, cond):
                b, v, f, _, h, w = x_t.shape
                c2w = cond.cameras.reshape(-1, 4, 4)[:v].float()
                cams = Cameras(c2w, intrinsics_from_fov(40.0, w, h).expand(v, 3, 3), w, h)
                target = render_analytic(cams, 0.0).rgb.permute(0, 3, 1, 2)
                return target[None, :, None].expand(b, v, f, 3, h, w).to(x_t)

        return Oracle()


def test_3d_sds_with_an_oracle_prior_recovers_the_scene(models_env):
    from pipelines.fourdfy.hybrid import HybridSDS, Priors, attach_lora
    from pipelines.priors.registry import load_prior
    from renderers.analytic_scene import render_analytic
    from renderers.cameras import orbit_cameras

    config = tiny_config(steps_stage1=60, samples_per_ray=32, camera_distance=(3.0, 3.0), guidance_3d=1.0,
                         t_range_3d=(0.02, 0.6), t_range_3d_end=(0.02, 0.3), lambda_sparsity=0.0,
                         lambda_opaque=0.0, lr_static=0.03, lr_mlp=0.01)
    oracle = _OracleMultiView()
    image = load_prior("inhouse-t2i")
    hybrid = HybridSDS("a red ball", config, Priors(oracle, image, oracle, attach_lora(image, 4)), seed=0)
    held_out = orbit_cameras(3.0, 25.0, 45.0, 40.0, 24, 24)
    want = render_analytic(held_out, 0.0)

    def scores():
        got = hybrid.scene.render(held_out, 0.0)
        a, b = got.alpha > 0.5, want.alpha > 0.5
        return float((a & b).sum() / (a | b).sum()), float(((got.rgb - want.rgb) ** 2).mean())

    iou0, err0 = scores()
    for step in range(config.steps_stage1):
        hybrid.step(step, torch.Generator().manual_seed(step))
    iou1, err1 = scores()
    assert iou1 > max(0.5, iou0 + 0.15) and err1 < 0.6 * err0, (iou0, iou1, err0, err1)


@pytest.mark.slow
def test_public_model_adapters_plug_in(tiny_models, tmp_path, monkeypatch):
    """VSD with the camera LoRA on a (tiny, random) Stable Diffusion UNet and video SDS through a (tiny)
    Zeroscope, chosen with ``--prior ROLE=NAME`` overrides: the same step code as the in-house roles."""
    from pipelines.fourdfy.hybrid import HybridSDS, load_priors, prior_names
    from pipelines.priors.tiny_models import write_tiny_sd, write_tiny_zeroscope

    for name in INHOUSE_PRIORS.values():
        (tmp_path / name).symlink_to(tiny_models / name)
    write_tiny_sd(tmp_path / "sd21-base")
    write_tiny_zeroscope(tmp_path / "zeroscope-v2-576w")
    monkeypatch.setenv("FOURD_MODELS_DIR", str(tmp_path))
    config = tiny_config(p_3d=0.0, native_img=64, native_video=(64, 64), video_frames=2)
    names = prior_names(config, {"text-to-image": "sd21-base", "prior_video": "zeroscope-v2-576w"})
    assert names == {"text-to-multiview": "inhouse-t2mv", "text-to-image": "sd21-base",
                     "text-to-video": "zeroscope-v2-576w"}
    hybrid = HybridSDS("a red ball", config, load_priors(names, torch.device("cpu"), 2), seed=0)
    for step, kind, loss in ((4, UPDATE_IMG, "vsd"), (8, UPDATE_VID, "sds_video")):
        plan, losses = hybrid.step(step, torch.Generator().manual_seed(step))
        assert plan.update == kind and np.isfinite(losses[loss]) and _has(_grads(hybrid)["static"])
    assert _has(_grads(hybrid)["dynamic"])


# -------------------------------------------------------------------- memory profiles
def test_memory_profile_follows_the_free_memory():
    from pipelines.fourdfy.memory import GIB, choose_profile, estimate, profile_overrides

    paper = FourDfyConfig.preset("paper")
    counts = {"mvdream-sd21": 1_290_000_000, "sd21-base": 1_290_000_000, "zeroscope-v2-576w": 1_840_000_000}
    field_params = 34_000_000
    peaks = {p: estimate(paper.replace(**profile_overrides(p, paper)), counts, field_params).peak
             for p in ("full", "balanced", "low")}
    assert peaks["full"] > peaks["balanced"] > peaks["low"]
    assert choose_profile(paper, None, counts, field_params)[0] == "full"  # a CPU: the config as written
    assert choose_profile(paper, int(peaks["full"] / 0.85), counts, field_params)[0] == "full"
    assert choose_profile(paper, int(peaks["balanced"] / 0.85), counts, field_params)[0] == "balanced"
    name, low, lines = choose_profile(paper, int(peaks["low"] / 0.85), counts, field_params)
    assert name == "low" and low.offload_priors and low.prior_dtype == "float16" and low.encode_checkpointing
    assert low.video_frames == 8 and any("8 video frames instead of 16" in line for line in lines)
    name, _, lines = choose_profile(paper, 4 * GIB, counts, field_params)
    assert name == "low" and any("may run out of memory" in line for line in lines)
    # The profiles never go under the 8 frames below which public video priors flatten the motion.
    assert profile_overrides("low", paper.replace(video_frames=4))["video_frames"] == 4
    chosen = choose_profile(paper.replace(memory_profile="balanced"), 1000 * GIB, counts, field_params)[1]
    assert chosen.memory_profile == "balanced" and chosen.video_frames == 16


def test_encoder_checkpointing_keeps_gradients_and_frees_activations(tmp_path):
    """encode_checkpointing recomputes the VAE encoder in the backward pass: the same gradient on the render,
    and autograd keeps a small fraction of the bytes."""
    from pipelines.fourdfy.memory import saved_bytes
    from pipelines.priors.registry import load_prior
    from pipelines.priors.tiny_models import write_tiny_sd

    sd = load_prior("sd21-base", path=write_tiny_sd(tmp_path / "sd"))
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    grads, kept = [], []
    for on in (False, True):
        sd.encode_checkpointing = on
        images.grad = None
        kept.append(saved_bytes(lambda: sd.encode_images(images, chunk=1)))
        sd.encode_images(images, chunk=1).square().sum().backward()
        grads.append(images.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert kept[1] < 0.1 * kept[0], kept


def test_a_memory_profile_runs_end_to_end_and_says_so(models_env, tmp_path):
    from pipelines.events import Log
    from pipelines.registry import get_pipeline, resolve

    config = tiny_config(memory_profile="low", prior_dtype="bfloat16", steps_stage1=2, steps_stage2=2,
                         steps_stage3=2)
    context = RunContext(tmp_path / "run", seed=0, checkpoint_every_steps=None, checkpoint_every_s=None)
    events, scene = run_to_end(resolve(get_pipeline("text-to-4d").entry)({"prompt": "a red ball"}, config, context))
    assert any(isinstance(e, Log) and e.message.startswith("memory profile 'low': estimated peak about")
               for e in events)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].step == 6 and all(np.isfinite(p.metrics["loss"]) for p in progress)


@pytest.mark.gpu
def test_offloaded_priors_move_in_for_their_own_update(models_env):
    from pipelines.fourdfy.hybrid import HybridSDS, load_priors, prior_names

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    config = tiny_config(offload_priors=True, p_3d=1.0)
    hybrid = HybridSDS("a red ball", config, load_priors(prior_names(config), torch.device("cpu"), 2),
                       device="cuda")
    hybrid.step(0, torch.Generator().manual_seed(0))
    assert hybrid.priors.multiview.device.type == "cuda"
    assert hybrid.priors.video.device.type == "cpu" and hybrid.priors.image.device.type == "cpu"


def test_render_checkpointing_gives_the_same_images_and_gradients(models_env):
    from pipelines.fourdfy.hybrid import HybridSDS, load_priors, multiview_cameras, prior_names
    from pipelines.fourdfy.memory import saved_bytes

    config = tiny_config(render_checkpointing=True)
    hybrid = HybridSDS("a red ball", config, load_priors(prior_names(config), torch.device("cpu"), 2))
    cams = multiview_cameras(config, 16, torch.Generator().manual_seed(0))
    results, kept = [], []
    for recompute in (False, True):
        hybrid.optimizer.zero_grad(set_to_none=True)
        out = hybrid.render_seeded(cams, 0.0, torch.Generator().manual_seed(3), recompute=recompute)
        (out.rgb.square().sum() + out.alpha.sum()).backward()
        results.append((out.rgb.detach(), {n: p.grad.clone() for n, p in hybrid.field.named_parameters()
                                           if p.grad is not None}))
        kept.append(saved_bytes(lambda r=recompute: hybrid.render_seeded(cams, 0.0, torch.Generator().manual_seed(3),
                                                                         recompute=r).rgb))
    assert torch.equal(results[0][0], results[1][0]) and results[0][1]
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-4, atol=1e-7)
    assert kept[1] < 0.2 * kept[0], kept
    # the step uses it: a 3D update renders camera by camera and still trains the field
    _, losses = hybrid.step(0, torch.Generator().manual_seed(0))
    assert np.isfinite(losses["sds_3d"])
