"""The autodecoder (embeddings, decoder, training, resume), robust normalisation, EDM latent diffusion."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.autodecoder.diffusion import (
    ATTRIBUTES,
    EDM,
    DiffusionConfig,
    LatentUNet3d,
    caption_conditions,
    parse_attributes,
    tokenize,
)
from pipelines.autodecoder.generate import load_bundle, sample_scenes, save_bundle, train_diffusion, training_latents
from pipelines.autodecoder.model import Autodecoder, AutodecoderConfig, ObjectEmbedding, hash_indices
from pipelines.autodecoder.normalize import RobustNormalizer
from pipelines.autodecoder.train import ObjectViews, render_objects, train_autodecoder
from renderers.metrics import pooled_psnr as psnr
from renderers.voxels import VoxelScene


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    from pipelines.world.datasets import MultiViewDataset

    cache = tmp_path_factory.mktemp("world-cache")
    return MultiViewDataset("train", 3, resolution=24, views=6, cache_dir=cache, shard_size=3)


# -------------------------------------------------------------------- model
def test_paper_preset_matches_table_5():
    cfg = AutodecoderConfig.preset("paper")
    assert cfg.embedding_dim == 1024 and cfg.channels(0) == 512 and cfg.resolution == 64
    assert cfg.channels(cfg.latent_level) == 256 and cfg.base_resolution * 2**cfg.latent_level == 8
    assert cfg.channels(cfg.levels) == 32 and cfg.attention_levels == (1, 2)


def test_hash_indices_follow_eq_10_and_11():
    ids = hash_indices(torch.tensor([0, 1, 12345]), codebooks=3, codebook_size=256)
    for col, k in enumerate([0, 1, 12345]):
        for i in range(3):
            a = 2**31 + 2 * i * i + 1
            assert ids[col, i] == ((a * k) % 2**32) >> (32 - 8)
    assert int(ids.max()) < 256


def test_hash_embedding_concatenates_codebook_pieces():
    cfg = AutodecoderConfig(num_objects=1000, embedding_dim=16, hash_embedding=True, hash_codebooks=4,
                            hash_codebook_size=32)
    emb = ObjectEmbedding(cfg)
    assert emb.table.numel() == 4 * 32 * 4  # far fewer than 1000 x 16
    out = emb(torch.tensor([7, 8]))
    idx = hash_indices(torch.tensor([7]), 4, 32)[0]
    assert out.shape == (2, 16)
    assert torch.equal(out[0, 4:8], emb.table[1, idx[1]])
    assert not torch.equal(out[0], out[1])
    with pytest.raises(IndexError):
        emb(torch.tensor([1000]))


def test_decoder_shapes_and_g1_g2_split():
    cfg = AutodecoderConfig(num_objects=2, attention_levels=(1,))
    model = Autodecoder(cfg).eval()
    ids = torch.tensor([0, 1])
    grid = model(ids)
    assert grid.shape == (2, 4, 16, 16, 16)
    z = model.latent(ids)
    assert z.shape == (2, *model.latent_shape()) == (2, 16, 8, 8, 8)
    torch.testing.assert_close(model.decode_latent(z), grid)
    with pytest.raises(ValueError, match="does not end in a ReLU"):  # attention at the latent level: signed already
        training_latents(model, before_relu=True)
    scene = model.scene(grid[0])
    assert isinstance(scene, VoxelScene) and scene.resolution == (16, 16, 16)


def test_latents_before_the_relu_are_signed_and_decode_to_the_same_volume():
    model = Autodecoder(AutodecoderConfig(num_objects=4)).eval()
    with torch.no_grad():
        after = model.latent(torch.arange(4))
        before = model.latent(torch.arange(4), before_relu=True)
    assert (after == 0).float().mean() > 0.3 and (before < 0).float().mean() > 0.3
    torch.testing.assert_close(before.relu(), after)
    # after the ReLU a quarter of the features or more sit on the point mass at 0, so the robust statistics
    # of Sec. 3.3 see a one-sided distribution; before it the normalised features are signed around 0
    assert float(torch.quantile(after.flatten(), 0.25)) == 0
    norm, z = training_latents(model, before_relu=True)
    assert 0.3 < float((z < 0).float().mean()) < 0.7
    edm = EDM(LatentUNet3d(DiffusionConfig(channels=8, latent_before_relu=True), *model.latent_shape()[:2]))
    grids = torch.stack([s.grid[0] for s in sample_scenes(model, edm, norm, 2, steps=2,
                                                          generator=torch.Generator().manual_seed(0))])
    z = edm.sample((2, *model.latent_shape()), steps=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(grids, model.decode_latent(norm.denormalize(z).relu()))


# -------------------------------------------------------------------- training
def test_tiny_autodecoder_overfits_three_world_objects(views, tmp_path):
    torch.manual_seed(0)
    data = ObjectViews.from_dataset(views, train_views=range(5))
    model = Autodecoder(AutodecoderConfig(num_objects=3))
    before, _ = render_objects(model, data)
    losses = train_autodecoder(model, data, steps=150)
    assert sum(losses[-10:]) / 10 < 0.25 * sum(losses[:5]) / 5
    full = ObjectViews.from_dataset(views)
    after, alpha = render_objects(model, full)
    assert psnr(after[:, :5], full.rgb[:, :5]) > psnr(before[:, :5], full.rgb[:, :5]) + 8
    assert psnr(after[:, 5:], full.rgb[:, 5:]) > 20  # a held-out view
    for i in range(3):  # every object is reconstructed, not just the average of the three
        target = full.rgb[i]
        assert psnr(after[i], target) > 20
        # the object is small, so PSNR is mostly background: judge its silhouette on every view too
        fit, true = alpha[i] > 0.5, full.alpha[i] > 0.5
        assert (fit & true).sum() / (fit | true).sum() > 0.6


def test_training_resumes_from_checkpoint(views, tmp_path):
    data = ObjectViews.from_dataset(views, train_views=range(2))
    cfg = AutodecoderConfig(num_objects=3, max_channels=16, levels=1, checkpoint_every=3, image_size=24,
                            samples_per_ray=8, views_per_object=1, objects_per_step=1)
    torch.manual_seed(1)
    straight = Autodecoder(cfg)
    init = {k: v.clone() for k, v in straight.state_dict().items()}
    full = train_autodecoder(straight, data, steps=6, checkpoint_dir=tmp_path / "a")
    resumed = Autodecoder(cfg)
    resumed.load_state_dict(init)
    train_autodecoder(resumed, data, steps=3, checkpoint_dir=tmp_path / "b")
    again = Autodecoder(cfg)  # fresh weights: everything must come from the checkpoint
    rest = train_autodecoder(again, data, steps=6, checkpoint_dir=tmp_path / "b")
    assert len(rest) == 3
    assert rest == pytest.approx(full[3:], rel=1e-4)
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)


def test_linear_lr_schedule_decays_to_zero_at_the_last_step(views, tmp_path):
    from pipelines.checkpoints import latest_checkpoint

    data = ObjectViews.from_dataset(views, train_views=range(2))
    cfg = AutodecoderConfig(num_objects=3, max_channels=16, levels=1, image_size=24, samples_per_ray=8,
                            views_per_object=1, objects_per_step=1, steps=4, checkpoint_every=2,
                            lr_schedule="linear")
    train_autodecoder(Autodecoder(cfg), data, steps=2, checkpoint_dir=tmp_path)  # a first sitting of 2 steps
    train_autodecoder(Autodecoder(cfg), data, checkpoint_dir=tmp_path)  # resumed: steps 3 and 4
    # the rate of the step just taken: lr x (1 - k / steps) at step k = 0 .. steps - 1, across the resume
    assert latest_checkpoint(tmp_path).extra["optimizer"]["param_groups"][0]["lr"] == pytest.approx(cfg.lr / 4)
    with pytest.raises(ValueError, match="lr_schedule"):
        AutodecoderConfig(lr_schedule="cosine")


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_decoder_only_training_moves_no_latent(views, norm):
    """A bundle's diffusion model is trained on its latents: fine-tuning its decoder must leave G_1 exactly as it
    was, batch-norm statistics included, while G_2 learns."""
    data = ObjectViews.from_dataset(views, train_views=range(4))
    cfg = AutodecoderConfig(num_objects=3, max_channels=16, image_size=24, samples_per_ray=8, norm=norm,
                            decoder_only=True, lr_schedule="linear", steps=6)
    torch.manual_seed(0)
    model = Autodecoder(cfg).eval()
    g2 = {id(m) for m in model.decoder_modules()}
    g2 = tuple(name + "." for name, m in model.named_modules() if id(m) in g2)  # its weights and norm statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        latents = model.latent(torch.arange(3), before_relu=True)
    train_autodecoder(model, data)
    with torch.no_grad():
        assert torch.equal(model.latent(torch.arange(3), before_relu=True), latents)
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert "out.bias" in moved and all(k.startswith(g2) for k in moved)


# -------------------------------------------------------------------- normalisation
def test_robust_normaliser_statistics_on_known_data():
    x = torch.arange(1, 101, dtype=torch.float32).reshape(1, 1, 100, 1, 1)  # 1..100
    norm = RobustNormalizer.fit(x)
    assert float(norm.median) == pytest.approx(50.5)
    assert float(norm.scale) == pytest.approx(0.7413 * (75.25 - 25.75))
    torch.testing.assert_close(norm.denormalize(norm.normalize(x)), x)


def test_robust_normaliser_ignores_outliers_and_gives_unit_scale_for_gaussians():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, 8, 8, 8, generator=g) * 3 + 1
    x[:, :, 0, 0, 0] = 1e6  # extreme outliers (Fig. 9) wreck mean / std but not median / IQR
    norm = RobustNormalizer.fit(x)
    assert float(norm.median) == pytest.approx(1.0, abs=0.1)
    assert float(norm.scale) == pytest.approx(3.0, rel=0.05)
    assert float(x.std()) > 1000
    per = RobustNormalizer.fit(torch.cat([x[:, :1], 10 * x[:, :1]], 1), per_channel=True)
    assert per.scale.shape == (2, 1, 1, 1)
    assert float(per.scale[1] / per.scale[0]) == pytest.approx(10.0, rel=1e-4)


# -------------------------------------------------------------------- diffusion
def test_edm_preconditioning_coefficients():
    edm = EDM(LatentUNet3d(DiffusionConfig(), 4, 8))
    sigma = torch.tensor([0.002, 0.5, 80.0])
    c_skip, c_out, c_in, c_noise = edm.coefficients(sigma)
    sd = 0.5
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # the network starts at zero output, so D is c_skip x: nearly identity at low noise
    x = torch.randn(2, 4, 8, 8, 8)
    torch.testing.assert_close(edm.denoise(x, torch.tensor(0.002)), x * c_skip[0], rtol=1e-5, atol=1e-6)
    s = edm.sigmas(18)
    assert len(s) == 19 and s[0] == pytest.approx(80.0) and s[17] == pytest.approx(0.002) and s[18] == 0
    assert torch.all(s[1:] < s[:-1])


def test_conditional_sampler_shapes_and_guidance():
    cfg = DiffusionConfig(num_classes=7, vocab_size=32, context_dim=16, context_length=8)
    edm = EDM(LatentUNet3d(cfg, 4, 8))
    tokens = tokenize(["a small red cube", "a blue sphere spinning"], 32, 8)
    assert tokens.shape == (2, 8) and (tokens[0, 4:] == 0).all() and (tokens[0, :4] > 0).all()
    z = torch.randn(4, 4, 8, 8, 8)
    loss = edm.loss(z, torch.tensor([0, 1, 2, -1]), torch.cat([tokens, tokens]))
    assert math.isfinite(loss.item())
    g = torch.Generator().manual_seed(0)
    out = edm.sample((2, 4, 8, 8, 8), torch.tensor([1, 5]), tokens, steps=3, generator=g)
    assert out.shape == (2, 4, 8, 8, 8) and torch.isfinite(out).all()


def test_end_to_end_train_normalise_sample_and_bundle_round_trip(views, tmp_path):
    torch.manual_seed(0)
    data = ObjectViews.from_dataset(views, train_views=range(4))
    cfg = AutodecoderConfig(num_objects=3, max_channels=16, levels=2, samples_per_ray=16)
    model = Autodecoder(cfg)
    train_autodecoder(model, data, steps=10)
    norm, z = training_latents(model)
    assert z.shape == (3, *model.latent_shape())
    assert float(z.median()) == pytest.approx(0.0, abs=1e-2)  # torch: lower median
    labels = torch.tensor([lab["shape"] for lab in data.labels])
    tokens = tokenize(data.captions, 64, 8)
    edm = EDM(LatentUNet3d(DiffusionConfig(num_classes=7, vocab_size=64, context_dim=16, context_length=8, steps=5),
                           *model.latent_shape()[:2]))
    losses = []
    assert train_diffusion(edm, z, labels, tokens, on_step=lambda step, parts: losses.append(parts["loss"])) == 5
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    scenes = sample_scenes(model, edm, norm, labels=labels[:2], steps=3, generator=torch.Generator().manual_seed(1))
    assert len(scenes) == 2 and scenes[0].resolution == (16, 16, 16)
    path = save_bundle(tmp_path / "bundle.safetensors", model, norm, edm)
    model2, norm2, edm2 = load_bundle(path)
    torch.testing.assert_close(model2(torch.tensor([1])), model.eval()(torch.tensor([1])))
    torch.testing.assert_close(norm2.median, norm.median)
    again = sample_scenes(model2, edm2, norm2, labels=labels[:2], steps=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again[1].grid, scenes[1].grid)
    scenes[0].save(tmp_path / "scene")
    assert VoxelScene.load(tmp_path / "scene").resolution == (16, 16, 16)

    # the registered text-to-3d pipeline samples from the bundle through the job runner
    from pipelines.jobs import JobRunner, JobSpec
    from renderers.scene import load_scene

    assert caption_conditions(["a big red Cube, spinning", "a teapot"], edm.config)["labels"].tolist() == [1, -1]
    with JobRunner(tmp_path / "runs", device="cpu") as runner:
        job = runner.submit(JobSpec.create("text-to-3d", "preview", inputs={"prompt": "a red cube"},
                                           overrides={"bundle": str(path), "steps": 3}))
        assert job.wait(120) == "done"
        result = load_scene(job.result_dir)
    assert result.kind == "voxels" and result.resolution == (16, 16, 16)


def test_text_to_3d_refuses_before_queueing_without_a_bundle(tmp_path):
    from pipelines.jobs import JobRunner, JobSpec, PreflightError

    with JobRunner(tmp_path / "runs", device="cpu") as runner, pytest.raises(PreflightError, match="no autodecoder"):
        runner.submit(JobSpec.create("text-to-3d", "preview", inputs={"prompt": "a cube"},
                                     overrides={"bundle": str(tmp_path / "missing.safetensors")}))


def test_train_commands_resume_and_write_a_bundle_text_to_3d_can_use(tmp_path, capsys):
    import json

    from pipelines.autodecoder.generate import load_bundle
    from pipelines.cli import main

    run, cache = tmp_path / "run", tmp_path / "cache"
    tiny = ["--set", "num_objects=3", "--set", "steps=8", "--set", "image_size=16", "--set", "samples_per_ray=12",
            "--set", "max_channels=16", "--set", "checkpoint_every=4"]
    assert main(["train", "autodecoder", "--out", str(run), "--cache-dir", str(cache), *tiny, "--stop-after", "4"]) == 0
    assert json.loads((run / "autodecoder.json").read_text())["step"] == 4
    assert main(["train", "autodecoder", "--out", str(run), "--cache-dir", str(cache)]) == 0  # resumes 4 -> 8
    figures = json.loads((run / "autodecoder.json").read_text())
    assert figures["step"] == 8 and math.isfinite(figures["held_out_view_psnr"])
    assert "steps 4 -> 8" in capsys.readouterr().out

    bundle = tmp_path / "exported.safetensors"
    assert main(["train", "latent-diffusion", "--out", str(run), "--set", "steps=3", "--set", "channels=8",
                 "--evaluate", "2", "--export", str(bundle)]) == 0
    record = json.loads((run / "latent-diffusion.json").read_text())
    assert record["step"] == 3 and 0 <= record["samples"]["shape_accuracy"] <= 1
    model, norm, edm = load_bundle(bundle)
    assert edm is not None and edm.config.attributes == ATTRIBUTES and model.config.num_objects == 3


def test_decoder_fine_tune_of_a_bundle_keeps_its_latents_normaliser_and_diffusion(tmp_path, capsys):
    import json

    from safetensors.torch import load_file

    from pipelines.cli import main

    cfg = AutodecoderConfig(num_objects=3, image_size=16, samples_per_ray=12, max_channels=16)
    torch.manual_seed(0)
    model = Autodecoder(cfg).eval()
    norm, _ = training_latents(model, before_relu=True)
    edm = EDM(LatentUNet3d(DiffusionConfig(channels=8, latent_before_relu=True), *model.latent_shape()[:2]))
    source = save_bundle(tmp_path / "source.safetensors", model, norm, edm)
    run, out = tmp_path / "run", tmp_path / "tuned.safetensors"
    args = ["train", "autodecoder", "--out", str(run), "--cache-dir", str(tmp_path / "cache"), "--set", "steps=4"]
    assert main([*args, "--export", str(out)]) == 2  # stage 1 alone has no bundle to export
    assert "add --from BUNDLE" in capsys.readouterr().err
    assert main([*args, "--from", str(source), "--set", "decoder_only=false"]) == 2
    assert main([*args, "--from", str(source), "--set", "lr_schedule=linear", "--export", str(out)]) == 0
    figures = json.loads((run / "autodecoder.json").read_text())
    assert figures["config"]["decoder_only"] and 0 <= figures["decoded_training_objects"]["colour_accuracy"] <= 1
    old, new = load_file(str(source)), load_file(str(out))
    assert new.keys() == old.keys()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert "autodecoder.out.bias" in changed
    assert not any(k.startswith(("diffusion.", "normalizer.", "autodecoder.embedding.", "autodecoder.fc.",
                                 "autodecoder.levels.0.")) for k in changed)
    tuned, _, tuned_edm = load_bundle(out)
    assert tuned_edm is not None and tuned.config.decoder_only
    scenes = sample_scenes(tuned, tuned_edm, norm, 1, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(scenes[0].grid).all()


def test_latent_diffusion_without_stage_one_is_one_sentence(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["train", "latent-diffusion", "--out", str(tmp_path / "empty")]) == 2
    assert "run `fourd train autodecoder" in capsys.readouterr().err


# -------------------------------------------------------------------- caption attributes
def test_parsed_attributes_read_synonyms_and_ignore_unknown_words():
    rows = parse_attributes(["a small glossy crimson ball", "a big chalky tube that spins", "a teapot", ""],
                            ATTRIBUTES).tolist()
    assert rows[0] == [0, 0, 0, 1]  # sphere, red, small, glossy
    assert rows[1] == [4, -1, 2, 0]  # cylinder, no colour named, large, matte
    assert rows[2] == rows[3] == [-1, -1, -1, -1]
    # a named object without a size word is medium-sized, as the world's captions leave "medium" out
    assert parse_attributes(["a glossy teal torus spinning"], ("size",)).tolist() == [[1]]
    with pytest.raises(ValueError, match="unknown attribute 'motion'"):
        DiffusionConfig(attributes=("motion",))


def test_attributes_reach_the_denoiser_and_only_the_colour_word_matters():
    torch.manual_seed(0)
    cfg = DiffusionConfig(channels=8, attributes=ATTRIBUTES)  # attributes only: no hashed words
    edm = EDM(LatentUNet3d(cfg, 4, 4)).eval()
    for p in edm.net.parameters():  # zero-initialised layers (output, second convs) would hide every condition
        if not p.any():
            torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 4, 4, 4, 4).expand(4, -1, -1, -1, -1)
    conditions = caption_conditions(["a red cube", "a crimson cube", "a blue cube", "a red cube on a teapot"], cfg)
    assert conditions["labels"] is None and conditions["tokens"] is None
    attributes = conditions["attributes"]
    assert attributes[0].tolist() == attributes[1].tolist() == attributes[3].tolist()
    assert attributes[2, 1] != attributes[0, 1] and attributes[2, 0] == attributes[0, 0]
    with torch.no_grad():
        out = edm.denoise(x, torch.tensor(1.0), **conditions)
        uncond = edm.denoise(x[:1], torch.tensor(1.0))
    torch.testing.assert_close(out[1], out[0])  # a synonym is the same condition
    torch.testing.assert_close(out[3], out[0])  # an unknown word changes nothing (no hashed words here)
    assert (out[2] - out[0]).abs().max() > 1e-3  # the colour word does
    assert (uncond[0] - out[0]).abs().max() > 1e-3


def test_factorised_attributes_give_one_colour_vector_for_every_shape():
    # what lets a colour seen on a few shapes carry over to the others: "blue" minus "red" is the same
    # conditioning offset on a sphere as on a cube, including combinations never trained together
    cfg = DiffusionConfig(channels=8, attributes=ATTRIBUTES)
    net = LatentUNet3d(cfg, 4, 4)
    captions = ["a matte red cube", "a matte blue cube", "a matte red sphere", "a matte blue sphere"]
    emb = net.condition_embedding(None, caption_conditions(captions, cfg)["attributes"], 4, "cpu")
    torch.testing.assert_close(emb[1] - emb[0], emb[3] - emb[2])
    assert (emb[1] - emb[0]).abs().max() > 0.1 and (emb[2] - emb[0]).abs().max() > 0.1
    none = net.condition_embedding(None, None, 1, "cpu")[0]
    torch.testing.assert_close(none, sum(table.weight[-1] for table in net.attribute_emb))


def test_a_bundle_from_before_attributes_still_loads_and_samples(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    model = Autodecoder(AutodecoderConfig(num_objects=2, max_channels=16)).eval()
    norm, _ = training_latents(model)
    edm = EDM(LatentUNet3d(DiffusionConfig(num_classes=7, vocab_size=32, context_dim=16, context_length=8),
                           *model.latent_shape()[:2]))
    path = save_bundle(tmp_path / "new.safetensors", model, norm, edm)
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    old_config = json.loads(meta["diffusion"])
    for key in ("attributes", "attribute_dropout"):  # the keys the first bundle (fourd-autodecoder-1) lacked
        del old_config[key]
    save_file(state, str(tmp_path / "old.safetensors"), metadata=meta | {"diffusion": json.dumps(old_config)})
    _, _, old = load_bundle(tmp_path / "old.safetensors")
    assert old.config.attributes == () and old.config.num_classes == 7
    conditions = caption_conditions(["a red cube"], old.config)
    assert conditions["attributes"] is None and conditions["labels"].tolist() == [1]
    scenes = sample_scenes(model, old, norm, **conditions, steps=2)
    assert len(scenes) == 1 and scenes[0].resolution == (16, 16, 16)


def test_warm_start_from_a_class_conditional_bundle_begins_as_it_did():
    from pipelines.autodecoder.generate import warm_start

    torch.manual_seed(0)
    old = EDM(LatentUNet3d(DiffusionConfig(channels=8, num_classes=7, vocab_size=32, context_dim=16,
                                           context_length=8), 4, 4)).eval()
    for p in old.net.parameters():  # a trained model has no zero layers
        if not p.any():
            torch.nn.init.normal_(p, std=0.1)
    new = EDM(LatentUNet3d(DiffusionConfig(channels=8, vocab_size=32, context_dim=16, context_length=8,
                                           attributes=ATTRIBUTES), 4, 4)).eval()
    fresh = warm_start(new, old)
    assert sorted(fresh) == [f"attribute_emb.{i}.weight" for i in (1, 2, 3)]  # the shape table is the class table
    captions = ["a small matte red cube", "a blue torus", "a teapot"]
    x = torch.randn(3, 4, 4, 4, 4)
    with torch.no_grad():
        before = old.denoise(x, torch.tensor(2.0), **caption_conditions(captions, old.config))
        after = new.denoise(x, torch.tensor(2.0), **caption_conditions(captions, new.config))
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="another shape"):
        warm_start(EDM(LatentUNet3d(new.config, 8, 4)), old)


def test_reconstruction_sheet_puts_decoded_views_beside_the_world_renders(tmp_path):
    from pipelines.autodecoder.sheets import reconstruction_sheet
    from pipelines.world.datasets import MultiViewDataset

    model = Autodecoder(AutodecoderConfig(num_objects=2, image_size=16, samples_per_ray=8, max_channels=16))
    bundle = save_bundle(tmp_path / "b.safetensors", model, training_latents(model)[0])
    sheet = reconstruction_sheet(bundle, objects=2, views=(0, 4), scale=2, cache_dir=tmp_path)
    assert sheet.shape == (2 * 16 * 2, 4 * 16 * 2, 3)
    truth = MultiViewDataset("train", 2, resolution=16, views=6, cache_dir=tmp_path)[1]["rgb"][4]
    expected = (truth.clamp(0, 1) * 255).round().byte().numpy()
    assert (sheet[32::2, 96::2] == expected).all()  # second object, right half, second view: the world's render


def test_a_run_from_before_lr_schedule_resumes_at_a_constant_rate(tmp_path):
    import json

    from pipelines.checkpoints import latest_checkpoint, save_checkpoint
    from pipelines.cli import main

    run = tmp_path / "run"
    args = ["train", "autodecoder", "--out", str(run), "--cache-dir", str(tmp_path / "cache"), "--set", "num_objects=2",
            "--set", "steps=4", "--set", "image_size=16", "--set", "samples_per_ray=8", "--set", "max_channels=16"]
    assert main([*args, "--stop-after", "2"]) == 0
    assert json.loads((run / "autodecoder.json").read_text())["config"]["lr_schedule"] == "linear"  # new runs decay
    ckpt = latest_checkpoint(run / "autodecoder")
    del ckpt.extra["config"]["lr_schedule"]  # as written before the field existed
    save_checkpoint(run / "autodecoder", ckpt.state, ckpt.step, ckpt.extra)
    assert main(args) == 0
    assert json.loads((run / "autodecoder.json").read_text())["config"]["lr_schedule"] == "constant"
