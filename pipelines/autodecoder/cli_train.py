"""`fourd train autodecoder` and `fourd train latent-diffusion`: the two stages of the text-to-3D model.

    fourd train autodecoder --out RUN [--preset preview] [--set num_objects=256] [--stop-after N]
    fourd train autodecoder --out RUN --from BUNDLE [--set steps=3000] [--export BUNDLE]
    fourd train latent-diffusion --out RUN [--set steps=4000] [--install] [--export BUNDLE] [--from BUNDLE]

Stage 1 fits the autodecoder to multi-view renders of procedural-world objects (views 0-3 of each object;
views 4 and 5 are held out and give the reconstruction PSNR; the world classifier judges the decoded training
objects, the ceiling of stage 2's samples). With ``--from BUNDLE`` it fine-tunes only the decoder after the
latent level of a finished bundle (``decoder_only``) and writes ``RUN/bundle.safetensors`` with that bundle's
normaliser and diffusion model, which stay valid because the latents do not move (pass ``--from`` on every
sitting). Stage 2 reads stage 1's newest checkpoint from the same run folder, fits the robust normaliser over
every training latent and trains the EDM latent diffusion model, conditioned on the caption's words and on the
attributes the world grammar parses from it (shape, colour, size, material); it writes
``RUN/bundle.safetensors`` (both networks + the normaliser), which ``--install`` copies to where
``fourd generate text-to-3d`` looks, and ``--export`` anywhere (e.g. the bundled asset). ``--from BUNDLE``
takes stage 1 from a bundle instead of RUN and fine-tunes that bundle's diffusion weights (new conditioning
tables start at zero). Both stages resume from their newest checkpoint; figures go to ``RUN/autodecoder.json``
and ``RUN/latent-diffusion.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TRAIN_VIEWS, HELD_OUT_VIEWS = (0, 1, 2, 3), (4, 5)
TRAINING_OBJECTS_JUDGED = 128  # about 8 s on one thread
# The diffusion stage's conditioning unless the user overrides it: hashed caption words and the caption's
# parsed attributes (the shape attribute takes the place of the class label the first bundle used).
DIFFUSION_DEFAULTS = {"num_classes": 0, "vocab_size": 512, "context_length": 12,
                      "attributes": ("shape", "colour", "size", "material")}


def add_parsers(models) -> None:
    """Add ``autodecoder`` and ``latent-diffusion`` under ``fourd train``."""
    for name, help_text in (("autodecoder", "stage 1 of text-to-3d: the autodecoder, from multi-view renders"),
                            ("latent-diffusion", "stage 2 of text-to-3d: latent 3D diffusion over stage 1's latents")):
        p = models.add_parser(name, help=help_text)
        p.add_argument("--out", type=Path, required=True, help="run folder shared by both stages")
        p.add_argument("--preset", default="preview", help="preview (CPU, the bundled model) | standard | paper")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config field (repeatable)")
        p.add_argument("--stop-after", type=int, default=None, help="end this sitting after N steps")
        p.add_argument("--export", type=Path, default=None, help="also copy the bundle to this file")
        if name == "autodecoder":
            p.add_argument("--cache-dir", type=Path, default=None, help="world render cache (default: data dir)")
            p.add_argument("--from", dest="from_bundle", type=Path, default=None, metavar="BUNDLE",
                           help="fine-tune this bundle's decoder after the latent level (decoder_only) and write "
                                "RUN/bundle.safetensors with its latents, normaliser and diffusion model unchanged")
        else:
            p.add_argument("--install", action="store_true", help="copy the bundle to where text-to-3d looks")
            p.add_argument("--from", dest="from_bundle", type=Path, default=None, metavar="BUNDLE",
                           help="stage 1 from this bundle, and start from its diffusion weights (fine-tuning)")
            p.add_argument("--evaluate", type=int, default=24, metavar="N",
                           help="judge N samples of held-out test captions with the world classifier (0: skip)")


def _progress(stage: str, total: int, start: int):
    from pipelines.events import EtaEstimator

    eta = EtaEstimator(total)
    eta.update(start)

    def on_step(step: int, parts: dict[str, float]) -> None:
        remaining = eta.update(step)
        if step % 25 == 0 or step == total:
            text = " ".join(f"{k} {v:.4f}" for k, v in parts.items())
            left = f"{remaining / 60:.1f} min" if remaining is not None else "?"
            print(f"{stage} step {step}/{total} {text} (ETA {left})", flush=True)
    return on_step


def train_autodecoder_stage(args) -> int:
    import torch

    from pipelines.autodecoder.generate import load_bundle, save_bundle
    from pipelines.autodecoder.model import Autodecoder, AutodecoderConfig
    from pipelines.autodecoder.train import ObjectViews, render_objects, train_autodecoder
    from pipelines.checkpoints import latest_checkpoint
    from pipelines.config import config_from_dict, config_to_dict, parse_overrides
    from pipelines.paths import data_dir
    from pipelines.world.datasets import MultiViewDataset
    from renderers.metrics import psnr

    run_dir = args.out
    ckpt_dir = run_dir / "autodecoder"
    previous = latest_checkpoint(ckpt_dir) if ckpt_dir.is_dir() else None
    source = load_bundle(args.from_bundle) if args.from_bundle is not None else None
    # a resumed run keeps its own config; --set on top of it may change e.g. the step count
    if previous is not None:  # runs from before lr_schedule kept a constant rate
        base = config_from_dict(AutodecoderConfig, {"lr_schedule": "constant", **previous.extra["config"]})
    elif source is not None:
        base = source[0].config.replace(decoder_only=True)
    else:
        base = AutodecoderConfig.preset(args.preset)
    config = base.override(parse_overrides(args.set))
    if args.export is not None and source is None:
        raise ValueError("stage 1 writes a bundle only when it fine-tunes one: add --from BUNDLE, or export from "
                         "`fourd train latent-diffusion`.")
    if source is not None and not config.decoder_only:
        raise ValueError(f"--from fine-tunes only the decoder of '{args.from_bundle}' (its diffusion model needs "
                         "the latents unchanged); leave decoder_only=true.")
    cache = args.cache_dir or data_dir() / "world-cache"
    data = MultiViewDataset("train", config.num_objects, resolution=config.image_size,
                            views=len(TRAIN_VIEWS) + len(HELD_OUT_VIEWS), cache_dir=cache)
    t0 = time.perf_counter()
    built = data.build()
    if built:
        print(f"rendered {built} world shards in {time.perf_counter() - t0:.0f} s", flush=True)
    views = ObjectViews.from_dataset(data)
    train = ObjectViews(views.rgb[:, list(TRAIN_VIEWS)], views.alpha[:, list(TRAIN_VIEWS)],
                        views.c2w[:, list(TRAIN_VIEWS)], views.K[:, list(TRAIN_VIEWS)], views.captions, views.labels)
    torch.manual_seed(0)
    model = Autodecoder(config)
    if source is not None:
        model.load_state_dict(source[0].state_dict())
    start = previous.step if previous is not None else 0
    steps = config.steps if args.stop_after is None else min(config.steps, start + args.stop_after)
    print(f"autodecoder: {config.num_objects} objects, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
          f"parameters, steps {start} -> {steps} of {config.steps}", flush=True)
    t0 = time.perf_counter()
    train_autodecoder(model, train, steps=steps, checkpoint_dir=ckpt_dir,
                      on_step=_progress("autodecoder", config.steps, start))
    seconds = time.perf_counter() - t0
    rgb, _ = render_objects(model, views, HELD_OUT_VIEWS)
    truth = views.rgb[:, list(HELD_OUT_VIEWS)]
    figures = {"step": steps, "of": config.steps, "objects": config.num_objects, "seconds_this_sitting": seconds,
               "held_out_view_psnr": float(psnr(rgb.reshape(-1, *rgb.shape[2:]),
                                                truth.reshape(-1, *truth.shape[2:])).mean()),
               "config": config_to_dict(config)}
    judged = ""
    try:
        figures["decoded_training_objects"] = evaluate_training_objects(model, views.captions[:TRAINING_OBJECTS_JUDGED])
        judged = ", decoded training objects shape {shape_accuracy:.1%} colour {colour_accuracy:.1%}".format(
            **figures["decoded_training_objects"])
    except FileNotFoundError as error:  # no classifier: the figures go without the ceiling
        print(f"not judging the decoded training objects: {error}", flush=True)
    _write_json(run_dir / "autodecoder.json", figures)
    print(f"autodecoder at step {steps}: held-out view PSNR {figures['held_out_view_psnr']:.2f} dB{judged} "
          f"({seconds / 60:.1f} min this sitting)", flush=True)
    if source is not None:
        bundle = save_bundle(run_dir / "bundle.safetensors", model.eval(), *source[1:])
        _copy_bundle(bundle, [args.export] if args.export else [])
    return 0


def evaluate_training_objects(model, captions: list[str]) -> dict:
    """Shape and colour accuracy of the first ``len(captions)`` training objects as decoded, judged by the world
    classifier as samples are (:func:`evaluate_samples`): the ceiling stage 1 puts on stage 2's samples. (The
    world's own renders score 100 % / 100 % on the 128 objects of the bundled model.)"""
    import torch

    with torch.no_grad():
        grids = torch.cat([model(ids) for ids in torch.arange(len(captions)).split(16)])
        scenes = [model.scene(grid) for grid in grids]
    return {"objects": len(captions), **_shape_colour_accuracy(scenes, captions)}


