"""Reference inputs of Diffusion²: an image or a video of one subject, made ready for the priors.

- Reading: images through imageio, videos through PyAV (imageio's ``pyav`` plugin); too-large inputs are
  refused and too-long videos are cut, each with one sentence saying so.
- Foreground: an alpha channel is used as is. Without one, the subject is separated from a plain
  background by a *border colour model* (no downloaded weights): the background colour is the median of
  the image border, a pixel is foreground when its colour is far from it, and the mask is cleaned by a
  morphological opening, the largest connected components and hole filling (the classic chroma-key /
  GrabCut initialisation idea, without the graph cut). When the border is not one colour, or nothing or
  everything differs from it, the input is refused with a sentence that says to supply alpha.
- Recentring and rescaling: one crop transform for all frames, centred on the union of the subject's
  boxes, so motion stays motion; the subject's larger side in a typical frame becomes ``fill`` of the
  output (as for an image), unless its motion would then leave the frame.
- Frame selection: F frames evenly spread over the clip; a shorter clip is resampled (frames repeat).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MAX_PIXELS = 4096 * 4096
MAX_VIDEO_FRAMES = 600


class InputError(ValueError):
    """A reference image or video that cannot be used; the message says why and what to do."""


@dataclass
class Reference:
    """Straight (not premultiplied) colour ``rgb`` ``[N, H, W, 3]`` and ``alpha`` ``[N, H, W, 1]`` in [0, 1]
    of N frames (1 for an image); ``notes`` are sentences for the run log."""

    rgb: Tensor
    alpha: Tensor
    notes: list[str] = field(default_factory=list)
    #: Where these frames sit in the frames given, in units of the given height: the side of the square they
    #: show, and its centre's offset from the given frame's centre (right, down). (1, 0, 0): the frames as given.
    framing: tuple[float, float, float] = (1.0, 0.0, 0.0)

    def composite(self, background: float) -> Tensor:
        """Frames over a flat background: ``[N, H, W, 3]``."""
        return self.rgb * self.alpha + background * (1 - self.alpha)


def read_image(path: str | Path) -> np.ndarray:
    """``[H, W, 3 | 4]`` uint8; raises InputError for an unreadable, empty or too large file. Read with
    Pillow (PNG, JPEG, WebP, BMP, TIFF), so imageio does not try its other plugins on a file of another kind."""
    import imageio.v3 as iio

    path = Path(path)
    try:
        props = iio.improps(path, plugin="pillow")
        if int(np.prod(props.shape[:2])) > MAX_PIXELS:
            raise InputError(f"The image {path.name} is {props.shape[1]}x{props.shape[0]} pixels, more than the "
                             f"{int(MAX_PIXELS ** 0.5)}x{int(MAX_PIXELS ** 0.5)} this pipeline accepts; "
                             "downscale it first.")
        image = iio.imread(path, plugin="pillow")
    except InputError:
        raise
    except Exception as err:  # imageio raises many kinds for a bad file
        raise InputError(f"Cannot read the image {path.name} ({err}); use a PNG or JPEG file.") from err
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 8:
        raise InputError(f"The image {path.name} has shape {image.shape}; expected an RGB or RGBA picture.")
    if image.dtype != np.uint8:
        image = (image.astype(np.float64) / np.iinfo(image.dtype).max * 255).round().astype(np.uint8)
    return image


def read_video(path: str | Path, max_frames: int = MAX_VIDEO_FRAMES) -> tuple[np.ndarray, list[str]]:
    """Frames ``[N, H, W, 3]`` uint8 (at most ``max_frames``) and notes; InputError for a bad file."""
    import imageio.v3 as iio

    path = Path(path)
    notes = []
    frames = []
    try:
        for i, frame in enumerate(iio.imiter(path, plugin="pyav")):
            if i == 0 and int(np.prod(frame.shape[:2])) > MAX_PIXELS:
                raise InputError(f"The video {path.name} is {frame.shape[1]}x{frame.shape[0]} pixels, too large; "
                                 "downscale it first.")
            if i >= max_frames:
                notes.append(f"The video {path.name} is longer than {max_frames} frames; only the first "
                             f"{max_frames} are used.")
                break
            frames.append(frame[..., :3])
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"Cannot read the video {path.name} ({err}); use an MP4, WebM or GIF file.") from err
    if not frames:
        raise InputError(f"The video {path.name} has no frames.")
    return np.stack(frames), notes


def border_colour(images: np.ndarray, width: int = 2) -> tuple[np.ndarray, float]:
    """Median colour ``[3]`` of the border pixels of ``images`` ``[N, H, W, 3]`` (float 0-1) and the fraction
    of border pixels within 0.1 of it (1 for a flat background)."""
    b = np.concatenate([images[:, :width].reshape(-1, 3), images[:, -width:].reshape(-1, 3),
                        images[:, :, :width].reshape(-1, 3), images[:, :, -width:].reshape(-1, 3)])
    colour = np.median(b, 0)
    return colour, float((np.abs(b - colour).max(-1) < 0.1).mean())


def extract_foreground(images: np.ndarray, name: str = "input", background: np.ndarray | None = None,
                       threshold: float = 0.12) -> np.ndarray:
    """Alpha ``[N, H, W, 1]`` (float 0-1) of the subject in ``images`` ``[N, H, W, 3]`` (float 0-1) on a plain
    background (the border colour, or ``background`` ``[3]`` when known). Raises InputError when the
    subject cannot be separated."""
    from scipy import ndimage

    if background is None:
        background, flat = border_colour(images)
        if flat < 0.8:
            raise InputError(f"Cannot separate the subject of {name} from its background: the background is not "
                             "one plain colour; supply a PNG with an alpha channel (a transparent background).")
    dist = np.abs(images - np.asarray(background)).max(-1)  # [N, H, W]
    masks = []
    for d in dist:
        m = ndimage.binary_opening(d > threshold, iterations=1)
        labels, count = ndimage.label(m)
        if count:
            sizes = ndimage.sum(m, labels, range(1, count + 1))
            m = np.isin(labels, 1 + np.nonzero(sizes >= 0.1 * sizes.max())[0])
        m = ndimage.binary_fill_holes(m)
        # Soft edge: a pixel's alpha ramps with its colour distance over the last part of the threshold.
        soft = np.clip((d - 0.5 * threshold) / (0.5 * threshold), 0, 1)
        masks.append(np.where(m, np.maximum(soft, ndimage.binary_erosion(m)), 0.0))
    alpha = np.stack(masks)[..., None].astype(np.float32)
    coverage = float((alpha > 0.5).mean())
    if coverage < 0.002:
        raise InputError(f"Cannot find a subject in {name}: nothing differs from the background colour; supply a "
                         "PNG with an alpha channel.")
    if coverage > 0.9:
        raise InputError(f"Cannot separate the subject of {name}: it fills the whole picture; supply a PNG with an "
                         "alpha channel or a picture with a plain background around the subject.")
    return alpha


def subject_box(alpha: Tensor, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the union of the subject over all frames ``[N, H, W, 1]``, exclusive ends."""
    m = (alpha[..., 0] > threshold).any(0)
    rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def recentre(ref: Reference, size: int, fill: float = 0.6, margin: float = 0.95) -> Reference:
    """The subject centred in a ``size`` x ``size`` square, one transform for all frames (so the subject's
    motion inside the clip is kept). Its larger side becomes ``fill`` of the square, as in a single image,
    measured on a typical frame (the median over frames), not on the union of its motion: a bouncing ball
    keeps the size the priors know balls at. Only when the motion would leave the square is the subject
    made smaller, so that the union of its frames spans ``margin`` of it."""
    import torch.nn.functional as F

    top, bottom, left, right = subject_box(ref.alpha)
    sizes = []
    for frame in ref.alpha:
        if bool((frame > 0.5).any()):
            t, b, l_, r = subject_box(frame[None])
            sizes.append(max(b - t, r - l_))
    typical = float(np.median(sizes)) if sizes else float(max(bottom - top, right - left))
    side = max(typical / fill, max(bottom - top, right - left) / margin)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    # Sample the square [cy - side/2, cy + side/2] x [cx - side/2, cx + side/2] of the input (zeros outside).
    h, w = ref.rgb.shape[1:3]
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    ys = (cy + lin * side) / h * 2 - 1
    xs = (cx + lin * side) / w * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None].expand(ref.rgb.shape[0], -1, -1, -1)
    premult = torch.cat([ref.rgb * ref.alpha, ref.alpha], -1).permute(0, 3, 1, 2)
    out = F.grid_sample(premult, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if side > max(h, w):  # shrinking: average over the footprint instead of point-sampling
        out = F.grid_sample(F.avg_pool2d(premult, 3, 1, 1), grid, mode="bilinear", align_corners=False)
    out = out.permute(0, 2, 3, 1)
    alpha = out[..., 3:].clamp(0, 1)
    rgb = torch.where(alpha > 1e-4, out[..., :3] / alpha.clamp_min(1e-4), torch.zeros(()))
    return Reference(rgb.clamp(0, 1), alpha, list(ref.notes), (side / h, (cx - w / 2) / h, (cy - h / 2) / h))


def resize(ref: Reference, size: int) -> Reference:
    """Both sides to ``size`` (antialiased), keeping premultiplied colour consistent with alpha."""
    import torch.nn.functional as F

    premult = torch.cat([ref.rgb * ref.alpha, ref.alpha], -1).permute(0, 3, 1, 2)
    out = F.interpolate(premult, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = out.permute(0, 2, 3, 1)
    alpha = out[..., 3:].clamp(0, 1)
    rgb = torch.where(alpha > 1e-4, out[..., :3] / alpha.clamp_min(1e-4), torch.zeros(()))
    return Reference(rgb.clamp(0, 1), alpha, list(ref.notes))


def select_frames(count: int, frames: int) -> tuple[list[int], str | None]:
    """Indices of ``frames`` frames evenly spread over a clip of ``count`` and a note when it had to repeat."""
    idx = np.linspace(0, count - 1, frames).round().astype(int).tolist()
    note = None
    if count < frames:
        note = f"The video has {count} frames, fewer than the {frames} the matrix needs; frames are repeated."
    return idx, note


def load_reference(path: str | Path, kind: str, frames: int = 1, background: np.ndarray | None = None) -> Reference:
    """Read an image (``kind="image"``) or a video (``"video"``, ``frames`` selected) with its subject mask."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {kind} {path} does not exist.")
    notes: list[str] = []
    if kind == "image":
        data = read_image(path)[None]
    elif kind == "video":
        data, notes = read_video(path)
        idx, note = select_frames(len(data), frames)
        data = data[idx]
        notes += [note] if note else []
    else:
        raise ValueError(f"unknown reference kind {kind!r}")
    rgb = data[..., :3].astype(np.float32) / 255
    if data.shape[-1] == 4:
        alpha = data[..., 3:].astype(np.float32) / 255
        if (alpha > 0.5).mean() < 0.002:
            raise InputError(f"The image {path.name} is transparent everywhere; there is no subject to animate.")
    else:
        alpha = extract_foreground(rgb, path.name, background)
        notes.append(f"The subject of {path.name} was separated from its background by colour (no alpha channel).")
    return Reference(torch.from_numpy(rgb), torch.from_numpy(alpha), notes)


def from_generated(images: Tensor, background: float) -> Reference:
    """A Reference from prior outputs ``[N, H, W, 3]`` on a known flat ``background`` (text -> image step)."""
    rgb = images.clamp(0, 1).cpu().numpy()
    alpha = extract_foreground(rgb, "the generated image", np.full(3, background, np.float32), threshold=0.08)
    straight = np.where(alpha > 1e-4, (rgb - background * (1 - alpha)) / np.maximum(alpha, 1e-4), 0)
    return Reference(torch.from_numpy(straight.clip(0, 1).astype(np.float32)), torch.from_numpy(alpha))
