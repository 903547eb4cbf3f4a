"""Training the field prior: resume equals an uninterrupted run, a tiny overfit lowers the loss, the CLI."""

from __future__ import annotations

import argparse

import pytest
import torch

from pipelines.config import ConfigError
from pipelines.models import cli_train
from pipelines.models.text import PromptTokenizer
from pipelines.models.training import (
    TrainPriorConfig,
    _latents,
    held_out_combinations,
    load_world,
    make_batch,
    motion_weight_table,
    scene_probabilities,
    train_prior,
)
from pipelines.priors.registry import load_prior


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A handful of real world scenes at 16 px, rendered once for the module."""
    config = TrainPriorConfig.preset("tiny").replace(cache_dir=str(tmp_path_factory.mktemp("cache")), train_size=6,
                                                     background=True)  # with the scenes' alpha
    return load_world(config, log=lambda line: None)


def scene_of(world, latent, downsample: int) -> int:
    """Which world scene a drawn view latent [C, h, w] was cut from."""
    return next(i for i in range(len(world.specs))
                if (_latents(world.rgb[i].flatten(0, 1), downsample) == latent).all(dim=(1, 2, 3)).any())


def grown_and_plain(world, tmp_path, config: TrainPriorConfig, input_name: str):
    """A tiny exported prior started from twice: as it is, and grown with the new input ``input_name`` (checked
    to be announced). Returns both as text-to-multiview priors and a two-prompt conditioning."""
    from pipelines.models.training import export_prior
    from pipelines.priors.inhouse import FieldPrior

    train_prior(config, tmp_path / "first", world=world)
    exported = export_prior(tmp_path / "first", tmp_path / "exported")
    plain = train_prior(config.replace(init_from=str(exported)), tmp_path / "plain", world=world, stop_after=0)
    lines = []
    grown = train_prior(config.replace(init_from=str(exported), **{input_name: True}), tmp_path / "grown",
                        world=world, stop_after=0, log=lines.append)
    assert any(f"new {input_name} input" in line for line in lines)
    want, got = (FieldPrior(run["model"].eval(), "text-to-multiview", "inhouse-t2mv") for run in (plain, grown))
    return want, got, want.encode_prompt(["a red ball bouncing", "a blue cube"])


def test_batches_mix_roles_and_are_deterministic(world):
    config = TrainPriorConfig.preset("tiny").replace(batch=12)
    tok = PromptTokenizer(config.text_length)
    a, b = make_batch(world, config, tok, 3), make_batch(world, config, tok, 3)
    assert torch.equal(a["sets"]["x0"], b["sets"]["x0"]) and a["sets"]["roles"] == b["sets"]["roles"]
    assert a["sets"]["x0"].shape == (12, 4, 48, 4, 4) and a["images"]["x0"].shape == (2, 1, 48, 4, 4)
    assert len(set(a["sets"]["roles"])) >= 3
    clean = a["sets"]["clean"]
    assert not clean[:, 1:].any()
    assert all(r.startswith("image-to") for r, c in zip(a["sets"]["roles"], clean[:, 0]) if c)
    held = held_out_combinations(24)
    assert len(held) == 24 and all((s.shape, s.colour, s.motion) not in held for s in world.specs)


def test_motion_weights_draw_some_motions_more_often(world):
    config = TrainPriorConfig.preset("tiny")
    assert scene_probabilities(world, config) is None  # the default draws every scene equally
    motion = world.specs[0].motion
    weighted = config.replace(motion_weights=f"{motion}=5")
    chance = scene_probabilities(world, weighted)
    mine = [s.motion == motion for s in world.specs]
    assert abs(chance.sum() - 1) < 1e-9
    assert all(c == chance.max() for c, m in zip(chance, mine) if m) and (not all(mine)) and chance.min() < chance.max()
    # with a heavy weight every drawn item shows a scene of that motion
    heavy = weighted.replace(motion_weights=f"{motion}=100000", batch=8)
    batch = make_batch(world, heavy, PromptTokenizer(config.text_length), 0)["sets"]["x0"][:, 0]
    drawn = [scene_of(world, x, config.downsample) for x in batch]
    assert all(world.specs[i].motion == motion for i in drawn)
    with pytest.raises(ConfigError, match="motion_weights"):
        motion_weight_table("orbit=3,flying=2")
    with pytest.raises(ConfigError, match="positive"):
        motion_weight_table("orbit=0")
    assert motion_weight_table("orbit=3, walk=2.5") == {"orbit": 3.0, "walk": 2.5}


def test_the_config_refuses_values_out_of_range():
    """A probability outside [0, 1] or a batch of 0 is named in one sentence, not silently meant as always/never."""
    base = TrainPriorConfig.preset("tiny")
    for key, value in (("p_drop_heading", 1.5), ("p_uncond", -0.1), ("shared_noise", 2.0)):
        with pytest.raises(ConfigError, match=f"'{key}' is a probability"):
            base.replace(**{key: value})
    with pytest.raises(ConfigError, match="'batch' must be at least 1"):
        base.replace(batch=0)
    with pytest.raises(ConfigError, match="out of range"):
        base.replace(ema=1.0)
    assert base.replace(p_drop_heading=1.0, p_uncond=0.0).p_drop_heading == 1.0


def test_the_motion_loss_looks_only_at_one_view_at_two_times(world):
    """motion_weight: the temporal-difference term covers video-like pairs only and adds to the plain loss."""
    from pipelines.models.field_dit import FieldDiT
    from pipelines.models.training import diffusion_loss
    from pipelines.priors.inhouse import cosine_schedule

    config = TrainPriorConfig.preset("tiny").replace(batch=24)
    tok = PromptTokenizer(config.text_length)
    sets = make_batch(world, config, tok, 5)["sets"]
    expected = {"multiview": [], "image-to-orbit": [], "video": [0, 1, 2], "block": [0, 2]}
    for role, pairs, clean in zip(sets["roles"], sets["motion_pairs"], sets["clean"]):
        want = [1, 2] if role == "image-to-video" and clean[0] else expected.get(role, [0, 1, 2])
        assert pairs.nonzero().flatten().tolist() == want, role
    torch.manual_seed(0)
    model = FieldDiT(config.arch(tok.vocab_size))
    schedule = cosine_schedule()

    @torch.no_grad()
    def loss(part, weight):
        return float(diffusion_loss(model, part, schedule, 0.5, torch.Generator().manual_seed(1), "cpu", weight))

    assert loss(sets, 2.0) > loss(sets, 0.0) * 1.01
    still = {k: (v[[i for i, r in enumerate(sets["roles"]) if r == "multiview"]] if torch.is_tensor(v) else v)
             for k, v in sets.items()}
    assert still["x0"].shape[0] > 0 and loss(still, 2.0) == loss(still, 0.0)


def test_resume_equals_uninterrupted(world, tmp_path):
    config = TrainPriorConfig.preset("tiny").replace(steps=6)
    whole = train_prior(config, tmp_path / "whole", world=world)
    train_prior(config, tmp_path / "split", world=world, stop_after=3)
    resumed = train_prior(config, tmp_path / "split", world=world)
    assert resumed["step"] == 6
    assert resumed["losses"] == pytest.approx(whole["losses"][3:], rel=1e-5)
    for key, value in whole["model"].state_dict().items():
        assert torch.allclose(value, resumed["model"].state_dict()[key], atol=1e-6), key
    for key, value in whole["ema"].items():
        assert torch.allclose(value, resumed["ema"][key], atol=1e-6), key


def test_a_new_run_can_start_from_exported_weights(world, tmp_path):
    """init_from: a run whose folder is gone continues from its exported (fp16 EMA) weights."""
    from pipelines.models.training import export_prior

    config = TrainPriorConfig.preset("tiny").replace(steps=3)
    train_prior(config, tmp_path / "first", world=world)
    exported = export_prior(tmp_path / "first", tmp_path / "exported")
    start = train_prior(config.replace(init_from=str(exported)), tmp_path / "second", world=world, stop_after=0)
    fresh = train_prior(config, tmp_path / "third", world=world, stop_after=0)
    from safetensors.torch import load_file

    saved = load_file(exported / "model.safetensors")
    for key, value in start["model"].state_dict().items():
        assert torch.equal(value, saved[key].float()), key
        assert torch.equal(start["ema"][key], value), key
    assert any(not torch.equal(v, fresh["model"].state_dict()[k]) for k, v in start["model"].state_dict().items())
    with pytest.raises(ValueError, match="different architecture .width"):
        train_prior(config.replace(init_from=str(exported), width=48), tmp_path / "fourth", world=world, stop_after=0)
    with pytest.raises(FileNotFoundError, match="is not an exported prior"):
        train_prior(config.replace(init_from=str(tmp_path)), tmp_path / "fifth", world=world, stop_after=0)


def test_a_deeper_run_starts_as_the_exported_model(world, tmp_path):
    """init_from with more blocks: the exported blocks come first and the extra ones are the identity, so the
    grown model predicts exactly what the exported one does; fewer blocks is refused."""
    from pipelines.models.training import export_prior
    from pipelines.priors.inhouse import FieldPrior

    config = TrainPriorConfig.preset("tiny").replace(steps=3)
    train_prior(config, tmp_path / "first", world=world)
    exported = export_prior(tmp_path / "first", tmp_path / "exported")
    small = train_prior(config.replace(init_from=str(exported)), tmp_path / "small", world=world, stop_after=0)
    deep = train_prior(config.replace(init_from=str(exported), depth=config.depth + 2), tmp_path / "deep",
                       world=world, stop_after=0)
    small_prior, deep_prior = (FieldPrior(run["model"].eval(), "text-to-multiview", "inhouse-t2mv")
                               for run in (small, deep))
    assert len(deep_prior.model.blocks) == len(small_prior.model.blocks) + 2
    cond = small_prior.encode_prompt(["a red ball bouncing", "a blue cube"])
    x = torch.randn(2, 3, 1, small_prior.latent_channels, 4, 4, generator=torch.Generator().manual_seed(0))
    level = torch.tensor([100.0, 700.0])
    with torch.no_grad():
        want, got = small_prior(x, level, cond), deep_prior(x, level, cond)
    assert want.abs().max() > 0
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="different architecture .depth"):
        train_prior(config.replace(init_from=str(exported), depth=1), tmp_path / "shallow", world=world,
                    stop_after=0)


def test_a_heading_run_gets_the_scene_yaw_and_starts_as_the_exported_model(world, tmp_path):
    """heading: the text roles' items carry their scene's yaw (or NaN when dropped), the image-conditioned
    roles never do; a heading model grown from one without predicts what the exported one does."""
    import math

    config = TrainPriorConfig.preset("tiny").replace(steps=3, batch=16)
    tok = PromptTokenizer(config.text_length)
    assert "heading" not in make_batch(world, config, tok, 0)["sets"]  # the default draws as before
    batch = make_batch(world, config.replace(heading=True), tok, 0)
    for part in (batch["sets"], batch["images"]):
        for x, role, heading in zip(part["x0"][:, -1], part["roles"], part["heading"].tolist()):
            scene = scene_of(world, x, config.downsample)
            if role.startswith("image-to"):
                assert math.isnan(heading)
            else:
                assert math.isnan(heading) or heading == pytest.approx(math.radians(world.specs[scene].yaw))
    given = batch["sets"]["heading"][[not r.startswith("image-to") for r in batch["sets"]["roles"]]]
    assert (~given.isnan()).any()
    dropped = make_batch(world, config.replace(heading=True, p_drop_heading=1.0), tok, 0)
    assert dropped["sets"]["heading"].isnan().all() and dropped["images"]["heading"].isnan().all()

    want, got, cond = grown_and_plain(world, tmp_path, config, "heading")
    x = torch.randn(2, 3, 1, want.latent_channels, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(got(x, torch.tensor([100.0, 700.0]), cond), want(x, torch.tensor([100.0, 700.0]), cond),
                              atol=1e-6)
    # a heading run resumes only into a heading run
    train_prior(config.replace(heading=True, steps=1), tmp_path / "run", world=world)
    with pytest.raises(ValueError, match="different architecture .heading"):
        train_prior(config.replace(steps=2), tmp_path / "run", world=world)


def test_a_background_run_composites_over_white_and_starts_as_the_exported_model(world, tmp_path):
    """background: each item is drawn over white (with probability p_white) or black and carries which; a
    background model grown from one without predicts what the exported one does, over either."""
    from dataclasses import replace

    from pipelines.models.field_dit import latents_to_images

    config = TrainPriorConfig.preset("tiny").replace(steps=3, batch=16)
    tok = PromptTokenizer(config.text_length)
    assert "background" not in make_batch(world, config, tok, 0)["sets"]  # the default draws as before
    batch = make_batch(world, config.replace(background=True, p_white=0.5), tok, 0)
    for part in (batch["sets"], batch["images"]):
        corner = latents_to_images(part["x0"], config.downsample)[..., 0, 0]  # [B, N, 3]: the world's empty corner
        assert torch.equal(corner, part["background"][:, None, None].expand_as(corner))
    assert set(batch["sets"]["background"].tolist()) == {0.0, 1.0}
    for p_white in (0.0, 1.0):
        every = make_batch(world, config.replace(background=True, p_white=p_white), tok, 0)
        assert set(every["sets"]["background"].tolist()) == {p_white}
        # the subject is the same: over black the composite is the world's premultiplied render
        if p_white == 0.0:
            assert torch.equal(every["sets"]["x0"], make_batch(world, config, tok, 0)["sets"]["x0"])

    want, got, cond = grown_and_plain(world, tmp_path, config, "background")
    x = torch.randn(2, 3, 1, want.latent_channels, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for grey in (0.0, 1.0):
            mine = replace(cond, background=grey)
            assert torch.allclose(got(x, torch.tensor([100.0, 700.0]), mine),
                                  want(x, torch.tensor([100.0, 700.0]), mine), atol=1e-6)
    assert float(train_prior(config.replace(background=True, steps=2), tmp_path / "run", world=world)["losses"][-1]) > 0


def test_self_conditioning_trains_on_the_networks_own_estimate_and_starts_as_the_exported_model(world, tmp_path):
    """self_condition: a first, gradient-free pass gives x0 = alpha x_t - sigma v, which the trained pass gets as
    its estimate for a share of the items (never for a clean view); a grown model predicts what the exported one
    does."""
    from dataclasses import replace

    from pipelines.models.field_dit import FieldDiT
    from pipelines.models.training import diffusion_loss
    from pipelines.priors.inhouse import cosine_schedule

    config = TrainPriorConfig.preset("tiny").replace(steps=2, batch=8)
    tok = PromptTokenizer(config.text_length)
    sets = make_batch(world, config, tok, 4)["sets"]
    torch.manual_seed(0)
    model = FieldDiT(config.replace(self_condition=True).arch(tok.vocab_size))
    torch.nn.init.normal_(model.self_condition_token.weight, std=0.1)
    schedule = cosine_schedule()
    calls = []

    def spy(module, args, kwargs, output):
        calls.append((torch.is_grad_enabled(), args[0], args[1], kwargs.get("estimate"), output.detach()))

    handle = model.register_forward_hook(spy, with_kwargs=True)  # records; the model runs as it is
    diffusion_loss(model, sets, schedule, 0.5, torch.Generator().manual_seed(1), "cpu", 0.0, 1.0)
    (grad_first, x_t, level, none, v), (grad_second, _, _, estimate, _) = calls
    assert not grad_first and grad_second and none is None
    alpha, sigma = (a.view(-1, 1, 1, 1, 1) for a in schedule.alpha_sigma(level))
    clean = sets["clean"][:, :, None, None, None]
    torch.testing.assert_close(estimate, torch.where(clean, torch.zeros_like(x_t), alpha * x_t - sigma * v))
    calls.clear()
    diffusion_loss(model, sets, schedule, 0.5, torch.Generator().manual_seed(1), "cpu", 0.0, 0.0)
    assert len(calls) == 1 and calls[0][0] and calls[0][3] is None  # off: one pass, as before
    handle.remove()
    assert bool(sets["clean"].any())  # the batch has image-conditioned items, whose clean view got zeros

    want, got, cond = grown_and_plain(world, tmp_path, config, "self_condition")
    x = torch.randn(2, 3, 1, want.latent_channels, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for estimate in (None, torch.randn_like(x)):
            mine = replace(cond, estimate=estimate)
            assert torch.allclose(got(x, torch.tensor([100.0, 700.0]), mine),
                                  want(x, torch.tensor([100.0, 700.0]), mine), atol=1e-6)
    assert float(train_prior(config.replace(self_condition=True), tmp_path / "run", world=world)["losses"][-1]) > 0


@pytest.mark.slow
def test_tiny_overfit_lowers_the_loss(world, tmp_path):
    config = TrainPriorConfig.preset("tiny").replace(steps=120, lr=3e-3, warmup=5, batch=4, image_batch=4,
                                                     p_uncond=0.0, checkpoint_minutes=100.0)
    losses = train_prior(config, tmp_path / "run", world=world)["losses"]
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last < 0.7 * first, (first, last)


def test_cli_trains_resumes_and_exports(world, tmp_path, monkeypatch):
    import pipelines.models.training as training

    monkeypatch.setattr(training, "load_world", lambda config, log=print: world)
    parser = argparse.ArgumentParser()
    cli_train.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    tiny = ["train", "prior", "--preset", "tiny", "--set", "steps=4", "--out", str(out)]
    assert cli_train.run(parser.parse_args([*tiny, "--stop-after", "2"])) == 0
    assert cli_train.run(parser.parse_args(tiny)) == 0
    assert "resumed at step 2" in (out / "train.log").read_text()
    bad = parser.parse_args(["train", "prior", "--preset", "tiny", "--set", "width=64", "--out", str(out)])
    assert cli_train.run(bad) == 2  # a different architecture in the same folder: one clear error
    dest = tmp_path / "export"
    assert cli_train.run(parser.parse_args(["train", "prior", "--out", str(out), "--export", str(dest)])) == 0
    prior = load_prior("inhouse-t2i", dest)
    assert prior.model.arch.width == 32
    assert (dest / "model.safetensors").stat().st_size < 1_000_000


def _ddp_worker(rank: int, init_file: str, out: str, world) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    config = TrainPriorConfig.preset("tiny").replace(steps=3)
    result = train_prior(config, out, world=world)
    torch.save({k: v.clone() for k, v in result["model"].state_dict().items()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(world, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(out), world), nprocs=2, join=True)
    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # gradients were averaged: the replicas agree
    single = train_prior(TrainPriorConfig.preset("tiny").replace(steps=3), tmp_path / "single", world=world)
    assert not all(torch.equal(a[k], v) for k, v in single["model"].state_dict().items())  # 2 batches, not 1
    assert (out / "state.json").is_file() and "step 3/3" in (out / "train.log").read_text()
