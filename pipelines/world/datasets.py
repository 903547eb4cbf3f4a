"""Datasets of the procedural world for training and testing the priors, cached on disk.

One class, :class:`WorldDataset`, serves every layout; the named subclasses fix it:

| layout | item["rgb"] | cameras | times |
| --- | --- | --- | --- |
| ``image`` (:class:`ImageDataset`) | ``[H, W, 3]`` | 1 random view | 1 random t |
| ``multiview`` (:class:`MultiViewDataset`) | ``[V, H, W, 3]`` | V orbit views | 1 random t |
| ``video`` (:class:`VideoDataset`) | ``[F, H, W, 3]`` | 1 random view | F times over the clip |
| ``matrix`` (:class:`MatrixDataset`) | ``[V, F, H, W, 3]`` | V orbit views | F times |
| ``voxels`` (:class:`VoxelDataset`) | none: ``density`` ``[R, R, R]``, ``voxel_rgb`` ``[R, R, R, 3]`` | | 1 t |

Every item also has ``alpha`` and ``depth`` (same layout, last dim 1), ``c2w`` ``[V, 4, 4]``, ``K`` ``[V, 3, 3]``,
``times`` ``[F]``, ``caption`` (a synonym phrasing), ``canonical`` (the canonical caption), ``labels`` (class
indices of shape, colour, motion, material, size) and ``seed``. ``rgb`` is premultiplied by alpha.

Sample ``i`` of a split is the world's seed ``SPLIT_OFFSETS[split] + i``, so the splits never share a scene.
Samples are rendered in shards and kept as compressed ``.npz`` files under ``<data>/world-cache``; a missing
or unreadable shard (or one from another renderer version) is rendered again on first use, and
:meth:`WorldDataset.build` renders all missing shards in parallel processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipelines.world.grammar import WorldSpec, sample_spec
from pipelines.world.render import render_world, voxelize
from renderers.cameras import Cameras, intrinsics_from_fov, look_at, orbit_positions

LAYOUTS = ("image", "multiview", "video", "matrix", "voxels")
SPLIT_OFFSETS = {"train": 0, "validation": 1_000_000, "test": 2_000_000}
MAX_SPLIT_SIZE = 1_000_000
# Bump when the renderer or the grammar changes what a seed renders to: old caches are then ignored.
RENDER_VERSION = 1


@dataclass(frozen=True)
class CameraRig:
    """How dataset cameras are placed: orbit views at ``distance`` with ``fovy`` (degrees) and a random
    elevation in ``elevation``; the V views of a sample are spread evenly in azimuth from a random start."""

    distance: float = 2.7
    fovy: float = 40.0
    elevation: tuple[float, float] = (0.0, 30.0)


def split_seeds(split: str, size: int) -> range:
    """World seeds of the first ``size`` samples of ``split``."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split '{split}' (choose from: {', '.join(SPLIT_OFFSETS)})")
    if not 0 <= size <= MAX_SPLIT_SIZE:
        raise ValueError(f"a split holds at most {MAX_SPLIT_SIZE} samples, asked for {size}")
    start = SPLIT_OFFSETS[split]
    return range(start, start + size)


def sample_views(seed: int, views: int, resolution: int, rig: CameraRig = CameraRig(),
                 single_random: bool = False) -> Cameras:
    """The cameras of sample ``seed``: ``views`` orbit views (azimuths evenly spread from a random start)."""
    rng = np.random.default_rng([seed, 1])
    elevation = rng.uniform(*rig.elevation)
    start = rng.uniform(-180.0, 180.0)
    azimuth = start + (0.0 if single_random else 360.0 * np.arange(views) / views)
    eye = orbit_positions(rig.distance, float(elevation), torch.as_tensor(azimuth, dtype=torch.float32).reshape(-1))
    K = intrinsics_from_fov(rig.fovy, resolution, resolution)
    return Cameras(look_at(eye), K[None].expand(eye.shape[0], 3, 3).clone(), resolution, resolution)


def sample_times(seed: int, layout: str, frames: int) -> np.ndarray:
    """Times of sample ``seed``: ``frames`` evenly spaced over the clip for videos and matrices (from a random
    start for matrices, so training sees every phase), one random time otherwise."""
    rng = np.random.default_rng([seed, 2])
    if layout == "video":
        return np.arange(frames, dtype=np.float32) / frames
    if layout == "matrix":
        return ((rng.uniform() + np.arange(frames) / frames) % 1.0).astype(np.float32)
    return np.array([rng.uniform()], dtype=np.float32)


