"""Every adapter on a tiny random-weight model of its real architecture, loaded through the registry."""

import json
from dataclasses import replace

import pytest
import torch

from pipelines.priors import load_prior
from pipelines.priors.guidance import lora_loss, lora_train_step, render_latents, sds_loss, vsd_loss
from pipelines.priors.lora import CameraLoRA
from pipelines.priors.tiny_models import write_tiny_sd, write_tiny_svd, write_tiny_zeroscope


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models are all overhead: one thread avoids OpenMP barriers that stall when the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    """A models folder as `fourd models download` would leave it, with tiny weights."""
    from diffusers import UNet2DConditionModel

    from pipelines.priors.mvdream import mvdream_unet_config, to_original_keys

    root = tmp_path_factory.mktemp("models")
    write_tiny_sd(root / "sd21-base")
    write_tiny_sd(root / "sd-v", prediction_type="v_prediction")
    write_tiny_zeroscope(root / "zeroscope-v2-576w")
    write_tiny_svd(root / "svd-xt")
    write_tiny_svd(root / "sv3d-p", sv3d=True)
    config = mvdream_unet_config(json.loads((root / "sd21-base" / "unet" / "config.json").read_text()))
    torch.manual_seed(3)
    reference = UNet2DConditionModel.from_config(config)
    (root / "mvdream-sd21").mkdir()
    torch.save(to_original_keys(reference.state_dict(), config), root / "mvdream-sd21" / "sd-v2.1-base-4view.pt")
    torch.save(reference.state_dict(), root / "mvdream-reference.pt")
    return root


@pytest.fixture
def models(models_root, monkeypatch):
    monkeypatch.setenv("FOURD_MODELS_DIR", str(models_root))
    return models_root


@pytest.fixture(scope="module")
def prior(models_root):
    """Load each prior once per module through the registry (loading dominates these tests' time)."""
    cache = {}

    def get(name):
        if name not in cache:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("FOURD_MODELS_DIR", str(models_root))
                cache[name] = load_prior("sd21-base", models_root / name) if name == "sd-v" else load_prior(name)
        return cache[name]
    return get


def _check_cfg(model, x, level, cond):
    plain = model.predict(x, level, cond)
    guided = model.predict(x, level, cond, guidance_scale=5.0)
    uncond = model.predict(x, level, model.uncond(cond))
    assert plain.raw.shape == x.shape and torch.isfinite(plain.raw).all()
    assert (guided.raw - plain.raw).abs().max() > 1e-4
    expected = uncond.raw + 5.0 * (plain.raw - uncond.raw)
    assert torch.allclose(guided.raw, expected, atol=1e-4)
    return plain


