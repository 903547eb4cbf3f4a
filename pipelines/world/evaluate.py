"""The evaluation harness: run a pipeline over a suite of world scenes and score every result.

    report = evaluate_suite(load_suite("smoke"), "image-to-4d", "preview", out_dir=Path("eval-out"))
    report["mean"]          # {'psnr': .., 'ssim': .., 'mask_iou': .., 'attribute_accuracy': .., ...}

For each case the inputs the pipeline takes are derived from the case's ground truth and written into
``OUT/cases/NAME/`` (the prompt, a reference image rendered from the reference view, a reference video
from it over t in [0, 1]) together with the ground-truth scene itself, so that every case can be rerun
and inspected. The pipeline runs as a job (``OUT/runs/NAME/``, the run folder ``fourd`` makes), its
result is scored on the held-out cameras and times of :func:`pipelines.world.metrics.evaluate_scene`
and by the attribute classifier (:func:`pipelines.world.classifier.prompt_accuracy`). A case that fails
is recorded with its one-sentence reason and the suite goes on. The report folder holds ``report.json``,
``report.md`` and ``contact_sheet.png`` (ground truth beside the result, per case, at a few times).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import pipelines.world.oracle  # noqa: F401  (registers 'world-oracle')
from pipelines.world.grammar import WorldSpec
from pipelines.world.metrics import EVAL_TIMES, evaluate_scene, evaluation_cameras
from pipelines.world.scene import WorldScene
from pipelines.world.suites import Case, Suite
from renderers.cameras import Cameras, orbit_cameras
from renderers.scene import Scene

# The reference view the image / video inputs are rendered from: the Diffusion² pipelines' row 0
# (azimuth 0 at their orbit's elevation, distance and field of view), so that a result is in the
# ground truth's frame.
REFERENCE_VIEW = {"distance": 2.7, "elevation": 15.0, "azimuth": 0.0, "fovy": 40.0}
IMAGE_SIZE = 256
VIDEO_SIZE = 128
VIDEO_FRAMES = 24
VIDEO_FPS = 12
# Contact sheet: two opposite held-out views at each evaluation time, truth above result.
SHEET_VIEWS = ((27.5, 22.5), (27.5, 202.5))
SHEET_TILE = 80
FIGURES = ("psnr", "ssim", "mask_iou")
ATTRIBUTES = ("shape", "colour", "motion")


def reference_camera(size: int) -> Cameras:
    v = REFERENCE_VIEW
    return orbit_cameras(v["distance"], v["elevation"], v["azimuth"], v["fovy"], size, size)


# -------------------------------------------------------------------- inputs
def write_case_inputs(case: Case, names: tuple[str, ...], folder: Path) -> dict[str, str]:
    """Derive the inputs ``names`` (``prompt`` / ``image`` / ``video``) of ``case`` into ``folder``;
    also saves the ground truth (``truth/``, a world scene folder) and ``case.json``. Returns the inputs."""
    import imageio.v3 as iio

    from pipelines.atomic_files import write_atomic
    from pipelines.world.render import render_world

    folder.mkdir(parents=True, exist_ok=True)
    WorldScene(case.spec).save(folder / "truth")
    write_atomic(folder / "prompt.txt", case.prompt + "\n")
    inputs: dict[str, str] = {}
    for name in names:
        if name == "prompt":
            inputs[name] = case.prompt
        elif name == "image":
            out = render_world(case.spec, reference_camera(IMAGE_SIZE), 0.0)
            alpha = out.alpha[0]
            straight = torch.where(alpha > 0, out.rgb[0] / alpha.clamp(min=1e-6), torch.zeros(()))
            rgba = (torch.cat([straight, alpha], -1).clamp(0, 1) * 255).round().byte().numpy()
            path = folder / "reference.png"
            write_atomic(path, iio.imwrite("<bytes>", rgba, extension=".png"))
            inputs[name] = str(path)
        elif name == "video":
            cam = reference_camera(VIDEO_SIZE)
            times = torch.linspace(0.0, 1.0, VIDEO_FRAMES)  # frame f at t = f / (F - 1), as the pipelines read it
            cams = Cameras(cam.c2w.expand(VIDEO_FRAMES, 4, 4), cam.K.expand(VIDEO_FRAMES, 3, 3), VIDEO_SIZE,
                           VIDEO_SIZE)
            frames = (render_world(case.spec, cams, times).composite(1.0).clamp(0, 1) * 255).round().byte().numpy()
            path = folder / "reference.mp4"
            tmp = folder / "reference.tmp.mp4"
            iio.imwrite(tmp, frames, plugin="pyav", codec="libx264", fps=VIDEO_FPS, out_pixel_format="yuv420p")
            tmp.replace(path)
            inputs[name] = str(path)
        else:
            raise ValueError(f"the evaluation harness cannot make the input '{name}' from a world scene "
                             "(it makes prompt, image and video).")
    record = {"name": case.name, "prompt": case.prompt, "seed": case.seed, "spec": case.spec.to_dict(),
              "reference_view": REFERENCE_VIEW, "image_time": 0.0, "video_times": [0.0, 1.0],
              "inputs": {k: Path(v).name if k != "prompt" else v for k, v in inputs.items()}}
    write_atomic(folder / "case.json", json.dumps(record, indent=2))
    return inputs


# -------------------------------------------------------------------- scoring
def score_scene(scene: Scene, truth: WorldSpec | Scene, prompt: str, resolution: int = 64,
                classifier=None) -> dict:
    """Figures of ``scene`` against the ground truth: PSNR / SSIM / mask IoU on the held-out cameras and times
    (``evaluate_scene``) and, when ``classifier`` is given, which attributes named in ``prompt`` it sees."""
    from pipelines.world.classifier import prompt_accuracy

    truth_scene = WorldScene(truth) if isinstance(truth, WorldSpec) else truth
    with torch.no_grad():
        figures = evaluate_scene(scene, truth_scene, evaluation_cameras(resolution))
        if classifier is not None:
            attributes = prompt_accuracy(scene, prompt, classifier)
            figures["attributes"] = {"expected": attributes["expected"], "predicted": attributes["predicted"],
                                     "correct": attributes["correct"]}
            figures["attribute_accuracy"] = attributes["accuracy"]
    return figures


def sheet_tiles(scene: Scene, times: tuple[float, ...] = EVAL_TIMES, size: int = SHEET_TILE) -> np.ndarray:
    """One row of tiles over white: each of :data:`SHEET_VIEWS` at each time, ``[size, size * V * T, 3]`` uint8."""
    el = torch.tensor([e for e, _ in SHEET_VIEWS])
    az = torch.tensor([a for _, a in SHEET_VIEWS])
    cams = orbit_cameras(2.7, el, az, 40.0, size, size)
    tiles = []
    with torch.no_grad():
        for t in times:
            out = scene.render(cams, t)
            tiles += list(out.composite(1.0).float().cpu().clamp(0, 1))
    return (torch.cat(tiles, 1) * 255).round().byte().numpy()


# -------------------------------------------------------------------- running one case
@dataclass
class CaseRun:
    """How a case's job ended."""

    status: str
    message: str | None = None
    result_dir: Path | None = None
    run_dir: Path | None = None
    seconds: float = 0.0


