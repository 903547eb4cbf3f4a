"""The ready example the studio opens on: a prompt for the bundled prior, and a result it really produced.

On first start (no ``--scene``, no project) the create panel holds :data:`EXAMPLE` — a text-to-4D prompt
the bundled in-house prior knows, with the ``preview`` preset that runs on a CPU in minutes — so one
click on Generate makes a 4D asset. So that the viewer is not empty meanwhile, it shows the result of
that very job, shipped in ``assets/first_start/``: a 4D-fy preview run with the bundled prior, resampled
from its hash-grid field (5.5 MB) to a small voxel volume so it fits in the package. ``about.json``
there records how it was made; :func:`caption` says it in the viewer.

Regenerate it (about 4-6 minutes on a 2-core CPU) with::

    python -m studio.first_start --regenerate            # runs the job, then resamples its result
    python -m studio.first_start --regenerate --from-run RUN_DIR   # resample a finished run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ASSET = "first_start"
ABOUT_FILE = "about.json"


@dataclass(frozen=True)
class Example:
    """The job the create panel is pre-filled with."""

    pipeline: str = "text-to-4d"
    prompt: str = "a red ball bouncing"
    preset: str = "preview"
    seed: int = 0


EXAMPLE = Example()


def example_form():
    """The create form of :data:`EXAMPLE` (``studio.model.CreateForm``)."""
    from studio.model import CreateForm

    return CreateForm(pipeline=EXAMPLE.pipeline, prompt=EXAMPLE.prompt, preset=EXAMPLE.preset, seed=EXAMPLE.seed)


def example_folder() -> Path | None:
    """``assets/first_start`` when it holds a saved scene, else None."""
    from assets import asset_path

    try:
        folder = asset_path(ASSET)
    except FileNotFoundError:
        return None
    return folder if (folder / "scene" / "scene.json").is_file() else None


def about(folder: Path | None = None) -> dict:
    """How the shipped example was made (``about.json``); empty when there is none."""
    folder = folder or example_folder()
    try:
        return json.loads((folder / ABOUT_FILE).read_text()) if folder is not None else {}
    except (OSError, ValueError):
        return {}


def caption(info: dict | None = None) -> str:
    """One line for the viewer: what the example scene is, honestly."""
    info = about() if info is None else info
    if not info:
        return "Example: an analytic bouncing ball (not generated)"
    return (f"Example: {info['method']} {info['preset']} result for '{info['prompt']}' "
            f"(bundled prior, CPU; {info['representation']})")


def title(info: dict | None = None) -> str:
    """A few words for the viewer's bar (the :func:`caption` says the rest)."""
    info = about() if info is None else info
    return f"Example · {info['method']} {info['preset']}" if info else "Example · demo ball"


def apply(model) -> str:
    """Put the studio on the ready example: the create form holds :data:`EXAMPLE` (when its method is
    installed) and the viewer shows the shipped result (the analytic demo ball when it is missing), with
    :func:`title` in the viewer's bar and :func:`caption` under the viewer. Nothing counts as an unsaved
    change afterwards. The caption."""
    if any(p.name == EXAMPLE.pipeline for p in model.pipelines()):
        model.form = example_form()
    folder = example_folder()
    info = about(folder) if folder is not None else {}
    text = caption(info)
    if folder is not None:
        model.open_scene(folder / "scene", title=title(info), caption=text)
    else:
        from studio.demo_scene import BouncingBall

        model.set_scene(BouncingBall(), "example: bouncing ball", title=title(info), caption=text)
    model.mark_saved()
    return text


