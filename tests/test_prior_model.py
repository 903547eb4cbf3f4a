"""The in-house field prior behind the denoiser interface: layouts, roles, guidance, registry names."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from pipelines.models.field_dit import FieldDiT, FieldPriorArch, images_to_latents, latents_to_images
from pipelines.models.text import PromptTokenizer
from pipelines.priors.inhouse import ROLE_OF_NAME, default_cameras, sample
from pipelines.priors.registry import list_models, load_prior


def exported(folder, arch: FieldPriorArch, model: FieldDiT):
    """``model`` written as an exported prior (model.safetensors + config.json) into ``folder``."""
    folder.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"arch": arch.to_dict()}))
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A randomly initialised tiny prior saved as the bundled layout (config.json + model.safetensors)."""
    torch.manual_seed(0)
    arch = FieldPriorArch(resolution=16, downsample=4, width=32, depth=2, heads=2, text_width=32, text_layers=1,
                          vocab_size=PromptTokenizer().vocab_size)
    model = FieldDiT(arch)
    for p in model.parameters():  # break the zero init so every input matters
        p.data.add_(0.05 * torch.randn_like(p))
    return exported(tmp_path_factory.mktemp("tiny_prior"), arch, model)


def test_latents_are_an_exact_space_to_depth():
    images = torch.rand(2, 3, 16, 16)
    z = images_to_latents(images, 4)
    assert z.shape == (2, 48, 4, 4)
    assert torch.allclose(latents_to_images(z, 4), images, atol=1e-6)


@pytest.mark.parametrize("name, views, frames", [("inhouse-t2i", 1, 1), ("inhouse-t2mv", 4, 1),
                                                 ("inhouse-t2v", 1, 4), ("inhouse-i2v", 1, 3),
                                                 ("inhouse-i2orbit", 4, 1)])
def test_every_role_denoises_its_layout(tiny_folder, name, views, frames):
    prior = load_prior(name, tiny_folder)
    assert prior.role == ROLE_OF_NAME[name]
    g = torch.Generator().manual_seed(1)
    reference = torch.rand(2, 3, 16, 16, generator=g)
    if name in ("inhouse-i2v", "inhouse-i2orbit"):
        cond = prior.encode_image_condition(reference, "a red ball")
    else:
        cond = prior.encode_prompt(["a red ball bouncing", "a blue dragon"])  # unknown word: no crash
    if views == 4:
        cond.cameras = default_cameras(4, prior.arch, azimuth0=30.0)[0].reshape(1, 4, 16).expand(2, -1, -1)
    x = torch.randn(2, views, frames, 48, 4, 4, generator=g)
    out = prior.predict(x, torch.tensor([500.0, 900.0]), cond, guidance_scale=3.0)
    assert out.raw.shape == x.shape and torch.isfinite(out.raw).all()
    if name in ("inhouse-i2v", "inhouse-i2orbit"):  # view/frame 0 is the reference itself
        assert torch.allclose(out.x0[:, 0, 0], prior.encode_images(reference), atol=1e-4)
    latents = sample(prior, cond, views=views, frames=frames, steps=3, generator=g)
    assert latents.shape == x.shape
    images = prior.decode_latents(latents.flatten(0, 2))
    assert images.shape == (2 * views * frames, 3, 16, 16)


def test_guidance_combines_conditional_and_unconditional(tiny_folder):
    prior = load_prior("inhouse-t2v", tiny_folder)
    cond = prior.encode_prompt(["a red ball bouncing"])
    x = torch.randn(1, 1, 2, 48, 4, 4)
    level = torch.tensor([400.0])
    with torch.no_grad():
        pos = prior.predict(x, level, cond).raw
        neg = prior.predict(x, level, prior.uncond(cond)).raw
        guided = prior.predict(x, level, cond, guidance_scale=5.0).raw
    assert not torch.allclose(pos, neg)
    assert torch.allclose(guided, neg + 5.0 * (pos - neg), atol=1e-4)