@pytest.mark.parametrize("name", ["sd21-base", "sd-v"])
def test_stable_diffusion_denoises_with_cfg_in_its_parameterisation(prior, name):
    model = prior(name)
    assert model.parameterization == ("v_prediction" if name == "sd-v" else "epsilon")
    cond = model.encode_prompt(["a red cube", "a blue ball"])
    x = torch.randn(2, 1, 1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    level = torch.tensor([700.0, 50.0])
    pred = _check_cfg(model, x, level, cond)
    alpha, sigma = model.schedule.alpha_sigma(level)
    # whatever the model predicts, eps and x0 read back are consistent with x_t
    a, s = alpha.reshape(-1, 1, 1, 1, 1, 1), sigma.reshape(-1, 1, 1, 1, 1, 1)
    assert torch.allclose(a * pred.x0 + s * pred.eps, x, atol=1e-4)


def test_views_of_plain_sd_are_independent_and_vae_chunks_agree(prior):
    model = prior("sd21-base")
    cond = model.encode_prompt(["a chair"])
    x = torch.randn(1, 3, 1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    moved = x.clone()
    moved[:, 2] += 1
    a, b = model.predict(x, torch.tensor([500.0]), cond), model.predict(moved, torch.tensor([500.0]), cond)
    assert torch.allclose(a.raw[:, 0], b.raw[:, 0], atol=1e-5)
    images = model.decode_latents(x[0, :, 0], chunk=1)
    assert images.shape == (3, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    assert torch.allclose(images, model.decode_latents(x[0, :, 0], chunk=8), atol=1e-5)
    assert model.encode_images(images, chunk=2).shape == (3, 4, 8, 8)


def test_sds_gradient_reaches_the_rendered_pixels(prior):
    model = prior("sd21-base")
    cond = model.encode_prompt(["a red cube", "a red cube"])
    rgb = torch.rand(2, 1, 1, 48, 48, 3, requires_grad=True)
    latents = render_latents(model, rgb, 64)
    latents.retain_grad()
    out = sds_loss(model, latents, cond, guidance_scale=50.0, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.allclose(latents.grad, out.grad / 2, atol=1e-6)
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    assert out.level.shape == (2,) and ((out.level >= 0.02 * 999 - 1) & (out.level <= 0.98 * 999 + 1)).all()


def test_vsd_starts_at_zero_and_its_lora_learns(models):
    model = load_prior("sd21-base", models / "sd-v")  # its own copy (the LoRA wraps its layers); v-prediction
    cond = model.encode_prompt(["a red cube"] * 2)
    lora = CameraLoRA(model.unet, rank=4)
    cams = torch.randn(2, 4, 4)
    latents = torch.randn(2, 1, 1, 4, 8, 8, generator=torch.Generator().manual_seed(2), requires_grad=True)
    # A fresh LoRA (zero up-projections, zero camera head) estimates exactly the pretrained score.
    fresh = vsd_loss(model, lora, latents, cond, cams, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert fresh.grad.abs().max() < 1e-5
    before = model.predict(latents.detach(), torch.tensor([300.0, 300.0]), cond).raw
    opt = torch.optim.Adam(lora.trainable_parameters(), lr=1e-2)

    def fixed():  # the same noise, levels and camera dropout every call, so the steps must lower its loss
        return {"samples": 2, "camera_dropout": 0.0, "generator": torch.Generator().manual_seed(5)}
    start = lora_loss(model, lora, latents, cond, cams, **fixed()).item()
    losses = [lora_train_step(model, lora, opt, latents, cond, cams, **fixed()) for _ in range(3)]
    assert losses[0] == pytest.approx(start, rel=1e-5)
    assert lora_loss(model, lora, latents, cond, cams, **fixed()).item() < start
    trained = vsd_loss(model, lora, latents, cond, cams, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert trained.grad.abs().max() > 1e-4
    trained.loss.backward()
    assert latents.grad.abs().sum() > 0
    # outside `active` the UNet is the pretrained one again
    assert torch.allclose(model.predict(latents.detach(), torch.tensor([300.0, 300.0]), cond).raw, before)
    assert all(".base." not in k for k in lora.lora_state_dict())


def test_lora_step_under_gradient_checkpointing_matches_the_plain_one(models):
    grads = []
    for checkpointing in (False, True):
        model = load_prior("sd21-base", gradient_checkpointing=checkpointing)
        torch.manual_seed(0)
        lora = CameraLoRA(model.unet, rank=2)
        torch.nn.init.normal_(next(iter(lora.layers.values())).up.weight)  # a non-zero LoRA branch
        cond = model.encode_prompt(["a red cube"])
        latents = torch.randn(1, 1, 1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        opt = torch.optim.SGD(lora.trainable_parameters(), lr=0.0)
        lora_train_step(model, lora, opt, latents, cond, torch.eye(4)[None], camera_dropout=0.0,
                        generator=torch.Generator().manual_seed(2))
        grads.append(torch.cat([p.grad.flatten() for p in lora.trainable_parameters() if p.grad is not None]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_zeroscope_video_denoise_and_video_sds(prior):
    model = prior("zeroscope-v2-576w")
    cond = model.encode_prompt(["a dog running"])
    x = torch.randn(1, 1, 5, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    _check_cfg(model, x, torch.tensor([400.0]), cond)
    # frames interact through the temporal layers
    moved = x.clone()
    moved[:, :, 4] += 1
    assert (model.predict(moved, torch.tensor([400.0]), cond).raw[:, :, 0]
            - model.predict(x, torch.tensor([400.0]), cond).raw[:, :, 0]).abs().max() > 1e-6
    latents = x.clone().requires_grad_()
    out = sds_loss(model, latents, cond, guidance_scale=100.0, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    assert latents.grad.shape == x.shape and latents.grad.abs().sum() > 0


def test_svd_image_to_video(prior):
    model = prior("svd-xt")
    assert model.parameterization == "v_prediction" and model.schedule.kind == "edm"
    cond = model.encode_image_condition(torch.rand(1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    assert cond.image_embeds.shape == (1, 1, 32) and cond.image_latents.shape == (1, 4, 16, 16)
    x = torch.randn(1, 1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    _check_cfg(model, x, torch.tensor([2.0]), cond)
    plain = model.predict(x, torch.tensor([2.0]), cond).raw
    faster = model.predict(x, torch.tensor([2.0]), replace(cond, motion_bucket_id=20.0))
    assert (faster.raw - plain).abs().max() > 1e-6
    # SVD's per-frame guidance ramp: a scale of 1 on frame 0 leaves it unguided
    ramp = model.predict(x, torch.tensor([2.0]), cond, guidance_scale=torch.linspace(1.0, 3.0, 4)).raw
    assert torch.allclose(ramp[:, :, 0], plain[:, :, 0], atol=1e-5)
    assert (ramp[:, :, 3] - plain[:, :, 3]).abs().max() > 1e-4
    assert model.decode_latents(x[0, 0], chunk=2).shape == (4, 3, 32, 32)


def test_sv3d_orbit_follows_its_cameras(prior):
    model = prior("sv3d-p")
    assert type(model.unet).__name__ == "SV3DUNet"
    cond = model.encode_image_condition(torch.rand(1, 3, 32, 32), noise_aug=1e-5)
    views = 5
    cond.elevations = torch.full((1, views), 0.2)
    cond.azimuths = torch.linspace(0, 2 * torch.pi, views + 1)[None, 1:]
    x = torch.randn(1, views, 2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    base = _check_cfg(model, x, torch.tensor([5.0]), cond).raw
    cond.azimuths = cond.azimuths.flip(1)
    turned = model.predict(x, torch.tensor([5.0]), cond).raw
    assert (turned - base).abs().max() > 1e-6


def test_mvdream_loads_the_original_checkpoint_layout(prior, models):
    model = prior("mvdream-sd21")
    reference = torch.load(models / "mvdream-reference.pt", weights_only=True)
    loaded = model.unet.state_dict()
    assert reference.keys() == loaded.keys()
    assert all(torch.equal(reference[k], loaded[k]) for k in reference)
    cond = model.encode_prompt(["a chair"])
    cond.cameras = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, 4, 1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    base = _check_cfg(model, x, torch.tensor([400.0]), cond).raw
    moved = x.clone()
    moved[:, 3] += 1
    assert (model.predict(moved, torch.tensor([400.0]), cond).raw[:, 0] - base[:, 0]).abs().max() > 1e-6
    cond.cameras = cond.cameras.roll(1, dims=1)
    assert (model.predict(x, torch.tensor([400.0]), cond).raw - base).abs().max() > 1e-6
    latents = x.clone().requires_grad_()
    sds_loss(model, latents, cond, guidance_scale=50.0, generator=torch.Generator().manual_seed(0)).loss.backward()
    assert latents.grad.abs().sum() > 0


def test_mvdream_without_sd21_base_says_what_to_fetch(models, tmp_path, monkeypatch):
    lonely = tmp_path / "models"
    (lonely / "mvdream-sd21").mkdir(parents=True)
    (lonely / "mvdream-sd21" / "sd-v2.1-base-4view.pt").write_bytes((models / "mvdream-sd21" /
                                                                     "sd-v2.1-base-4view.pt").read_bytes())
    monkeypatch.setenv("FOURD_MODELS_DIR", str(lonely))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    from pipelines.priors import ModelNotFound

    with pytest.raises(ModelNotFound, match="fourd models download sd21-base"):
        load_prior("mvdream-sd21")


@pytest.mark.gpu
def test_placement_half_precision_unet_on_gpu_text_encoder_on_cpu(models):
    model = load_prior("sd21-base", device="cuda", dtype=torch.float16, text_device="cpu")
    assert model.text.model.device.type == "cpu" and model.device.type == "cuda"
    cond = model.encode_prompt(["a red cube"])
    latents = torch.randn(1, 1, 1, 4, 8, 8, device="cuda", requires_grad=True)
    out = sds_loss(model, latents, cond, guidance_scale=7.5)
    out.loss.backward()
    assert torch.isfinite(latents.grad).all()
