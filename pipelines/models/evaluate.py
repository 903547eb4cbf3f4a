"""The in-house prior's evaluation on the world's test split (the bars of the in-house prior issue).

    python -m pipelines.models.evaluate PRIOR_FOLDER [--out DIR] [--prompts 48] [--steps 25]

Figures, each beside the same measurement on the ground truth (the ceiling of the protocol):

- **attributes**: text -> 4 views and text -> video samples judged by the world's attribute classifier
  (shape and colour from two opposite orbit views, motion from the video); test-split prompts and the
  shape/colour/motion combinations held out of training (:func:`held_out_combinations`) reported apart.
  The prior draws RGB on black, so the classifier's alpha comes from the brightness
  (:func:`alpha_from_rgb`) for samples and ground truth alike.
- **multi-view consistency**: leave-one-out visual-hull IoU (:func:`hull_consistency`): the silhouettes of
  three views carve a voxel hull whose projection into the fourth view is compared with that view's
  silhouette. Jointly sampled view sets against the same views sampled one at a time. And identity agreement
  (:func:`identity_agreement`): how often the four views, each read alone by the classifier, show the same
  shape and colour. The hull needs crisp silhouettes, which the prior's 4 x 4-pixel tokens do not draw; the
  agreement asks whether the views show one object.
- **camera use** (:func:`camera_use`): how much the multi-view prediction changes between views that share one
  noisy input and differ only in their camera, beside how much it changes between prompts and how much the true
  renders' latents change between the same four views.
- **image -> orbit / image -> video**: PSNR of the generated views / frames against the renders of held-out
  test scenes, at the model's resolution and bilinearly upsampled to 64 px against 64 px renders, beside
  the PSNR of simply repeating the reference image. PSNR is pooled (from the mean squared error over all
  images), so that still scenes, where repeating the reference is exact, do not dominate the mean.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.world import grammar
from renderers.cameras import Cameras, orbit_cameras
from renderers.metrics import pooled_psnr

ORBIT_AZIMUTHS = (30.0, 120.0, 210.0, 300.0)  # views 0 and 2 are the classifier's two opposite views
ELEVATION = 15.0
DISTANCE, FOVY = 2.7, 40.0


@dataclass(frozen=True)
class Case:
    spec: grammar.WorldSpec
    prompt: str
    held_out: bool


def evaluation_cases(n_test: int, held_out: list[tuple[str, str, str]]) -> list[Case]:
    """``n_test`` test-split scenes whose combination was trained on, then one scene per held-out combination."""
    from pipelines.world.datasets import split_seeds

    skip = set(held_out)
    cases = []
    for seed in split_seeds("test", 10 * n_test + 100):
        spec = grammar.sample_spec(seed)
        if (spec.shape, spec.colour, spec.motion) in skip:
            continue
        cases.append(Case(spec, spec.caption(np.random.default_rng([seed, 3])), False))
        if len(cases) == n_test:
            break
    for i, (shape, colour, motion) in enumerate(held_out):
        spec = grammar.WorldSpec(shape, colour, motion, seed=3_000_000 + i)
        cases.append(Case(spec, spec.caption(np.random.default_rng([spec.seed, 3])), True))
    return cases


def orbit(azimuths, resolution: int, elevation: float = ELEVATION) -> Cameras:
    """The training rig's orbit cameras at ``azimuths`` (degrees)."""
    return orbit_cameras(DISTANCE, elevation, torch.as_tensor(azimuths, dtype=torch.float32), FOVY, resolution,
                         resolution)


def render_truth(spec: grammar.WorldSpec, cameras: Cameras, times) -> torch.Tensor:
    """Premultiplied RGB ``[C, H, W, 3]`` of the ground truth (one time per camera)."""
    from pipelines.world.render import render_world

    return render_world(spec, cameras, torch.as_tensor(times, dtype=torch.float32)).rgb.float()


def alpha_from_rgb(rgb: torch.Tensor, threshold: float = 0.03) -> torch.Tensor:
    """A soft silhouette ``[..., 1]`` from RGB on black: the brightest channel, saturating at ``threshold``."""
    return (rgb.amax(-1, keepdim=True) / threshold).clamp(0, 1)