def test_tokens_see_their_coordinates(tiny_folder):
    """Cameras and frame times change the prediction: the tokens carry them."""
    prior = load_prior("inhouse-t2mv", tiny_folder)
    cond = prior.encode_prompt(["a red ball"])
    x = torch.randn(1, 4, 1, 48, 4, 4)
    a = prior(x, torch.tensor([300.0]), cond)
    cond.cameras = default_cameras(4, prior.arch, azimuth0=90.0)[0].reshape(1, 4, 16)
    b = prior(x, torch.tensor([300.0]), cond)
    assert not torch.allclose(a, b)
    video = load_prior("inhouse-t2v", tiny_folder)
    frames = video(x.reshape(1, 1, 4, 48, 4, 4), torch.tensor([300.0]), video.encode_prompt(["a red ball"]))
    assert not torch.allclose(frames.reshape(a.shape), a)


def small_model_and_inputs(batch: int, seed: int, **arch_changes):
    """A 16 px FieldDiT with ``arch_changes`` and weights moved off their zero init, and the inputs of a
    ``batch`` of 2-view sets at one noise level: (arch, model, x, args after x)."""
    torch.manual_seed(seed)
    arch = FieldPriorArch(resolution=16, downsample=4, width=32, depth=1, heads=2, text_width=32, text_layers=1,
                          vocab_size=PromptTokenizer().vocab_size, **arch_changes)
    model = FieldDiT(arch).eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    c2w, K = default_cameras(2, arch)
    args = (torch.tensor([300.0] * batch), model.encode_text(PromptTokenizer().encode(["a red ball"] * batch)),
            c2w.expand(batch, -1, -1, -1), K.expand(batch, -1, -1, -1), torch.zeros(batch, 2),
            torch.zeros(batch, 2, dtype=torch.bool))
    return arch, model, torch.randn(batch, 2, 48, 4, 4), args


def test_a_heading_model_sees_the_heading_and_the_roles_choose_it(tmp_path):
    """arch.heading: a heading changes the prediction, NaN is "unknown", a model without the input ignores
    it; the text roles ask for heading 0 (the canonical pose) and the image roles for none."""
    arch, model, x, args = small_model_and_inputs(3, seed=1, heading=True)
    nan = float("nan")
    with torch.no_grad():
        out = model(x, *args, torch.tensor([0.0, 1.0, nan]))
        assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
        # per item: the same item at the same heading gives the same answer in any batch
        assert torch.allclose(model(x[1:2], *(a[1:2] for a in args), torch.tensor([1.0])), out[1:2], atol=1e-5)
        # None means unknown for every item
        assert torch.allclose(model(x, *args), model(x, *args, torch.full((3,), nan)))
        plain = FieldDiT(FieldPriorArch(**{**arch.to_dict(), "heading": False}))
        assert torch.equal(plain(x, *args, torch.tensor([0.0, 1.0, nan])), plain(x, *args))
    folder = exported(tmp_path / "prior", arch, model)
    assert {n: load_prior(n, folder).heading for n in ROLE_OF_NAME} == {
        "inhouse-t2i": 0.0, "inhouse-t2mv": 0.0, "inhouse-t2v": 0.0, "inhouse-i2v": None, "inhouse-i2orbit": None}
    orbit = load_prior("inhouse-t2mv", folder)
    cond = orbit.encode_prompt(["a red ball"])
    xs = torch.randn(1, 2, 1, 48, 4, 4)
    a = orbit(xs, torch.tensor([300.0]), cond)
    orbit.heading = 1.0
    assert not torch.allclose(orbit(xs, torch.tensor([300.0]), cond), a)


def test_a_background_model_is_told_the_background_through_the_conditioning(tmp_path):
    """arch.background: the grey level changes the prediction, a model without the input ignores it, and the
    prior role reads it from Conditioning.background, guided and unguided alike."""
    from dataclasses import replace

    arch, model, x, args = small_model_and_inputs(2, seed=2, background=True)
    args = (*args, None)  # no heading input
    with torch.no_grad():
        out = model(x, *args, torch.tensor([0.0, 1.0]))
        assert torch.allclose(model(x, *args), model(x, *args, torch.zeros(2)))  # None is black
        assert not torch.allclose(out[1], model(x, *args)[1])
        plain = FieldDiT(FieldPriorArch(**{**arch.to_dict(), "background": False}))
        assert torch.equal(plain(x, *args, torch.ones(2)), plain(x, *args))
    folder = exported(tmp_path / "prior", arch, model)
    prior = load_prior("inhouse-t2mv", folder)
    cond = prior.encode_prompt(["a red ball"])
    xs, level = torch.randn(1, 2, 1, 48, 4, 4), torch.tensor([300.0])
    white = replace(cond, background=1.0)
    assert prior.uncond(white).background == 1.0
    with torch.no_grad():
        assert not torch.allclose(prior(xs, level, white), prior(xs, level, cond))
        assert not torch.allclose(prior.predict(xs, level, white, guidance_scale=3.0).x0,
                                  prior.predict(xs, level, cond, guidance_scale=3.0).x0)