@dataclass
class _Clock:
    """Suite progress: finished case times and the running case's own estimate give the suite's ETA."""

    total: int
    done_seconds: list[float] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    def eta(self, index: int, case_elapsed: float, case_eta: float | None) -> float | None:
        left = self.total - index - 1
        if self.done_seconds:
            per_case = sum(self.done_seconds) / len(self.done_seconds)
            current = case_eta if case_eta is not None else max(per_case - case_elapsed, 0.0)
            return current + left * per_case
        if case_eta is None:
            return None
        return case_eta + left * (case_elapsed + case_eta)


def _duration(seconds: float | None) -> str:
    from pipelines.jobs.commands import _duration as format_duration

    return format_duration(seconds)


def _run_job(spec, run_dir: Path, runner, on_event: Callable) -> CaseRun:
    """Run ``spec`` in ``run_dir`` on ``runner`` (a JobRunner), or in this process when ``runner`` is None."""
    start = time.monotonic()
    if runner is not None:
        job = runner.submit(spec, run_dir)
        try:
            for event in job.events():
                on_event(event)
        except KeyboardInterrupt:
            job.cancel(force=True)
            job.wait()
            raise
        job.wait()
        return CaseRun(job.status, job.message, job.result_dir, run_dir, time.monotonic() - start)
    from pipelines.jobs.run_folder import init_run_folder, read_status
    from pipelines.jobs.worker import execute_job
    from pipelines.registry import get_pipeline, resolve

    info = get_pipeline(spec.pipeline)
    if info.preflight:
        resolve(info.preflight)(spec.inputs, spec.config, spec.priors)
    init_run_folder(run_dir, spec)
    status = execute_job(run_dir, emit=on_event)
    record = read_status(run_dir)
    result = record.get("result_dir")
    return CaseRun(status, record.get("message"), Path(result) if result else None, run_dir,
                   time.monotonic() - start)


