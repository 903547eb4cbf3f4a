"""Neural 4D field renderer: hash-grid throughput, a 4D-fy render step at paper settings, occupancy skipping.

    python -m benchmarks.field_render [--quick] [--json PATH]

Figures (CPU, torch path): hash-grid million points/s (3-D and 4-D, forward and forward+backward), the time
of one 64x64 render step of the paper-config 4D field (64 samples per ray, occupancy on, forward + backward +
Adam) on the analytic scene's fitted occupancy, rays/s, peak RSS, and the speed-up of occupancy skipping +
early termination over dense sampling on a field fitted to the analytic scene. On a GPU, additionally: the
same step with tiny-cuda-nn vs the torch encoding, and the peak memory of a stage-3 4D-fy step (16 frames at
160x288 plus 4 views at 256^2).
"""

from __future__ import annotations

import dataclasses
import resource
import time

import torch

from benchmarks import median_time, parse_args, report
from renderers.allocator import tune_cpu_allocator
from renderers.analytic_scene import analytic_batches
from renderers.cameras import orbit_cameras
from renderers.field import Field4D, FieldConfig
from renderers.field_fit import FitSettings, fit
from renderers.field_scene import FieldScene
from renderers.hash_grid import HashGrid, HashGridConfig
from renderers.volume import OccupancyGrid, RenderSettings, render_image


def grid_throughput(n_dims: int, n_points: int, device: str, repeats: int) -> tuple[float, float]:
    grid = HashGrid(n_dims, HashGridConfig()).to(device)
    points = torch.rand(n_points, n_dims, device=device)

    def forward():
        with torch.no_grad():
            grid(points)
        sync(device)

    def forward_backward():
        grid.table.grad = None
        grid(points).sum().backward()
        sync(device)

    return (n_points / median_time(forward, repeats) / 1e6, n_points / median_time(forward_backward, repeats) / 1e6)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def render_step(field: Field4D, occupancy: OccupancyGrid | None, cameras, t: float, settings: RenderSettings,
                optimizer) -> None:
    out = render_image(field, cameras, t, occupancy=occupancy, settings=settings)
    loss = (out.rgb - 0.5).square().mean() + out.alpha.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def fitted_small_scene(steps: int) -> FieldScene:
    scene = FieldScene.create("small")
    fit(scene, analytic_batches(1024, 32), [0.0, 0.25, 0.5, 0.75, 1.0], FitSettings(steps=steps))
    return scene


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    tune_cpu_allocator()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeats = 3 if args.quick else 5
    figures: dict[str, float] = {}

    n_points = 1 << 15 if args.quick else 1 << 18
    for n_dims in (3, 4):
        fwd, fwd_bwd = grid_throughput(n_dims, n_points, device, repeats)
        figures[f"hash_grid_{n_dims}d_forward_Mpts_s"] = fwd
        figures[f"hash_grid_{n_dims}d_forward_backward_Mpts_s"] = fwd_bwd

    # occupancy skipping on a field fitted to the analytic scene (small preset: it fits in seconds)
    scene = fitted_small_scene(40 if args.quick else 300)
    size = 32 if args.quick else 64
    cams = orbit_cameras(3.0, 20.0, 30.0, 40.0, size, size).to(device)
    settings = RenderSettings(n_samples=64, stratified=True, segments=4)
    field = scene.field.to(device)
    occupancy = scene.occupancy.to(device)
    optimizer = torch.optim.Adam(field.param_groups(), fused=device == "cpu")
    dense = median_time(lambda: render_step(field, None, cams, 0.5, dataclasses.replace(settings, segments=1),
                                            optimizer), repeats)
    skipping = median_time(lambda: render_step(field, occupancy, cams, 0.5, settings, optimizer), repeats)
    figures["fitted_small_step_dense_s"] = dense
    figures["fitted_small_step_skipping_s"] = skipping
    figures["occupancy_speedup_x"] = dense / skipping
    with torch.no_grad():
        figures["fitted_skipped_fraction"] = render_image(field, cams, 0.5, occupancy=occupancy,
                                                          settings=settings).skipped

    # one 4D-fy render step at paper settings on the same occupancy (the fitted scene's empty space)
    paper = Field4D(FieldConfig.preset("paper")).to(device)
    paper_opt = torch.optim.Adam(paper.param_groups(), fused=device == "cpu")
    step = median_time(lambda: render_step(paper, occupancy, cams, 0.5, settings, paper_opt), repeats)
    figures[f"paper_{size}px_render_step_s"] = step
    figures["paper_rays_per_s_forward_backward"] = size * size / step
    with torch.no_grad():
        fwd = median_time(lambda: render_image(paper, cams, 0.5, occupancy=occupancy, settings=settings), repeats)
    figures["paper_rays_per_s_forward"] = size * size / fwd
    figures["peak_rss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    if device == "cuda":
        figures |= gpu_figures(paper, paper_opt, occupancy, settings, repeats, args.quick)

    targets = {"occupancy_speedup_x": (">", 3.0)}
    if size == 64 and device == "cpu":
        targets["paper_64px_render_step_s"] = ("<", 0.25)
    if device == "cuda":
        targets["cuda_speedup_x"] = (">", 10.0)
        targets["stage3_peak_memory_GB"] = ("<", 40.0)
    report("field_render", figures, targets, args.json)


def gpu_figures(paper: Field4D, optimizer, occupancy, settings, repeats: int, quick: bool) -> dict[str, float]:
    """torch vs tiny-cuda-nn encoding for a 256^2 step, and peak memory of a stage-3 4D-fy step."""
    out: dict[str, float] = {}
    cams = orbit_cameras(3.0, 20.0, 30.0, 40.0, 256, 256).cuda()
    fast = median_time(lambda: (render_step(paper, occupancy, cams, 0.5, settings, optimizer), sync("cuda")), repeats)
    for grid in (paper.static_grid, paper.dynamic_grid):
        grid.use_tcnn = False
    slow = median_time(lambda: (render_step(paper, occupancy, cams, 0.5, settings, optimizer), sync("cuda")), repeats)
    for grid in (paper.static_grid, paper.dynamic_grid):
        grid.use_tcnn = True
    out["cuda_256px_step_fast_s"] = fast
    out["cuda_256px_step_torch_s"] = slow
    out["cuda_speedup_x"] = slow / fast
    if not quick:
        torch.cuda.reset_peak_memory_stats()
        video = orbit_cameras(3.0, 15.0, 0.0, 40.0, 288, 160).cuda()
        views = orbit_cameras(3.0, 15.0, torch.tensor([0.0, 90.0, 180.0, 270.0]), 40.0, 256, 256).cuda()
        start = time.perf_counter()
        loss = 0.0
        for frame in range(16):
            loss = loss + render_image(paper, video, frame / 15, occupancy=occupancy, settings=settings).rgb.mean()
        loss = loss + render_image(paper, views, 0.5, occupancy=occupancy, settings=settings).rgb.mean()
        loss.backward()
        sync("cuda")
        out["stage3_step_s"] = time.perf_counter() - start
        out["stage3_peak_memory_GB"] = torch.cuda.max_memory_allocated() / 1e9
    return out


if __name__ == "__main__":
    main()