def test_a_self_conditioning_model_reads_its_estimate_and_the_sampler_hands_it_on(tmp_path):
    """arch.self_condition: an estimate changes the prediction, None is no estimate (zeros), a model without the
    input ignores it; the prior role reads Conditioning.estimate (zeroed on a clean reference view), and
    :func:`sample` gives each step the previous step's x0."""
    from dataclasses import replace

    from pipelines.priors.inhouse import FieldPrior, sample

    arch, model, x, args = small_model_and_inputs(2, seed=3, self_condition=True)
    args = (*args, None, None)  # no heading, no background
    estimate = torch.randn_like(x)
    with torch.no_grad():
        out = model(x, *args, estimate)
        assert torch.allclose(model(x, *args), model(x, *args, torch.zeros_like(x)), atol=1e-6)
        assert not torch.allclose(out, model(x, *args), atol=1e-3)
        plain = FieldDiT(FieldPriorArch(**{**arch.to_dict(), "self_condition": False}))
        assert torch.equal(plain(x, *args, estimate), plain(x, *args))
    folder = exported(tmp_path / "prior", arch, model)
    prior = load_prior("inhouse-t2mv", folder)
    cond = prior.encode_prompt(["a red ball"])
    xs, level = torch.randn(1, 2, 1, 48, 4, 4), torch.tensor([300.0])
    with torch.no_grad():
        told = replace(cond, estimate=torch.randn_like(xs))
        assert not torch.allclose(prior.predict(xs, level, told, guidance_scale=3.0).x0,
                                  prior.predict(xs, level, cond, guidance_scale=3.0).x0)
        # a clean reference view (image roles) is never given an estimate of itself
        orbit = load_prior("inhouse-i2orbit", folder)
        ref = orbit.encode_image_condition(torch.rand(1, 3, 16, 16), "a red ball")
        a = orbit(xs, level, replace(ref, estimate=torch.cat([torch.randn_like(xs[:, :1]), xs[:, 1:]], 1)))
        b = orbit(xs, level, replace(ref, estimate=torch.cat([torch.zeros_like(xs[:, :1]), xs[:, 1:]], 1)))
        assert torch.allclose(a, b, atol=1e-6)

    seen = []

    class Recording(FieldPrior):
        def predict(self, x_t, level, cond, guidance_scale=1.0, uncond=None):
            pred = super().predict(x_t, level, cond, guidance_scale, uncond)
            seen.append((cond.estimate, pred.x0))
            return pred

    for recorder, handed_on in ((Recording(prior.model, prior.role, prior.name), True),
                                (Recording(plain.eval(), prior.role, prior.name), False)):
        seen.clear()
        sample(recorder, cond, views=2, steps=4, generator=torch.Generator().manual_seed(0))
        assert len(seen) == 4 and seen[0][0] is None
        for (_, x0), (given, _) in zip(seen, seen[1:]):
            assert (given is not None and torch.equal(given, x0)) if handed_on else given is None


def test_the_object_frame_makes_an_orbiting_or_walking_object_sit_where_its_time_says():
    """object_frame: seen from cameras turned into the object's frame, an orbiting or walking object of any yaw
    is where the same object at yaw 0 is, seen from the untouched cameras."""
    import dataclasses
    import math

    from pipelines.models.field_dit import object_frame
    from pipelines.world.grammar import WorldSpec
    from pipelines.world.sdf import pose_at

    arch = FieldPriorArch(vocab_size=1)
    c2w = default_cameras(4, arch, azimuth0=20.0)[0][None]                        # [1, 4, 4, 4]
    times = torch.tensor([0.0, 0.3, 0.7])
    for spec in (WorldSpec("cube", "red", "orbit", "matte", "medium"), WorldSpec("walker", "red", "walk")):
        canonical = pose_at(spec, times).centre
        for yaw in (35.0, -120.0):
            centre = pose_at(dataclasses.replace(spec, yaw=yaw), times).centre      # [3, 3] world positions
            assert not torch.allclose(centre, canonical, atol=1e-3)
            turned = object_frame(c2w, torch.tensor([math.radians(yaw)]))[0]
            in_camera = torch.linalg.solve(c2w[0], torch.cat([centre, torch.ones(3, 1)], -1).T[None])
            in_turned = torch.linalg.solve(turned, torch.cat([canonical, torch.ones(3, 1)], -1).T[None])
            assert torch.allclose(in_camera, in_turned, atol=1e-5)
    assert torch.equal(object_frame(c2w, torch.zeros(1)), c2w)