def _shape_colour_accuracy(scenes: list, prompts: list[str]) -> dict[str, float]:
    """``shape_accuracy`` / ``colour_accuracy``: how often the world classifier sees in each scene the shape and
    colour its prompt names (over the prompts that name them)."""
    from pipelines.world.classifier import load_classifier, prompt_accuracy

    classifier = load_classifier()
    hits = {"shape": [], "colour": []}
    for scene, prompt in zip(scenes, prompts):
        result = prompt_accuracy(scene, prompt, classifier)
        for name in hits:
            if name in result["correct"]:
                hits[name].append(result["correct"][name])
    return {f"{k}_accuracy": sum(v) / len(v) for k, v in hits.items() if v}


def _write_json(path: Path, data: dict) -> None:
    from pipelines.atomic_files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1))


def load_stage1(run_dir: Path):
    """The autodecoder of ``run_dir``'s newest stage-1 checkpoint (eval mode) and its training views."""
    from pipelines.autodecoder.model import Autodecoder, AutodecoderConfig
    from pipelines.checkpoints import latest_checkpoint
    from pipelines.config import config_from_dict

    ckpt = latest_checkpoint(run_dir / "autodecoder") if (run_dir / "autodecoder").is_dir() else None
    if ckpt is None:
        raise FileNotFoundError(f"'{run_dir}' holds no autodecoder checkpoint: run `fourd train autodecoder --out "
                                f"{run_dir}` first.")
    model = Autodecoder(config_from_dict(AutodecoderConfig, ckpt.extra["config"]))
    model.load_state_dict({k[len("model."):]: v for k, v in ckpt.state.items() if k.startswith("model.")})
    return model.eval(), ckpt.step