# -------------------------------------------------------------------- the suite
def default_out_dir(suite: Suite, pipeline: str, preset: str) -> Path:
    from pipelines.paths import runs_dir

    return runs_dir() / "eval" / f"{time.strftime('%Y%m%d-%H%M%S')}-{suite.name}-{pipeline}-{preset}"


def evaluate_suite(suite: Suite, pipeline: str, preset: str = "preview", *, out_dir: Path | None = None,
                   overrides: dict | None = None, limit: int | None = None, device: str | None = None,
                   in_process: bool = False, log: Callable[[str], None] = print,
                   progress_every_s: float = 10.0) -> dict:
    """Run ``pipeline`` at ``preset`` (with dotted config ``overrides``) on the first ``limit`` cases of
    ``suite``, score each result and write the report folder ``out_dir``; returns the report.

    Raises ConfigError / ValueError (one sentence, nothing started) for a bad pipeline, preset, override
    or an input the harness cannot make; a case that fails later is recorded in the report instead.
    """
    from pipelines.events import Log, Progress
    from pipelines.jobs.spec import JobSpec
    from pipelines.registry import get_pipeline

    info = get_pipeline(pipeline)
    overrides = dict(overrides or {})
    cases = suite.cases[:limit] if limit else suite.cases
    # Everything the user can get wrong is checked before the first case starts.
    bad = [n for n in info.inputs if n not in ("prompt", "image", "video")]
    if bad:
        raise ValueError(f"the evaluation harness cannot make the input '{bad[0]}' that '{pipeline}' takes "
                         "(it makes prompt, image and video).")
    config = info.config_cls.preset(preset)
    if overrides:
        config.override(overrides)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(suite, pipeline, preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    if suite.path is not None:
        shutil.copyfile(suite.path, out_dir / "suite.toml")
    elif suite.text:
        (out_dir / "suite.toml").write_text(suite.text)
    classifier = _classifier(log)
    if not info.inputs:
        log(f"note: '{pipeline}' takes no inputs, so every case runs the same job; its figures measure the "
            "harness, not the pipeline.")
    log(f"evaluating '{pipeline}' ({preset}) on suite '{suite.name}': {len(cases)} case(s) -> {out_dir}")

    report = {"suite": suite.name, "suite_description": suite.description, "pipeline": pipeline,
              "preset": preset, "overrides": overrides, "device": device or "auto",
              "resolution": suite.resolution, "eval_times": list(EVAL_TIMES),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "planned_cases": len(cases), "cases": []}
    sheet_rows: list[dict] = []
    clock = _Clock(len(cases))
    runner = None
    interrupted = False
    if not in_process:
        from pipelines.jobs.runner import JobRunner

        runner = JobRunner(out_dir / "runs", warm_workers=1, device=device)
    try:
        for index, case in enumerate(cases):
            tag = f"[{index + 1}/{len(cases)}] {case.name}"
            entry = {"name": case.name, "prompt": case.prompt, "seed": case.seed, "spec": case.spec.to_dict(),
                     "line": case.line, "status": "failed", "error": None, "run_seconds": None,
                     "eval_seconds": None, "run_dir": None, "result_dir": None}
            report["cases"].append(entry)
            truth = WorldScene(case.spec)
            row = {"name": case.name, "prompt": case.prompt, "truth": sheet_tiles(truth), "result": None,
                   "entry": entry}
            sheet_rows.append(row)
            case_start = time.monotonic()
            state = {"last": 0.0, "stage": None}

            def on_event(event, tag=tag, case_start=case_start, state=state, index=index) -> None:
                if isinstance(event, Progress):
                    now = time.monotonic()
                    if event.stage != state["stage"] or now - state["last"] >= progress_every_s:
                        state["stage"], state["last"] = event.stage, now
                        suite_eta = clock.eta(index, now - case_start, event.eta_s)
                        log(f"{tag}: {event.stage} {event.step}/{event.total}, case ETA {_duration(event.eta_s)}, "
                            f"suite ETA {_duration(suite_eta)}")
                elif isinstance(event, Log) and event.level in ("warning", "error"):
                    log(f"{tag}: {event.level}: {event.message.splitlines()[0] if event.message else ''}")

            log(f"{tag}: {case.prompt!r} (seed {case.seed})")
            try:
                inputs = write_case_inputs(case, info.inputs, out_dir / "cases" / case.name)
                spec = JobSpec.create(pipeline, preset, inputs=inputs, seed=case.seed, overrides=overrides)
                run = _run_job(spec, out_dir / "runs" / case.name, runner, on_event)
            except KeyboardInterrupt:
                entry.update(status="cancelled", error="the evaluation was interrupted.")
                interrupted = True
                break
            except Exception as err:  # a case that cannot start is recorded; the suite goes on
                run = CaseRun("failed", _sentence(err))
            entry.update(run_seconds=round(run.seconds, 2), run_dir=_relative(run.run_dir, out_dir))
            if run.status != "done" or run.result_dir is None:
                entry.update(status=run.status if run.status != "done" else "failed",
                             error=run.message or "the run produced no scene.")
            else:
                entry["result_dir"] = _relative(run.result_dir, out_dir)
                eval_start = time.monotonic()
                try:
                    from renderers.scene import load_scene

                    scene = load_scene(run.result_dir)
                    entry["figures"] = _finite(score_scene(scene, truth, case.prompt, suite.resolution, classifier))
                    row["result"] = sheet_tiles(scene)
                    entry["status"] = "done"
                except Exception as err:
                    entry["error"] = f"the result could not be evaluated: {_sentence(err)}"
                entry["eval_seconds"] = round(time.monotonic() - eval_start, 2)
            clock.done_seconds.append(time.monotonic() - case_start)
            log(f"{tag}: {_outcome(entry)} [suite ETA "
                f"{_duration(clock.eta(index, 0.0, 0.0) if index + 1 < len(cases) else 0.0)}]")
    finally:
        if runner is not None:
            runner.shutdown()
    report["wall_seconds"] = round(time.monotonic() - clock.start, 1)
    report["mean"] = mean_figures(report["cases"])
    report["interrupted"] = interrupted
    write_report(report, out_dir)
    write_contact_sheet(sheet_rows, out_dir / "contact_sheet.png", title=_title(report))
    log(f"report: {out_dir / 'report.md'}")
    return report


def mean_figures(cases: list[dict]) -> dict:
    """Means over the cases that were scored; ``done`` / ``failed`` counts; attribute accuracy per attribute."""
    scored = [c["figures"] for c in cases if c.get("status") == "done" and "figures" in c]
    mean: dict = {"cases": len(cases), "done": len(scored), "failed": len(cases) - len(scored)}
    for name in (*FIGURES, "attribute_accuracy"):
        values = [f[name] for f in scored if f.get(name) is not None]
        mean[name] = sum(values) / len(values) if values else None
    for name in ATTRIBUTES:
        values = [f["attributes"]["correct"][name] for f in scored
                  if name in f.get("attributes", {}).get("correct", {})]
        mean[f"{name}_accuracy"] = sum(values) / len(values) if values else None
    return mean


# -------------------------------------------------------------------- the report files
def write_report(report: dict, out_dir: Path) -> None:
    from pipelines.atomic_files import write_atomic

    write_atomic(out_dir / "report.json", json.dumps(report, indent=2, allow_nan=False))
    write_atomic(out_dir / "report.md", report_markdown(report))


def report_markdown(report: dict) -> str:
    def num(value, digits=2):
        return "–" if value is None else f"{value:.{digits}f}"

    def mark(figures, name):
        correct = figures.get("attributes", {}).get("correct", {})
        if name not in correct:
            return "–"
        predicted = figures["attributes"]["predicted"][name]
        return ("✓ " if correct[name] else "✗ ") + predicted

    overrides = ", ".join(f"{k}={v}" for k, v in report["overrides"].items()) or "none"
    lines = [f"# Evaluation: `{report['pipeline']}` ({report['preset']}) on suite `{report['suite']}`", "",
             f"Started {report['started']}; {report['mean']['done']} of {report['mean']['cases']} case(s) scored; "
             f"wall time {report['wall_seconds']:.0f} s; overrides: {overrides}; held-out views at "
             f"{report['resolution']} px, times {', '.join(str(t) for t in report['eval_times'])}.", "",
             "| case | prompt | status | PSNR dB | SSIM | mask IoU | shape | colour | motion | run s |",
             "| --- | --- | --- | ---: | ---: | ---: | --- | --- | --- | ---: |"]
    for c in report["cases"]:
        f = c.get("figures", {})
        lines.append(f"| {c['name']} | {c['prompt']} | {c['status']} | {num(f.get('psnr'))} | "
                     f"{num(f.get('ssim'), 3)} | {num(f.get('mask_iou'), 3)} | {mark(f, 'shape')} | "
                     f"{mark(f, 'colour')} | {mark(f, 'motion')} | {num(c.get('run_seconds'), 0)} |")
    m = report["mean"]
    lines.append(f"| **mean** | | {m['done']}/{m['cases']} done | {num(m['psnr'])} | {num(m['ssim'], 3)} | "
                 f"{num(m['mask_iou'], 3)} | {num(m['shape_accuracy'])} | {num(m['colour_accuracy'])} | "
                 f"{num(m['motion_accuracy'])} | |")
    if report.get("interrupted"):
        lines += ["", f"Interrupted: {len(report['cases'])} of {report['planned_cases']} case(s) were started."]
    failures = [c for c in report["cases"] if c["status"] != "done"]
    if failures:
        lines += ["", "## Failed cases", ""]
        lines += [f"- **{c['name']}** ({c['status']}): {c['error']}" for c in failures]
    lines += ["", "Attribute columns: the classifier's reading of the result (✓ when it matches the prompt); "
                  "the mean row gives the fraction correct.", "", "![contact sheet](contact_sheet.png)", ""]
    return "\n".join(lines)


def write_contact_sheet(rows: list[dict], path: Path, title: str = "") -> Path:
    """Per case, the ground truth's tiles above the result's (grey with the error when it failed), with a
    label column: name, prompt, figures."""
    from PIL import Image, ImageDraw

    from pipelines.atomic_files import write_atomic

    label_w, gap, header = 230, 6, 34
    tile = SHEET_TILE
    tiles_w = tile * len(SHEET_VIEWS) * len(EVAL_TIMES)
    height = header + len(rows) * (2 * tile + gap) + gap
    sheet = Image.new("RGB", (label_w + tiles_w + 50, max(height, header + 1)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 4), title, fill=(0, 0, 0))
    for k, t in enumerate(EVAL_TIMES):
        x = label_w + 50 + k * tile * len(SHEET_VIEWS)
        draw.text((x + 4, header - 14), f"t = {t:g}", fill=(60, 60, 60))
    y = header
    for row in rows:
        entry = row["entry"]
        sheet.paste(Image.fromarray(row["truth"]), (label_w + 50, y))
        if row["result"] is not None:
            sheet.paste(Image.fromarray(row["result"]), (label_w + 50, y + tile))
        else:
            draw.rectangle((label_w + 50, y + tile, label_w + 50 + tiles_w - 1, y + 2 * tile - 1), fill=(200, 200, 200))
            draw.text((label_w + 56, y + tile + 6), _wrap(f"{entry['status']}: {entry['error']}", 90, 4),
                      fill=(150, 0, 0))
        draw.text((label_w + 4, y + tile // 2 - 6), "truth", fill=(0, 0, 0))
        draw.text((label_w + 4, y + tile + tile // 2 - 6), "result", fill=(0, 0, 0))
        text = f"{row['name']}\n{_wrap(row['prompt'], 36, 2)}"
        f = entry.get("figures")
        if f:
            text += f"\nPSNR {f['psnr']:.2f}  SSIM {f['ssim']:.3f}\nIoU {f['mask_iou']:.3f}"
            if f.get("attribute_accuracy") is not None:
                text += f"  attributes {f['attribute_accuracy']:.2f}"
        else:
            text += f"\n{entry['status']}"
        draw.multiline_text((6, y + 8), text, fill=(0, 0, 0), spacing=3)
        y += 2 * tile + gap
        draw.line((0, y - gap // 2, sheet.width, y - gap // 2), fill=(220, 220, 220))
    import io

    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())


# -------------------------------------------------------------------- small pieces
def _classifier(log):
    from pipelines.world.classifier import load_classifier

    try:
        return load_classifier()
    except FileNotFoundError as err:
        log(f"note: no attribute accuracy: {err}")
        return None


def _sentence(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _relative(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _finite(value):
    """NaN / inf -> None, recursively, so that report.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _outcome(entry: dict) -> str:
    if entry["status"] != "done":
        return f"{entry['status']}: {entry['error']}"
    f = entry["figures"]
    text = (f"done in {_duration(entry['run_seconds'])}: PSNR {f['psnr']:.2f} dB, SSIM {f['ssim']:.3f}, "
            f"mask IoU {f['mask_iou']:.3f}")
    if f.get("attributes"):
        correct = f["attributes"]["correct"]
        text += f", attributes {sum(correct.values())}/{len(correct)}"
    return text


def _title(report: dict) -> str:
    m = report["mean"]
    figures = "  ".join(f"{k} {m[k]:.3f}" for k in FIGURES if m.get(k) is not None)
    return (f"{report['pipeline']} ({report['preset']}) on {report['suite']}: {m['done']}/{m['cases']} scored  "
            f"{figures}   (views at elevation/azimuth {', '.join(f'{e:g}/{a:g}' for e, a in SHEET_VIEWS)})")


def _wrap(text: str, width: int, max_lines: int) -> str:
    import textwrap

    lines = textwrap.wrap(text, width)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 3] + "..."
    return "\n".join(lines)