def sample_caption(spec: WorldSpec) -> str:
    return spec.caption(np.random.default_rng([spec.seed, 3]))


def render_sample(seed: int, layout: str, resolution: int, views: int, frames: int,
                  voxel_resolution: int = 32, rig: CameraRig = CameraRig()) -> dict[str, np.ndarray]:
    """Everything one sample stores, as compact arrays (uint8 colour, float16 depth)."""
    spec = sample_spec(seed)
    n_views = 1 if layout in ("image", "video", "voxels") else views
    n_frames = frames if layout in ("video", "matrix") else 1
    times = sample_times(seed, layout, n_frames)
    cams = sample_views(seed, n_views, resolution, rig, single_random=n_views == 1)
    record = {"c2w": cams.c2w.numpy(), "K": cams.K.numpy(), "times": times,
              "labels": np.array(list(spec.labels().values()), dtype=np.int16)}
    if layout == "voxels":
        grid = voxelize(spec, float(times[0]), voxel_resolution)
        record["density"] = (grid.density.numpy() * 255).round().astype(np.uint8)
        record["voxel_rgb"] = (grid.rgb.numpy() * 255).round().astype(np.uint8)
        return record
    # One call renders the whole V x F matrix: camera v at time f is entry v * F + f.
    all_cams = Cameras(cams.c2w.repeat_interleave(n_frames, 0), cams.K.repeat_interleave(n_frames, 0),
                       resolution, resolution)
    out = render_world(spec, all_cams, torch.from_numpy(np.tile(times, n_views)))
    shape = (n_views, n_frames, resolution, resolution)
    record["rgb"] = (out.rgb.reshape(*shape, 3).numpy() * 255).round().astype(np.uint8)
    record["alpha"] = (out.alpha.reshape(*shape, 1).numpy() * 255).round().astype(np.uint8)
    record["depth"] = out.depth.reshape(*shape, 1).numpy().astype(np.float16)
    return record


def _build_worker() -> None:
    """Set up a process of :meth:`WorldDataset.build`'s pool: one torch thread (the renderer runs one anyway) and
    glibc keeping freed memory (the renderer's large temporaries otherwise page-fault in afresh every step)."""
    from renderers.allocator import tune_cpu_allocator

    torch.set_num_threads(1)
    tune_cpu_allocator()