# ---------------------------------------------------------------------------------------------- consistency
def hull_consistency(silhouettes: torch.Tensor, cameras: Cameras, grid: int = 64, extent: float = 1.3) -> float:
    """Leave-one-out visual-hull IoU of V silhouettes ``[V, H, W]`` (bool) seen by ``cameras`` [V].

    For each view j, voxels inside the silhouettes of every other view form a hull; its projection into view j
    is compared (IoU) with silhouette j. Consistent views give a hull that covers silhouette j exactly.
    """
    v, h, w = silhouettes.shape
    axis = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 * extent - extent
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    uv, depth = cameras.project(points)                                         # [V, P, 2], [V, P]
    px = uv.floor().long()
    inside = (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h) & (depth > 0)
    flat = px[..., 1].clamp(0, h - 1) * w + px[..., 0].clamp(0, w - 1)
    hit = torch.stack([silhouettes[i].reshape(-1)[flat[i]] for i in range(v)]) & inside   # [V, P]
    ious = []
    for j in range(v):
        others = [i for i in range(v) if i != j]
        hull = hit[others].all(0) & inside[j]
        shadow = torch.zeros(h * w, dtype=torch.bool)
        shadow[flat[j][hull]] = True
        target = silhouettes[j].reshape(-1)
        union = (shadow | target).sum()
        ious.append(float((shadow & target).sum() / union) if union > 0 else 1.0)
    return float(np.mean(ious))


@torch.no_grad()
def camera_use(prior, prompts: list[str], cameras: torch.Tensor, level: float = 500.0, seed: int = 0) -> dict:
    """How much the multi-view role's prediction depends on the camera, against how much it depends on the prompt.

    Each prompt's 4 views get the *same* noisy latent at ``level`` (as shared noise starts a sample), so the
    views' predicted clean latents differ only through their cameras ``cameras`` [4, 16]. Returns the mean
    absolute difference between views (to the first view) and, for scale, between consecutive prompts on the
    same input. A model that ignores its cameras has ``between views`` near 0 and draws 4 copies of one image.
    """
    a = prior.arch
    n = len(prompts)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, 1, a.latent_channels, a.latent_size, a.latent_size, generator=gen)
    x = x.expand(n, 4, -1, -1, -1, -1).contiguous()
    cond = prior.encode_prompt(prompts)
    cond.cameras = cameras.reshape(1, 4, 16).expand(n, -1, -1)
    x0 = prior.predict(x, torch.full((n,), level), cond, guidance_scale=1.0).x0.float()
    return {"between views": view_change(x0),
            "between prompts": float((x0[1:] - x0[:-1]).abs().mean()) if n > 1 else 0.0}


def view_change(latents: torch.Tensor) -> float:
    """Mean absolute change of view sets ``[B, V, ...]`` from their first view to the others."""
    return float((latents[:, 1:] - latents[:, :1]).abs().mean())