# ------------------------------------------------------------------------------------ regenerate
def field_to_voxels(scene, resolution: int = 20, frames: int = 4):
    """Resample a field scene (``scene.field.density`` / ``albedo``) to a ``VoxelScene`` of ``frames`` grids
    of ``resolution``^3 over [-1, 1]^3, at the times ``t0 + (t1 - t0) f / frames`` of its time range ``(t0, t1)``.

    Those are the frame times a 4D-fy run trains on (the video prior's loop: ``f / F``, the end being the start
    again); between them the field only cross-fades, so grids taken there lose the motion. Density in cells the
    scene's occupancy grid skips is dropped, as its renderer drops it (left in, it draws a faint haze over the
    box), and the mesh level is the one whose outline matches the copy's renders (``silhouette_level``)."""
    import torch

    from renderers.mesh import silhouette_level
    from renderers.voxels import VoxelScene

    axis = torch.linspace(-1, 1, resolution)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")  # the voxel grid's (z, y, x) order
    points = torch.stack([x, y, z], -1).reshape(-1, 3)
    t0, t1 = scene.time_range
    times = [t0 + (t1 - t0) * f / frames for f in range(frames)]
    occupied = scene.occupancy.query(points)
    sigmas, colours = [], []
    with torch.no_grad():
        for t in times:
            sigma = torch.where(occupied, scene.field.density(points, t).float(), 0.0)
            sigmas.append(sigma.reshape(resolution, resolution, resolution))
            rgb = scene.field.albedo(points, t).float().reshape(resolution, resolution, resolution, 3)
            colours.append(rgb.permute(3, 0, 1, 2))
    voxels = VoxelScene.from_values(torch.stack(sigmas), torch.stack(colours), time_range=(times[0], times[-1]))
    voxels.mesh_threshold = silhouette_level(voxels, lambda p, t: voxels.sample(p, t)[0], times,
                                             preferred=voxels.mesh_threshold)
    return voxels


def generate_run(runs_root: Path) -> Path:
    """Run :data:`EXAMPLE` through the job runner (as the Generate button does); the finished run folder."""
    from pipelines.jobs import JobRunner, JobSpec

    spec = JobSpec.create(EXAMPLE.pipeline, EXAMPLE.preset, inputs={"prompt": EXAMPLE.prompt}, seed=EXAMPLE.seed)
    with JobRunner(runs_root) as runner:
        job = runner.submit(spec)
        status = job.wait()
    if status != "done":
        raise SystemExit(f"the example job ended {status}; see {job.run_dir / 'worker.log'}")
    return job.run_dir


def regenerate(target: Path, run_dir: Path | None = None, resolution: int = 20, frames: int = 4) -> Path:
    """Write ``target/scene`` and ``target/about.json`` from ``run_dir`` (a new run when None)."""
    import shutil
    import tempfile

    from renderers.scene import load_scene

    started = time.monotonic()
    if run_dir is None:
        run_dir = generate_run(Path(tempfile.mkdtemp(prefix="fourd-first-start-")))
    elapsed = _run_seconds(Path(run_dir)) or time.monotonic() - started
    result = load_scene(Path(run_dir) / "result")
    voxels = field_to_voxels(result, resolution, frames)
    staging = target / "scene.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    voxels.save(staging)
    shutil.rmtree(target / "scene", ignore_errors=True)
    staging.replace(target / "scene")
    info = {"method": "4D-fy", "pipeline": EXAMPLE.pipeline, "prompt": EXAMPLE.prompt, "preset": EXAMPLE.preset,
            "seed": EXAMPLE.seed, "representation": f"resampled to {resolution}^3 voxels x {frames} frames",
            "source": f"{Path(run_dir).name}/result ({result.kind} scene)",
            "generation_s": round(elapsed, 1),
            "command": "python -m studio.first_start --regenerate"}
    (target / ABOUT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return target


def _run_seconds(run_dir: Path) -> float | None:
    """Wall time between a run's first and last logged event, or None without an event log."""
    try:
        times = [json.loads(line)["time"] for line in (run_dir / "events.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError, KeyError):
        return None
    return max(times) - min(times) if len(times) > 1 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.first_start", description=__doc__.splitlines()[0])
    parser.add_argument("--regenerate", action="store_true", help="run the example job and ship its result")
    parser.add_argument("--from-run", type=Path, default=None, help="a finished run of the example to resample")
    parser.add_argument("--resolution", type=int, default=20, help="voxels per side (default 20)")
    parser.add_argument("--frames", type=int, default=4, help="voxel grids over time (default 4)")
    parser.add_argument("--out", type=Path, default=None, help="target folder (default: assets/first_start)")
    args = parser.parse_args(argv)
    if not args.regenerate:
        print(caption())
        return 0
    target = args.out or Path(__file__).resolve().parents[1] / "assets" / ASSET
    target.mkdir(parents=True, exist_ok=True)
    regenerate(target, args.from_run, args.resolution, args.frames)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"wrote {target} ({size / 1024:.0f} KB): {caption(about(target))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