def _render_shard(args: tuple) -> str:
    path, seeds, layout, resolution, views, frames, voxel_resolution, rig = args
    # one thread while rendering (the renderer runs one anyway), and the caller's count back afterwards: a
    # shard rendered in the calling process (one worker, or a shard read lazily) must not leave a training
    # process on one thread for the rest of its life
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records = [render_sample(s, layout, resolution, views, frames, voxel_resolution, CameraRig(**rig))
                   for s in seeds]
    finally:
        torch.set_num_threads(threads)
    arrays = {key: np.stack([r[key] for r in records]) for key in records[0]}
    arrays["seeds"] = np.asarray(seeds, dtype=np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return str(path)


class WorldDataset(Dataset):
    """Samples ``0 .. size-1`` of ``split`` in ``layout`` (see the module docstring for what an item holds)."""

    def __init__(self, layout: str, split: str = "train", size: int = 1000, *, resolution: int = 64,
                 views: int = 4, frames: int = 4, voxel_resolution: int = 32, rig: CameraRig = CameraRig(),
                 cache_dir: str | Path | None = None, shard_size: int = 64) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown dataset layout '{layout}' (choose from: {', '.join(LAYOUTS)})")
        self.layout, self.split = layout, split
        self.seeds = split_seeds(split, size)
        self.resolution, self.views, self.frames = resolution, views, frames
        self.voxel_resolution, self.rig, self.shard_size = voxel_resolution, rig, shard_size
        if cache_dir is None:
            from pipelines.paths import data_dir

            cache_dir = data_dir() / "world-cache"
        key = json.dumps({"layout": layout, "resolution": resolution, "views": views, "frames": frames,
                          "voxels": voxel_resolution, "rig": asdict(rig), "shard": shard_size,
                          "version": RENDER_VERSION}, sort_keys=True)
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        self.cache_dir = Path(cache_dir) / f"{layout}-{resolution}px-{digest}" / split
        self._shards: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.seeds)

    # ------------------------------------------------------------------------------------------- cache
    def _shard_seeds(self, shard: int) -> range:
        start = shard * self.shard_size
        return self.seeds[start:start + self.shard_size]

    def shard_path(self, shard: int) -> Path:
        return self.cache_dir / f"shard-{shard:05d}.npz"

    @property
    def num_shards(self) -> int:
        return math.ceil(len(self) / self.shard_size)

    def _shard_args(self, shard: int) -> tuple:
        return (str(self.shard_path(shard)), list(self._shard_seeds(shard)), self.layout, self.resolution,
                self.views, self.frames, self.voxel_resolution, asdict(self.rig))

    def _read_shard(self, shard: int) -> dict[str, np.ndarray] | None:
        path = self.shard_path(shard)
        try:
            with np.load(path) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            return None  # missing, truncated or corrupt: render again
        if list(arrays.get("seeds", [])) != list(self._shard_seeds(shard)):
            return None  # the split grew or shrank across this shard
        return arrays

    def build(self, workers: int | None = None) -> int:
        """Render every missing shard, in ``workers`` processes (default: the CPU count); returns how many."""
        missing = [s for s in range(self.num_shards) if self._read_shard(s) is None]
        if not missing:
            return 0
        workers = max(1, min(workers or os.cpu_count() or 1, len(missing)))
        if workers == 1:
            for shard in missing:
                _render_shard(self._shard_args(shard))
        else:
            import multiprocessing

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_build_worker) as pool:
                list(pool.map(_render_shard, [self._shard_args(s) for s in missing]))
        return len(missing)

    def _shard(self, shard: int) -> dict[str, np.ndarray]:
        if shard in self._shards:
            self._shards.move_to_end(shard)
            return self._shards[shard]
        arrays = self._read_shard(shard)
        if arrays is None:
            _render_shard(self._shard_args(shard))
            arrays = self._read_shard(shard)
        self._shards[shard] = arrays
        while len(self._shards) > 2:
            self._shards.popitem(last=False)
        return arrays

    # ------------------------------------------------------------------------------------------- items
    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} of a dataset of {len(self)}")
        index %= len(self)
        shard, row = divmod(index, self.shard_size)
        arrays = self._shard(shard)
        seed = int(arrays["seeds"][row])
        spec = sample_spec(seed)
        item = {"seed": seed, "spec": spec, "caption": sample_caption(spec), "canonical": spec.caption(),
                "labels": {k: int(v) for k, v in zip(spec.labels(), arrays["labels"][row])},
                "c2w": torch.from_numpy(arrays["c2w"][row]), "K": torch.from_numpy(arrays["K"][row]),
                "times": torch.from_numpy(arrays["times"][row])}
        if self.layout == "voxels":
            item["density"] = torch.from_numpy(arrays["density"][row]).float() / 255
            item["voxel_rgb"] = torch.from_numpy(arrays["voxel_rgb"][row]).float() / 255
            return item
        for key in ("rgb", "alpha", "depth"):
            value = torch.from_numpy(arrays[key][row])
            value = value.float() / 255 if key != "depth" else value.float()
            item[key] = _squeeze_layout(value, self.layout)
        return item

    def cameras(self, index: int) -> Cameras:
        item = self[index]
        return Cameras(item["c2w"], item["K"], self.resolution, self.resolution)


def _squeeze_layout(value: torch.Tensor, layout: str) -> torch.Tensor:
    """``[V, F, H, W, c]`` to the layout's shape (see the module table)."""
    if layout == "image":
        return value[0, 0]
    if layout == "multiview":
        return value[:, 0]
    if layout == "video":
        return value[0]
    return value


def collate(items: list[dict]) -> dict:
    """A ``DataLoader`` ``collate_fn``: stacks tensors, keeps captions and specs as lists."""
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif key == "labels":
            out[key] = {k: torch.tensor([v[k] for v in values]) for k in values[0]}
        else:
            out[key] = values
    return out


class ImageDataset(WorldDataset):
    def __init__(self, split: str = "train", size: int = 1000, **kwargs) -> None:
        super().__init__("image", split, size, **kwargs)


class MultiViewDataset(WorldDataset):
    def __init__(self, split: str = "train", size: int = 1000, **kwargs) -> None:
        super().__init__("multiview", split, size, **kwargs)


class VideoDataset(WorldDataset):
    def __init__(self, split: str = "train", size: int = 1000, **kwargs) -> None:
        super().__init__("video", split, size, **kwargs)


class MatrixDataset(WorldDataset):
    def __init__(self, split: str = "train", size: int = 1000, **kwargs) -> None:
        super().__init__("matrix", split, size, **kwargs)


class VoxelDataset(WorldDataset):
    def __init__(self, split: str = "train", size: int = 1000, **kwargs) -> None:
        super().__init__("voxels", split, size, **kwargs)