# ---------------------------------------------------------------------------------------------- classifier
def _fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[..., H, W, 3]`` -> ``[..., size, size, 3]`` (the classifier's resolution)."""
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).movedim(-1, 1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.movedim(1, -1).reshape(*lead, size, size, 3)


def classify(model, views: torch.Tensor, video: torch.Tensor) -> list[dict[str, str]]:
    """Attributes of B items: shape and colour from two opposite views ``[B, 2, H, W, 3]`` (still), motion from
    a video ``[B, F, H, W, 3]`` (its frames stretched to the classifier's frame count, seen as both views)."""
    c = model.config
    still = _fit(views, c.resolution)[:, :, None].expand(-1, -1, c.frames, -1, -1, -1)
    stretch = torch.arange(c.frames) * video.shape[1] // c.frames
    moving = _fit(video, c.resolution)[:, stretch][:, None].expand(-1, c.views, -1, -1, -1, -1)
    shape_colour = model.predict(still, alpha_from_rgb(still))
    motion = model.predict(moving, alpha_from_rgb(moving))
    return [{"shape": a["shape"], "colour": a["colour"], "motion": b["motion"]} for a, b in zip(shape_colour, motion)]


def identity_agreement(model, views: torch.Tensor) -> float:
    """The fraction of B view sets ``[B, V, H, W, 3]`` whose V views, each read alone by the classifier, show the
    same object (the same shape and colour): views that are one object agree; views drawn apart need not."""
    c = model.config
    readings = []
    for v in range(views.shape[1]):
        one = _fit(views[:, v], c.resolution)[:, None, None].expand(-1, c.views, c.frames, -1, -1, -1)
        readings.append([(p["shape"], p["colour"]) for p in model.predict(one, alpha_from_rgb(one))])
    return float(np.mean([len(set(item)) == 1 for item in zip(*readings)]))


def _accuracy(predicted: list[dict], cases: list[Case]) -> dict[str, float]:
    out = {}
    for name in ("shape", "colour", "motion"):
        hits = [p[name] == getattr(c.spec, name) for p, c in zip(predicted, cases)]
        out[name] = float(np.mean(hits)) if hits else float("nan")
    return out


def shape_by_motion(predicted: list[dict], cases: list[Case]) -> dict[str, dict[str, float]]:
    """Shape accuracy of ``predicted`` per true motion, ``{motion: {"prompts": n, "shape": accuracy}}``.

    Motions that move the object to a place the prompt does not name (``orbit``: a random phase on a ring;
    ``walk``: a random heading) are where a sampler that cannot commit to one place shows it."""
    out = {}
    for motion in dict.fromkeys(c.spec.motion for c in cases):
        hits = [p["shape"] == c.spec.shape for p, c in zip(predicted, cases) if c.spec.motion == motion]
        out[motion] = {"prompts": len(hits), "shape": float(np.mean(hits))}
    return out


# ---------------------------------------------------------------------------------------------- evaluation
def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.no_grad()
def evaluate_prior(folder: str | Path, n_test: int = 48, steps: int = 25, guidance: float = 3.0, seed: int = 0,
                   n_reference: int = 24, log=print) -> dict:
    """All figures of the module docstring as a dict (see :func:`report_markdown`)."""
    from pipelines.models.field_dit import images_to_latents
    from pipelines.models.training import held_out_combinations
    from pipelines.priors.inhouse import load_field_prior, sample
    from pipelines.world.classifier import load_classifier

    t_start = time.perf_counter()
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    n_held = int(config.get("training", {}).get("held_out", 24))
    held = [tuple(c) for c in config.get("held_out", held_out_combinations(n_held))]
    cases = evaluation_cases(n_test, held)
    mv = load_field_prior(folder, "text-to-multiview", "inhouse-t2mv")
    res = mv.arch.resolution
    video_prior = load_field_prior(folder, "text-to-video", "inhouse-t2v")
    classifier = load_classifier()
    # one generator per kind of sample, so that a change to how one role samples leaves the others' noise alone
    gen_joint, gen_single, gen_video, gen_images = (torch.Generator().manual_seed(seed * 4 + k) for k in range(4))
    cams = orbit(ORBIT_AZIMUTHS, res)
    cam_flat = cams.c2w.reshape(1, 4, 16)
    video_cam = orbit([ORBIT_AZIMUTHS[0]], res)
    frame_times = torch.arange(4, dtype=torch.float32) / 4

    def decode(prior, latents):
        b, v, f = latents.shape[:3]
        return prior.decode_latents(latents.flatten(0, 2)).clamp(0, 1).movedim(1, -1).reshape(b, v * f, res, res, 3)

    joint, single, video, truth_views, truth_video = [], [], [], [], []
    for chunk in _chunks(cases, 16):
        b = len(chunk)
        prompts = [c.prompt for c in chunk]
        cond = mv.encode_prompt(prompts)
        cond.cameras = cam_flat.expand(b, -1, -1)
        joint.append(decode(mv, sample(mv, cond, views=4, steps=steps, guidance_scale=guidance, generator=gen_joint)))
        # the same four views, each sampled alone (independent noise, one view per item)
        one = mv.encode_prompt([p for p in prompts for _ in range(4)])
        one.cameras = cams.c2w.reshape(4, 1, 16).repeat(b, 1, 1)
        single.append(decode(mv, sample(mv, one, views=1, steps=steps, guidance_scale=guidance, generator=gen_single))
                      .reshape(b, 4, res, res, 3))
        vcond = video_prior.encode_prompt(prompts)
        vcond.cameras = video_cam.c2w.reshape(1, 1, 16).expand(b, -1, -1)
        video.append(decode(video_prior, sample(video_prior, vcond, frames=4, steps=steps, guidance_scale=guidance,
                                                generator=gen_video)))
        for c in chunk:
            truth_views.append(render_truth(c.spec, cams, [0.0] * 4))
            truth_video.append(render_truth(c.spec, Cameras(video_cam.c2w.expand(4, 4, 4), video_cam.K.expand(4, 3, 3),
                                                            res, res), frame_times))
        log(f"sampled {sum(len(x) for x in joint)}/{len(cases)} prompts ({time.perf_counter() - t_start:.0f} s)")
    joint, single, video = torch.cat(joint), torch.cat(single), torch.cat(video)
    truth_views, truth_video = torch.stack(truth_views), torch.stack(truth_video)

    predicted = classify(classifier, joint[:, [0, 2]], video)
    predicted_truth = classify(classifier, truth_views[:, [0, 2]], truth_video)
    groups = {"test prompts": [i for i, c in enumerate(cases) if not c.held_out],
              "held-out combinations": [i for i, c in enumerate(cases) if c.held_out]}
    attributes = {}
    for name, idx in groups.items():
        attributes[name] = {
            "prompts": len(idx),
            "samples": _accuracy([predicted[i] for i in idx], [cases[i] for i in idx]),
            "ground truth": _accuracy([predicted_truth[i] for i in idx], [cases[i] for i in idx]),
        }

    def consistency(images: torch.Tensor) -> float:
        return float(np.mean([hull_consistency(alpha_from_rgb(x)[..., 0] > 0.5, cams) for x in images]))

    consistency_figures = {"joint 4-view samples": consistency(joint), "independent single views": consistency(single),
                           "ground truth": consistency(truth_views)}
    identity_figures = {"joint 4-view samples": identity_agreement(classifier, joint),
                        "independent single views": identity_agreement(classifier, single),
                        "ground truth": identity_agreement(classifier, truth_views)}
    cameras_figures = camera_use(mv, [c.prompt for c in cases], cam_flat, seed=seed)
    truth_latents = images_to_latents(truth_views.movedim(-1, 2), mv.arch.downsample)
    cameras_figures["truth between views"] = view_change(truth_latents)
    log(f"attributes and consistency done ({time.perf_counter() - t_start:.0f} s)")

    image_roles = _image_roles(folder, n_reference, steps, guidance, gen_images, res)
    return {
        "prior": str(folder), "steps": steps, "guidance": guidance, "seed": seed, "resolution": res,
        "attributes": attributes, "shape by motion": {"samples": shape_by_motion(predicted, cases),
                                                      "ground truth": shape_by_motion(predicted_truth, cases)},
        "consistency": consistency_figures, "identity agreement": identity_figures, "camera use": cameras_figures,
        "image roles": image_roles,
        "cases": [{"prompt": c.prompt, "held_out": c.held_out, "truth": {k: getattr(c.spec, k) for k in
                   ("shape", "colour", "motion")}, "predicted": p} for c, p in zip(cases, predicted)],
        "seconds": time.perf_counter() - t_start,
        "_images": {"joint": joint, "single": single, "video": video, "truth_views": truth_views,
                    "truth_video": truth_video, "prompts": [c.prompt for c in cases]},
    }


def _image_roles(folder: Path, n: int, steps: int, guidance: float, gen: torch.Generator, res: int) -> dict:
    """Image -> orbit and image -> video PSNR on ``n`` held-out test scenes (references rendered at ``res``)."""
    from pipelines.priors.inhouse import load_field_prior, sample
    from pipelines.world.datasets import split_seeds

    orbit_prior = load_field_prior(folder, "image-to-orbit", "inhouse-i2orbit")
    video_prior = load_field_prior(folder, "image-to-video", "inhouse-i2v")
    rng = np.random.default_rng(7)
    seeds = list(split_seeds("test", 100_000))[5000:5000 + n]
    results = {}
    for role, prior in (("image -> orbit", orbit_prior), ("image -> video", video_prior)):
        preds, truths, truths64 = [], [], []
        for seed in seeds:
            spec = grammar.sample_spec(seed)
            az0 = float(rng.uniform(-180, 180))
            if role == "image -> orbit":
                azimuths, times = [az0 + 90.0 * k for k in range(4)], [0.0] * 4
            else:
                azimuths, times = [az0] * 4, [k / 4 for k in range(4)]
            truths.append(render_truth(spec, orbit(azimuths, res), times))
            truths64.append(render_truth(spec, orbit(azimuths, 64), times))
        truth = torch.stack(truths)                                               # [n, 4, res, res, 3]
        for chunk in _chunks(list(range(n)), 16):
            ref = truth[chunk, 0].movedim(-1, 1)
            cond = prior.encode_image_condition(ref)
            if role == "image -> orbit":
                # the reference's own azimuth is unknown to a user; the prior's orbit starts at the reference
                cond.cameras = orbit([0.0, 90.0, 180.0, 270.0], res).c2w.reshape(1, 4, 16).expand(len(chunk), -1, -1)
                latents = sample(prior, cond, views=4, steps=steps, guidance_scale=guidance, generator=gen)
            else:
                latents = sample(prior, cond, frames=4, steps=steps, guidance_scale=guidance, generator=gen)
            images = prior.decode_latents(latents.flatten(0, 2)).clamp(0, 1).movedim(1, -1)
            preds.append(images.reshape(len(chunk), 4, res, res, 3))
        pred = torch.cat(preds)[:, 1:]
        truth, truth64 = truth[:, 1:], torch.stack(truths64)[:, 1:]
        copy = torch.stack(truths)[:, :1].expand_as(truth)

        def up(x: torch.Tensor) -> torch.Tensor:
            y = F.interpolate(x.reshape(-1, res, res, 3).movedim(-1, 1), size=(64, 64), mode="bilinear",
                              align_corners=False)
            return y.movedim(1, -1).clamp(0, 1)

        results[role] = {
            "references": n,
            f"psnr at {res} px": pooled_psnr(pred, truth),
            "psnr at 64 px": pooled_psnr(up(pred), truth64),
            f"repeat-the-reference psnr at {res} px": pooled_psnr(copy, truth),
            "repeat-the-reference psnr at 64 px": pooled_psnr(up(copy), truth64),
        }
    return results


def report_markdown(figures: dict) -> str:
    lines = [f"Prior `{figures['prior']}`, {figures['steps']} DDIM steps, guidance {figures['guidance']}, "
             f"seed {figures['seed']}, {figures['seconds']:.0f} s.", "",
             "| prompts | n | shape | colour | motion | ground truth (shape / colour / motion) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, group in figures["attributes"].items():
        s, t = group["samples"], group["ground truth"]
        lines.append(f"| {name} | {group['prompts']} | {s['shape']:.0%} | {s['colour']:.0%} | {s['motion']:.0%} | "
                     f"{t['shape']:.0%} / {t['colour']:.0%} / {t['motion']:.0%} |")
    if by_motion := figures.get("shape by motion"):
        motions = list(by_motion["samples"])
        lines += ["", "| shape, by the prompt's motion (all prompts) | " + " | ".join(motions) + " |",
                  "| --- |" + " --- |" * len(motions)]
        for row, table in by_motion.items():
            lines.append(f"| {row} | " + " | ".join(f"{table[m]['shape']:.0%} of {table[m]['prompts']}"
                                                     for m in motions) + " |")
    lines += ["", "| multi-view consistency (leave-one-out hull IoU) | |", "| --- | --- |"]
    lines += [f"| {k} | {v:.3f} |" for k, v in figures["consistency"].items()]
    if identity := figures.get("identity agreement"):
        lines += ["", "| multi-view consistency: view sets whose 4 views, each classified alone, agree on shape and "
                  "colour | |", "| --- | --- |"]
        lines += [f"| {k} | {v:.0%} |" for k, v in identity.items()]
    if cam := figures.get("camera use"):
        lines += ["", "| camera use: mean abs. change of the predicted clean latents at mid noise, one noise for all "
                  "4 views | |", "| --- | --- |",
                  f"| between the 4 views (cameras only) | {cam['between views']:.4f} |",
                  f"| between prompts (for scale) | {cam['between prompts']:.4f} |"]
        if "truth between views" in cam:
            lines.append(f"| ground truth renders, between the same 4 views | {cam['truth between views']:.4f} |")
    lines += ["", "| role | references | PSNR (model px) | PSNR 64 px | repeat reference (model px / 64 px) |",
              "| --- | --- | --- | --- | --- |"]
    res = figures["resolution"]
    for role, r in figures["image roles"].items():
        copy_native, copy_64 = r[f"repeat-the-reference psnr at {res} px"], r["repeat-the-reference psnr at 64 px"]
        lines.append(f"| {role} | {r['references']} | {r[f'psnr at {res} px']:.2f} dB | {r['psnr at 64 px']:.2f} dB | "
                     f"{copy_native:.2f} / {copy_64:.2f} dB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="exported prior (config.json + model.safetensors) or a run folder")
    parser.add_argument("--out", type=Path, default=None, help="write evaluation.json and evaluation.md here")
    parser.add_argument("--prompts", type=int, default=48, help="test-split prompts (held-out ones are added)")
    parser.add_argument("--references", type=int, default=24, help="held-out reference images per image role")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    figures = evaluate_prior(args.folder, args.prompts, args.steps, args.guidance, args.seed, args.references)
    figures.pop("_images")
    text = report_markdown(figures)
    print(text)
    if args.out is not None:
        from pipelines.atomic_files import write_atomic

        args.out.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out / "evaluation.json", json.dumps(figures, indent=1))
        write_atomic(args.out / "evaluation.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
