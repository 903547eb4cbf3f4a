"""Exporters: any :class:`~renderers.scene.Scene` to the files designers open elsewhere.

    from renderers.export import export
    export(scene, "out/shape.glb", t=0.5)                        # static mesh (GLB / OBJ / PLY)
    export(scene, "out/anim.glb", format="gltf-anim", frames=24)  # morph targets or flip-book
    export(scene, "out/splats.ply", format="3dgs-ply", t=0.0)    # Gaussian scenes only
    export(scene, "out/splats", format="3dgs-seq", frames=24)     # folder + sequence.json
    export(scene, "out/turn.mp4", mode="turntable")              # also .gif; mode timelapse / orbit
    export(scene, "out/sheet.png", format="contact-sheet")

Everything works on the Scene protocol and its optional views (``DeformableScene.deform_points``,
``SplatScene.gaussians_at``); files are written whole or not at all. Errors a user can cause raise
:class:`ExportError` with one sentence.
"""

from __future__ import annotations

from pathlib import Path

from renderers.export.animation import export_animated_glb
from renderers.export.files import ExportError, atomic_folder, check_folder_target
from renderers.export.meshes import export_mesh
from renderers.export.splats import export_gaussian_ply, export_gaussian_sequence, read_gaussian_ply
from renderers.export.video import export_contact_sheet, export_video

__all__ = ["FORMATS", "ExportError", "export", "export_animated_glb", "export_contact_sheet", "export_gaussian_ply",
           "export_gaussian_sequence", "export_mesh", "export_run_scene", "export_scene_folder", "export_video",
           "format_options", "guess_format", "read_gaussian_ply"]


def export_scene_folder(scene, path: str | Path, *, overwrite: bool = False) -> Path:
    """The project's native format (``scene.save``: e.g. canonical Gaussians + deformation), which the
    studio reloads with :func:`renderers.scene.load_scene`."""
    from renderers.scene import SCENE_MANIFEST

    path = check_folder_target(path, overwrite, marker=SCENE_MANIFEST)
    with atomic_folder(Path(path)) as tmp:
        scene.save(tmp)
    return Path(path)


def _option_names(function) -> set[str]:
    import inspect

    if fmt_options := getattr(function, "options", None):
        return set(fmt_options)
    parameters = inspect.signature(function).parameters
    return {name for name, p in parameters.items() if p.kind == p.KEYWORD_ONLY}


def _mesh(fmt: str):
    def export_format(scene, path, **options):
        return export_mesh(scene, path, format=fmt, **options)

    export_format.options = [name for name in _option_names(export_mesh) if name != "format"]
    return export_format


# format -> (function, one-line description); the CLI lists these.
FORMATS = {
    "glb": (_mesh("glb"), "static mesh at time t, binary glTF (+Y up)"),
    "obj": (_mesh("obj"), "static mesh at time t, Wavefront OBJ (+MTL +PNG when textured)"),
    "ply": (_mesh("ply"), "static mesh at time t, PLY with vertex colours"),
    "gltf-anim": (export_animated_glb, "animated GLB over a time range (morph targets or flip-book)"),
    "3dgs-ply": (export_gaussian_ply, "3D Gaussian Splatting PLY at time t (Gaussian scenes)"),
    "3dgs-seq": (export_gaussian_sequence, "folder of 3DGS PLY frames + sequence.json (Gaussian scenes)"),
    "mp4": (export_video, "H.264 video: turntable, timelapse or orbit (mode=...)"),
    "gif": (export_video, "looping GIF: turntable, timelapse or orbit (mode=...)"),
    "contact-sheet": (export_contact_sheet, "PNG grid of views along a camera path"),
    "scene": (export_scene_folder, "the studio's native scene folder"),
}
_BY_SUFFIX = {".glb": "glb", ".obj": "obj", ".ply": "ply", ".mp4": "mp4", ".gif": "gif", ".png": "contact-sheet"}
_SUFFIX = {"glb": ".glb", "obj": ".obj", "ply": ".ply", "gltf-anim": ".glb", "3dgs-ply": ".ply", "mp4": ".mp4",
           "gif": ".gif", "contact-sheet": ".png"}


def format_options(fmt: str) -> list[str]:
    """The keyword options ``export`` accepts for ``fmt`` (for the CLI and the studio's export dialog)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}.")
    return sorted(_option_names(FORMATS[fmt][0]))


def guess_format(path: str | Path) -> str:
    """The format a path's suffix implies (``.ply`` means a mesh; ask for '3dgs-ply' explicitly)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise ExportError(f"cannot tell the format of '{path}' from its name; pass format= one of "
                          f"{', '.join(FORMATS)}.")
    return _BY_SUFFIX[suffix]


def export(scene, path: str | Path, format: str | None = None, **options) -> Path:
    """Export ``scene`` to ``path`` in ``format`` (default: from the suffix); ``options`` go to the format's
    function (``t``, ``frames``, ``fps``, ``time_range``, ``resolution``, ``overwrite``, ...). Returns the path."""
    from renderers.scene import Scene

    if not isinstance(scene, Scene):
        raise ExportError(f"a {type(scene).__name__} is not a scene (it lacks render / to_mesh / time_range), "
                          f"so it cannot be exported.")
    fmt = (format or guess_format(path)).lower()
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{format}'; use one of {', '.join(FORMATS)}.")
    if fmt in _SUFFIX and Path(path).suffix.lower() != _SUFFIX[fmt]:
        raise ExportError(f"'{path}' should end in {_SUFFIX[fmt]} for the {fmt} format.")
    if fmt in ("mp4", "gif", "contact-sheet") and "resolution" in options:
        options["size"] = options.pop("resolution")
    function = FORMATS[fmt][0]
    unknown = sorted(set(options) - _option_names(function))
    if unknown:
        raise ExportError(f"the {fmt} format has no option '{unknown[0]}' (it takes "
                          f"{', '.join(sorted(_option_names(function)))}).")
    return function(scene, path, **options)


def export_run_scene(scene_dir: str | Path, out_path: str | Path, format: str | None = None, *,
                     t: float | None = None, frames: int | None = None, resolution: int | None = None,
                     overwrite: bool = False, **options) -> Path:
    """What ``fourd export SCENE_DIR --format F --out PATH [--t T] [--frames N] [--resolution R]`` runs:
    load a saved scene folder and export it. Options that do not apply to the format are ignored
    when left at None, so the CLI can pass its flags through unchanged."""
    from renderers.scene import load_scene

    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise ExportError(f"'{scene_dir}' is not a folder holding a saved scene.")
    try:
        scene = load_scene(scene_dir)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(str(err)) from None
    fmt = (format or guess_format(out_path)).lower()
    given = {"t": t, "frames": frames, "resolution": resolution}
    accepted = {
        "glb": ("t", "resolution"), "obj": ("t", "resolution"), "ply": ("t", "resolution"),
        "gltf-anim": ("frames", "resolution"), "3dgs-ply": ("t",), "3dgs-seq": ("frames",),
        "mp4": ("t", "frames", "resolution"), "gif": ("t", "frames", "resolution"),
        "contact-sheet": ("t", "frames", "resolution"), "scene": (),
    }.get(fmt, tuple(given))
    for name, value in given.items():
        if value is not None:
            if name not in accepted:
                raise ExportError(f"--{name} does not apply to the {fmt} format.")
            options[name] = value
    return export(scene, out_path, fmt, overwrite=overwrite, **options)
