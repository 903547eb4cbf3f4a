"""`fourd doctor`: what this installation can do, in one screen."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import sys
from pathlib import Path


def _accelerator(module: str, probe) -> str:
    """'ready', 'installed, no CUDA device' or 'not installed' — without importing when absent."""
    if importlib.util.find_spec(module) is None:
        return "not installed"
    import torch

    if not torch.cuda.is_available():
        return "installed, no CUDA device (pure-torch path used)"
    try:
        probe()
        return "ready"
    except Exception as err:  # a broken CUDA extension must not stop the report
        return f"installed but unusable: {type(err).__name__}: {err}"


def _import(name: str):
    return lambda: importlib.import_module(name)


def _free_disk(path: Path) -> str:
    while not path.exists():
        path = path.parent
    return f"{shutil.disk_usage(path).free / 2**30:.1f} GiB free"


def report() -> list[tuple[str, str]]:
    import torch

    import assets
    from pipelines import paths

    rows = [
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("torch", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'no'})"),
    ]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rows.append(("device", f"cuda: {props.name}, {props.total_memory / 2**30:.1f} GiB "
                               f"({torch.cuda.device_count()} device(s))"))
    else:
        rows.append(("device", f"cpu ({torch.get_num_threads()} threads); no CUDA device"))
    rows += [
        ("gsplat", _accelerator("gsplat", _import("gsplat"))),
        ("nerfacc", _accelerator("nerfacc", _import("nerfacc"))),
        ("tiny-cuda-nn", _accelerator("tinycudann", _import("tinycudann"))),
    ]
    checkpoints = assets.bundled_checkpoints()
    rows += [
        ("data folder", f"{paths.data_dir()} ({_free_disk(paths.data_dir())})"),
        ("runs", str(paths.runs_dir())),
        ("models", str(paths.models_dir())),
        ("hf cache", str(paths.hf_cache_dir())),
        ("bundled models", ", ".join(f"{assets.checkpoint_name(p)} ({p.stat().st_size / 2**20:.1f} MiB)"
                                     for p in checkpoints) if checkpoints else "none bundled yet"),
    ]
    return rows


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fourd doctor", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in report():
        table.add_row(key, value)
    Console().print(table)
    return 0