def test_registry_names_the_five_roles():
    names = {spec.name for spec in list_models()}
    assert set(ROLE_OF_NAME) <= names


def test_bundled_checkpoint_is_found_and_samples():
    """With nothing in the models folder, the five names load the checkpoint shipped in assets."""
    from assets import asset_path
    from pipelines.priors.registry import installed_path

    bundled = asset_path("checkpoints", "inhouse-field-prior")
    assert installed_path("inhouse-t2i") == bundled
    assert (bundled / "model.safetensors").stat().st_size < 20_000_000
    prior = load_prior("inhouse-t2mv")
    cond = prior.encode_prompt(["a red ball bouncing"])
    latents = sample(prior, cond, views=4, steps=2, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (1, 4, 1, prior.latent_channels, 8, 8) and torch.isfinite(latents).all()


@pytest.mark.parametrize("sharing", [0.0, 0.5, 1.0])
def test_noise_sharing_sets_the_correlation_of_the_starting_noise(tiny_folder, sharing):
    """With one denoising step of a prior that predicts zero noise, x = x_T: its frames correlate by ``sharing``."""
    prior = load_prior("inhouse-t2v", tiny_folder)
    cond = prior.encode_prompt(["a red ball"] * 64)
    captured = []
    predict = prior.predict

    def spy(x, *args, **kwargs):
        captured.append(x.clone())
        return predict(x, *args, **kwargs)

    prior.predict = spy
    sample(prior, cond, frames=2, steps=1, generator=torch.Generator().manual_seed(0), noise_sharing=sharing)
    start = captured[0]
    a, b = start[:, 0, 0].flatten(), start[:, 0, 1].flatten()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1]) - sharing) < 0.03
    assert abs(float(start.std()) - 1.0) < 0.03
    with pytest.raises(ValueError, match="noise_sharing"):
        sample(prior, cond, frames=2, steps=1, noise_sharing=1.5)


def test_frame_times_are_the_times_the_tokens_carry(tiny_folder):
    """The in-house prior's frame f of F is at f / F; a model without times spans [0, 1]."""
    from pipelines.priors.denoiser import Denoiser

    prior = load_prior("inhouse-t2v", tiny_folder)
    assert prior.frame_times(4) == [0.0, 0.25, 0.5, 0.75]
    _, _, times = prior._view_coordinates(prior.encode_prompt(["a red ball"]), 1, 1, 4, "cpu")
    assert times.flatten().tolist() == prior.frame_times(4)
    assert Denoiser.frame_times(prior, 3) == [0.0, 0.5, 1.0] and Denoiser.frame_times(prior, 1) == [0.0]


def test_a_prior_warns_about_the_motions_its_own_evaluation_found_weak(tiny_folder, tmp_path):
    """The prompt check of a loaded prior reads the figures next to its weights (evaluation/evaluation.json):
    a prior without them names unknown words only."""
    import shutil

    from pipelines.priors.inhouse import load_field_prior

    plain = load_field_prior(tiny_folder, "text-to-multiview", "inhouse-t2mv")
    assert plain.shape_by_motion == {} and plain.prompt_warning("a pink ball that orbits") is None
    assert "'dragon'" in plain.prompt_warning("a pink dragon that orbits")
    folder = shutil.copytree(tiny_folder, tmp_path / "evaluated")
    (folder / "evaluation").mkdir()
    figures = {"orbit": {"prompts": 4, "shape": 0.25}, "spin": {"prompts": 4, "shape": 1.0}}
    (folder / "evaluation" / "evaluation.json").write_text(json.dumps({"shape by motion": {"samples": figures}}))
    evaluated = load_field_prior(folder, "text-to-multiview", "inhouse-t2mv")
    assert "1 of 4" in evaluated.prompt_warning("a pink ball that orbits")
    assert evaluated.prompt_warning("a pink ball spinning") is None