def train_diffusion_stage(args) -> int:
    import torch

    from pipelines.autodecoder.diffusion import EDM, DiffusionConfig, LatentUNet3d, caption_conditions
    from pipelines.autodecoder.generate import load_bundle, save_bundle, train_diffusion, training_latents, warm_start
    from pipelines.checkpoints import latest_checkpoint
    from pipelines.config import parse_overrides
    from pipelines.world import grammar
    from pipelines.world.datasets import split_seeds

    run_dir = args.out
    previous = None
    if args.from_bundle is not None:
        model, _, previous = load_bundle(args.from_bundle)
        ad_step = f"from {args.from_bundle.name}"
    else:
        model, ad_step = load_stage1(run_dir)
    config = DiffusionConfig.preset(args.preset).override({**DIFFUSION_DEFAULTS, **parse_overrides(args.set)})
    seeds = split_seeds("train", model.config.num_objects)
    captions = [grammar.sample_spec(s).caption() for s in seeds]
    conditions = caption_conditions(captions, config)
    norm, z = training_latents(model, before_relu=config.latent_before_relu)
    torch.manual_seed(0)
    edm = EDM(LatentUNet3d(config, *model.latent_shape()[:2]))
    ckpt_dir = run_dir / "latent-diffusion"
    # a bundle without a diffusion model still gives stage 1; stage 2 then trains from scratch
    if previous is not None and (not ckpt_dir.is_dir() or latest_checkpoint(ckpt_dir) is None):
        fresh = warm_start(edm, previous)
        print(f"starting from the diffusion weights of {args.from_bundle} ({len(fresh)} new tensors)", flush=True)
    print(f"latent diffusion: {len(z)} latents of shape {tuple(z.shape[1:])} (autodecoder step {ad_step}), "
          f"{sum(p.numel() for p in edm.parameters()) / 1e6:.2f} M parameters", flush=True)
    t0 = time.perf_counter()
    done = train_diffusion(edm, z, **conditions, checkpoint_dir=ckpt_dir,
                           stop_after=args.stop_after, on_step=_progress("latent diffusion", config.steps, 0))
    seconds = time.perf_counter() - t0
    bundle = save_bundle(run_dir / "bundle.safetensors", model, norm, edm)
    figures = {"step": done, "of": config.steps, "seconds_this_sitting": seconds, "autodecoder_step": ad_step,
               "bundle_mb": bundle.stat().st_size / 1e6}
    if done >= config.steps and args.evaluate:
        figures["samples"] = evaluate_samples(bundle, args.evaluate)
    _write_json(run_dir / "latent-diffusion.json", figures)
    print(json.dumps({k: v for k, v in figures.items()}, indent=1), flush=True)
    _copy_bundle(bundle, ([_installed_bundle()] if args.install else []) + ([args.export] if args.export else []))
    return 0


