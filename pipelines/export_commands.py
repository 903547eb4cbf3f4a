"""`fourd export RUN --format F --out PATH`: export a run's result (or any saved scene folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a run's result: mesh, animated glTF, 3DGS PLY, video")
    parser.add_argument("source", help="a run folder, a run name under the runs folder, or a saved scene folder")
    parser.add_argument("--out", type=Path, required=True, help="output file (or folder for 3dgs-seq)")
    parser.add_argument("--format", help="glb, obj, ply, gltf-anim, 3dgs-ply, 3dgs-seq, mp4, gif, contact-sheet, "
                                         "scene (default: from the output's suffix)")
    parser.add_argument("--t", type=float, help="time in [0, 1] for static formats")
    parser.add_argument("--frames", type=int, help="frame count for animated formats")
    parser.add_argument("--resolution", type=int, help="marching-cubes or video resolution")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def resolve_scene_dir(source: str) -> Path:
    """The saved scene a user means by ``source``: a scene folder, a run folder (its result), or a run name."""
    from pipelines.jobs.run_folder import is_run_folder, list_runs, not_a_run, run_info
    from pipelines.paths import runs_dir
    from renderers.scene import SCENE_MANIFEST

    path = Path(source).expanduser()
    if not path.exists() and (runs_dir() / source).exists():
        path = runs_dir() / source
    if (path / SCENE_MANIFEST).is_file():
        return path
    if path.is_dir() and not is_run_folder(path):
        if list_runs(path):
            raise ValueError(not_a_run(path))
        raise ValueError(f"'{source}' is neither a run nor a saved scene folder.")
    if path.is_dir():
        info = run_info(path)
        if info.result_dir is not None and Path(info.result_dir).is_dir():
            return Path(info.result_dir)
        raise ValueError(f"run '{path}' has no result to export yet (status: {info.status}).")
    raise ValueError(f"'{source}' is neither a run nor a saved scene folder.")


def run(args: argparse.Namespace) -> int:
    from renderers.export import ExportError, export_run_scene

    try:
        scene_dir = resolve_scene_dir(args.source)
        out = export_run_scene(scene_dir, args.out, args.format, t=args.t, frames=args.frames,
                               resolution=args.resolution, overwrite=args.overwrite)
    except (ExportError, ValueError, FileNotFoundError) as err:
        print(f"fourd export: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0
