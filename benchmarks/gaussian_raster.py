"""Gaussian rasterizer speed and memory: forward and forward+backward, torch on CPU (gsplat too on CUDA).

Targets (issue 5, 2 CPU cores): 50k Gaussians at 256^2, forward under 0.25 s, forward+backward
under 0.6 s, peak memory under 1 GB. Each case runs in a fresh process so its peak RSS is its own.
The scene: SH degree 3 Gaussians in a ball of radius 0.8 with scales around 0.02, seen from 3 m
with a 40 degree field of view (2-3 px footprints, as a fitted object has).
"""

from __future__ import annotations

import multiprocessing as mp
import resource

from benchmarks import median_time, parse_args, report


def _scene(n: int, size: int, device: str):
    import torch

    from renderers.cameras import orbit_cameras

    g = torch.Generator().manual_seed(0)
    direction = torch.randn(n, 3, generator=g)
    means = direction / direction.norm(dim=-1, keepdim=True) * 0.8 * torch.rand(n, 1, generator=g) ** (1 / 3)
    params = [means, torch.randn(n, 4, generator=g), torch.exp(torch.randn(n, 3, generator=g) * 0.3 - 3.9),
              torch.rand(n, generator=g) * 0.9 + 0.1, torch.randn(n, 16, 3, generator=g) * 0.2]
    cams = orbit_cameras(3.0, 20.0, 30.0, 40.0, size, size)
    return [p.to(device) for p in params], cams.viewmats.to(device), cams.K.to(device)


def _case(n: int, size: int, backend: str, device: str, repeats: int, tile_size: int, queue) -> None:
    import torch

    from renderers.allocator import tune_cpu_allocator
    from renderers.rasterize import rasterize

    tune_cpu_allocator()
    params, viewmats, Ks = _scene(n, size, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            rasterize(*params, viewmats, Ks, size, size, sh_degree=3, backend=backend, tile_size=tile_size)
        sync()

    leaves = [p.clone().requires_grad_() for p in params]

    def forward_backward():
        out = rasterize(*leaves, viewmats, Ks, size, size, sh_degree=3, backend=backend, tile_size=tile_size)
        (out.rgb.sum() + out.alpha.sum()).backward()
        sync()

    fwd = median_time(forward, repeats)
    fwd_bwd = median_time(forward_backward, repeats)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device == "cuda":
        peak_gb = torch.cuda.max_memory_allocated() / 2**30
    queue.put((fwd, fwd_bwd, peak_gb))


def run_case(n: int, size: int, backend: str = "torch", device: str = "cpu", repeats: int = 5,
             tile_size: int | None = None) -> tuple[float, float, float]:
    """(forward s, forward+backward s, peak GB) measured in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case, args=(n, size, backend, device, repeats, tile_size, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    import torch

    args = parse_args(__doc__.splitlines()[0])
    cases = [(10_000, 256), (50_000, 256)] if args.quick else [
        (10_000, 256), (50_000, 256), (200_000, 256), (10_000, 512), (50_000, 512), (200_000, 512)]
    repeats = 3 if args.quick else 5
    # A yardstick for shared machines: one 2M-element multiply (about 1-2 ms on an idle 2-core box).
    a, b = torch.rand(2_000_000), torch.rand(2_000_000)
    figures = {"reference_mul_2m_ms": 1000 * median_time(lambda: a * b, 9)}
    for n, size in cases:
        name = f"{n // 1000}k_{size}"
        for tile_size in (8, 16):
            suffix = "" if tile_size == 8 else "_tile16"
            fwd, fwd_bwd, peak = run_case(n, size, repeats=repeats, tile_size=tile_size)
            figures[f"torch_cpu_{name}{suffix}_forward_s"] = fwd
            figures[f"torch_cpu_{name}{suffix}_forward_backward_s"] = fwd_bwd
            figures[f"torch_cpu_{name}{suffix}_peak_gb"] = peak
        if torch.cuda.is_available():
            for backend in ("torch", "gsplat"):
                fwd, fwd_bwd, peak = run_case(n, size, backend, "cuda", repeats)
                figures[f"{backend}_cuda_{name}_forward_s"] = fwd
                figures[f"{backend}_cuda_{name}_forward_backward_s"] = fwd_bwd
                figures[f"{backend}_cuda_{name}_peak_gb"] = peak
            if size == 512:
                torch_s = figures[f"torch_cuda_{name}_forward_backward_s"]
                gsplat_s = figures[f"gsplat_cuda_{name}_forward_backward_s"]
                figures[f"gsplat_speedup_{name}_forward_backward"] = torch_s / gsplat_s
    targets = {
        "torch_cpu_50k_256_forward_s": ("<", 0.25),
        "torch_cpu_50k_256_forward_backward_s": ("<", 0.6),
        "torch_cpu_50k_256_peak_gb": ("<", 1.0),
        "gsplat_speedup_50k_512_forward_backward": (">", 50.0),
    }
    report("gaussian_raster", figures, targets, args.json)


if __name__ == "__main__":
    main()