def _copy_bundle(bundle: Path, destinations: list[Path]) -> None:
    """Copy the run's bundle to each destination (folders made as needed; written atomically)."""
    from pipelines.atomic_files import write_atomic

    for dest in destinations:
        write_atomic(dest, bundle.read_bytes())
        print(f"bundle -> {dest}", flush=True)


def _installed_bundle() -> Path:
    from pipelines.autodecoder.pipeline import BUNDLE_NAME
    from pipelines.paths import models_dir

    return models_dir() / BUNDLE_NAME


def evaluate_samples(bundle: Path, count: int, steps: int = 18, seed: int = 0, guidance: float | None = None) -> dict:
    """Shape and colour accuracy of samples for ``count`` test-split captions, by the world's classifier."""
    import torch

    from pipelines.autodecoder.diffusion import caption_conditions
    from pipelines.autodecoder.generate import load_bundle, sample_scenes
    from pipelines.world import grammar
    from pipelines.world.datasets import split_seeds

    model, norm, edm = load_bundle(bundle)
    specs = [grammar.sample_spec(s) for s in split_seeds("test", count)]
    prompts = [s.caption() for s in specs]
    scenes = sample_scenes(model, edm, norm, **caption_conditions(prompts, edm.config), guidance=guidance,
                           steps=steps, generator=torch.Generator().manual_seed(seed))
    return {"prompts": count, **_shape_colour_accuracy(scenes, prompts)}


def run(args: argparse.Namespace) -> int:
    from pipelines.config import ConfigError

    try:
        if args.train_command == "autodecoder":
            return train_autodecoder_stage(args)
        return train_diffusion_stage(args)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
