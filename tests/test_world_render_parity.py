"""The fast world renderer against the frozen reference tracer it replaced: dataset caches, the bundled
attribute classifier and the in-house prior were made from the reference's pictures, so the fast path must
reproduce them (else RENDER_VERSION bumps and every cache is rendered again)."""

import numpy as np
import pytest
import torch

from pipelines.world import render_reference
from pipelines.world.datasets import sample_times, sample_views
from pipelines.world.grammar import WorldSpec, sample_spec
from pipelines.world.render import render_world, trace
from pipelines.world.sdf import LOCAL_GRADIENT, LOCAL_SDF, pose_at
from renderers.cameras import Cameras, orbit_cameras

# One seed per shape (glossy and matte, every motion but one among them), walker walking included.
SEEDS = (0, 1, 5, 9, 11, 13, 14, 31)


def _matrix(seed: int, resolution: int, views: int = 4, frames: int = 2):
    """A sample's V x F cameras and times, as the dataset builder renders them."""
    cams = sample_views(seed, views, resolution)
    times = torch.from_numpy(np.tile(sample_times(seed, "matrix", frames), views))
    return Cameras(cams.c2w.repeat_interleave(frames, 0), cams.K.repeat_interleave(frames, 0), resolution,
                   resolution), times


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_renderer_reproduces_the_reference_pictures(seed):
    spec = sample_spec(seed)
    cams, times = _matrix(seed, 40)
    new, old = render_world(spec, cams, times), render_reference.render_world(spec, cams, times)
    pixels = new.alpha.numel()
    # As stored in the caches (uint8): nearly every pixel identical, none far off.
    rgb_diff = ((new.rgb * 255).round() - (old.rgb * 255).round()).abs().amax(-1)
    alpha_diff = ((new.alpha * 255).round() - (old.alpha * 255).round()).abs()[..., 0]
    assert int((rgb_diff > 1).sum()) <= pixels // 1000, f"{spec}: {int((rgb_diff > 1).sum())} pixels off by > 1/255"
    assert int((alpha_diff > 0).sum()) <= pixels // 1000
    assert float(rgb_diff.max()) <= 52 and float(alpha_diff.max()) <= 52  # at most one sub-sample of five
    both = (new.alpha[..., 0] == 1) & (old.alpha[..., 0] == 1)
    assert both.sum() > 0
    assert (new.depth - old.depth)[..., 0][both].abs().max() < 1e-3
    # Closed-form normals against the reference's central differences, which are off by up to ~5e-3 where a
    # surface's curvature jumps (the rounded cube's and the capsules' face-to-rounding seams).
    assert (new.normal - old.normal)[both].abs().max() < 1e-2
    off = new.alpha[..., 0] == 0
    assert (new.depth[..., 0][off] == 0).all() and (new.rgb[off] == 0).all()


@pytest.mark.parametrize("seed", (13, 9))
def test_one_time_for_all_cameras_matches_the_reference(seed):
    spec = sample_spec(seed)
    cams = sample_views(seed, 6, 32)
    new, old = render_world(spec, cams, 0.37), render_reference.render_world(spec, cams, 0.37)
    assert float((new.alpha - old.alpha).abs().mean()) < 1e-3
    assert float((new.rgb - old.rgb).abs().amax()) < 0.21  # a flipped sub-sample at most
    assert float((new.rgb - old.rgb).abs().mean()) < 1e-3
    plain, plain_old = (r(spec, cams, 0.37, antialias=False) for r in (render_world, render_reference.render_world))
    assert torch.equal(plain.alpha, plain_old.alpha)


def test_trace_hits_a_sphere_where_the_quadratic_says():
    spec = WorldSpec("sphere", "red", "bounce", size="large")
    cams = orbit_cameras(2.7, 20.0, 40.0, 40.0, 24, 24)
    origins, dirs = (x.reshape(-1, 3) for x in cams.rays())
    pose = pose_at(spec, torch.tensor([0.3]))
    t = trace("sphere", pose, origins, dirs, None, cone=0.0)
    rel = origins - pose.centre[0]
    b = (rel * dirs).sum(-1)
    disc = b * b - ((rel * rel).sum(-1) - float(pose.scale[0]) ** 2)
    truth = -b - disc.clamp(min=0).sqrt()
    clear = disc > 0.01  # not grazing
    assert torch.isfinite(t[clear]).all() and (t[clear] - truth[clear]).abs().max() < 1e-3
    assert torch.isinf(t[disc < -0.01]).all()


@pytest.mark.parametrize("shape", sorted(LOCAL_GRADIENT))
def test_closed_form_gradients_match_central_differences(shape):
    q = torch.rand(20000, 3, generator=torch.Generator().manual_seed(3)) * 2 - 1
    q = q[LOCAL_SDF[shape](q).abs() < 0.05]  # near the surface, where the renderer asks
    assert len(q) > 500
    h = 1e-3
    probes = torch.cat([q + h * e for e in torch.eye(3)] + [q - h * e for e in torch.eye(3)])
    d = LOCAL_SDF[shape](probes).reshape(6, -1)
    numeric = torch.nn.functional.normalize((d[:3] - d[3:]).T, dim=-1)
    closed = torch.nn.functional.normalize(torch.stack(LOCAL_GRADIENT[shape](q), -1), dim=-1)
    close = ((numeric - closed).abs().amax(-1) < 1e-2).float().mean()
    assert close > 0.99  # all but points within a step of a seam
