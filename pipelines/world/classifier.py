"""The attribute classifier: a small CNN that reads a multi-view video and names shape, colour and motion.

It is trained on ground-truth renders of the world (:func:`train_classifier`, ``fourd world train-classifier``)
and judges generated results: :func:`prompt_accuracy` renders a `Scene` on the classifier's rig and checks
the predicted attributes against those the prompt names.

Input: ``VIEWS`` views (opposite azimuths) x ``FRAMES`` frames at ``RESOLUTION`` px, premultiplied RGB and
alpha stacked along channels per view (frames in order, so motion is visible to the first convolution);
view features are averaged, then three linear heads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pipelines.world.grammar import COLOURS, MOTIONS, SHAPES, attributes_from_text
from renderers.scene import Scene

HEADS = {"shape": SHAPES, "colour": COLOURS, "motion": MOTIONS}
CHECKPOINT_NAME = "world_classifier"


@dataclass(frozen=True)
class ClassifierConfig:
    views: int = 2
    frames: int = 8
    resolution: int = 32
    width: int = 32


class AttributeClassifier(nn.Module):
    """``forward(rgb [B, V, F, H, W, 3], alpha [B, V, F, H, W, 1])`` -> logits per head ``{name: [B, classes]}``."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.width
        # The first convolution sees all frames at once (motion) and halves the resolution right away:
        # the classifier must train on a CPU in minutes.
        self.encoder = nn.Sequential(
            nn.Conv2d(4 * config.frames, w, 3, stride=2, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(4 * w, len(classes)) for name, classes in HEADS.items()})

    def forward(self, rgb: Tensor, alpha: Tensor) -> dict[str, Tensor]:
        b, v, f, h, w, _ = rgb.shape
        x = torch.cat([rgb, alpha], -1).permute(0, 1, 2, 5, 3, 4).reshape(b * v, f * 4, h, w)
        features = self.encoder(x * 2 - 1).reshape(b, v, -1).mean(1)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, rgb: Tensor, alpha: Tensor) -> list[dict[str, str]]:
        """Attribute names for each of the B inputs."""
        logits = self.eval()(rgb, alpha)
        picks = {name: value.argmax(-1).tolist() for name, value in logits.items()}
        return [{name: HEADS[name][picks[name][i]] for name in HEADS} for i in range(rgb.shape[0])]


def _dataset(split: str, size: int, config: ClassifierConfig, cache_dir: Path | None, workers: int | None):
    from pipelines.world.datasets import MatrixDataset

    data = MatrixDataset(split, size, resolution=config.resolution, views=config.views, frames=config.frames,
                         cache_dir=cache_dir)
    data.build(workers)
    return data


def _tensors(data) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    rgb, alpha, labels = [], [], {name: [] for name in HEADS}
    for i in range(len(data)):
        item = data[i]
        rgb.append(item["rgb"])
        alpha.append(item["alpha"])
        for name in HEADS:
            labels[name].append(item["labels"][name])
    return torch.stack(rgb), torch.stack(alpha), {k: torch.tensor(v) for k, v in labels.items()}


def accuracy(model: AttributeClassifier, rgb: Tensor, alpha: Tensor, labels: dict[str, Tensor],
             batch: int = 128) -> dict[str, float]:
    correct = {name: 0 for name in HEADS}
    model.eval()
    with torch.no_grad():
        for s in range(0, rgb.shape[0], batch):
            logits = model(rgb[s:s + batch], alpha[s:s + batch])
            for name in HEADS:
                correct[name] += int((logits[name].argmax(-1) == labels[name][s:s + batch]).sum())
    return {name: correct[name] / rgb.shape[0] for name in HEADS}


def train_classifier(out_dir: str | Path | None = None, *, train_size: int = 3000, test_size: int = 500,
                     epochs: int = 24, batch: int = 64, lr: float = 3e-3, seed: int = 0,
                     config: ClassifierConfig = ClassifierConfig(), cache_dir: str | Path | None = None,
                     workers: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Train the classifier on the world's train split, measure it on the test split, and save
    ``model.safetensors`` + ``config.json`` (with the test accuracies) to ``out_dir`` (default: the bundled
    ``assets/checkpoints/world_classifier``). Returns the config record."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    start = time.perf_counter()
    train = _tensors(_dataset("train", train_size, config, cache_dir, workers))
    test = _tensors(_dataset("test", test_size, config, cache_dir, workers))
    log(f"rendered {train_size} + {test_size} samples in {time.perf_counter() - start:.0f} s")
    model = AttributeClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((train_size + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    gen = torch.Generator().manual_seed(seed)
    rgb, alpha, labels = train
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(train_size, generator=gen)
        total = 0.0
        for s in range(0, train_size, batch):
            i = order[s:s + batch]
            x, a = rgb[i], alpha[i]
            if torch.rand((), generator=gen) < 0.5:  # mirror: a walk or an orbit seen in a mirror is still one
                x, a = x.flip(-2), a.flip(-2)
            logits = model(x, a)
            loss = sum(loss_fn(logits[name], labels[name][i]) for name in HEADS)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(i)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / train_size:.3f}")
    test_acc = accuracy(model, *test)
    log("test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in test_acc.items()))
    record = {"config": asdict(config), "test_accuracy": test_acc, "train_size": train_size,
              "test_size": test_size, "epochs": epochs, "seed": seed,
              "train_seconds": round(time.perf_counter() - start, 1)}
    if out_dir is None:
        out_dir = Path(__file__).resolve().parents[2] / "assets" / "checkpoints" / CHECKPOINT_NAME
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(out_dir / "model.safetensors")
    tmp = out_dir / "config.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out_dir / "config.json")
    return record


def load_classifier(directory: str | Path | None = None) -> AttributeClassifier:
    """The trained classifier from ``directory`` (default: the bundled one)."""
    from safetensors.torch import load_file

    if directory is None:
        from assets import asset_path

        try:
            directory = asset_path("checkpoints", CHECKPOINT_NAME)
        except FileNotFoundError:
            raise FileNotFoundError("the attribute classifier is not bundled; train it with "
                                    "'fourd world train-classifier'.") from None
    directory = Path(directory)
    record = json.loads((directory / "config.json").read_text())
    model = AttributeClassifier(ClassifierConfig(**record["config"]))
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.eval()


def classifier_inputs(scene: Scene, config: ClassifierConfig, elevation: float = 15.0, azimuth: float = 30.0,
                      distance: float = 2.7, fovy: float = 40.0) -> tuple[Tensor, Tensor]:
    """Render ``scene`` on the classifier's rig: ``rgb`` ``[1, V, F, H, W, 3]``, ``alpha`` ``[1, V, F, H, W, 1]``."""
    from renderers.cameras import orbit_cameras

    az = azimuth + 360.0 * np.arange(config.views) / config.views
    cams = orbit_cameras(distance, elevation, torch.tensor(az, dtype=torch.float32), fovy, config.resolution,
                         config.resolution)
    rgb, alpha = [], []
    for f in range(config.frames):
        out = scene.render(cams, f / config.frames)
        rgb.append(out.rgb.float().cpu())
        alpha.append(out.alpha.float().cpu())
    return torch.stack(rgb, 1)[None], torch.stack(alpha, 1)[None]


def prompt_accuracy(scene: Scene, prompt: str, model: AttributeClassifier | None = None) -> dict:
    """Which of the attributes named in ``prompt`` the classifier sees in ``scene``.

    Returns ``{"expected": {...}, "predicted": {...}, "correct": {name: bool}, "accuracy": fraction}``
    over the attributes the prompt names (shape, colour, motion); accuracy is NaN when it names none.
    """
    model = load_classifier() if model is None else model
    expected = {k: v for k, v in attributes_from_text(prompt).items() if k in HEADS}
    predicted = model.predict(*classifier_inputs(scene, model.config))[0]
    correct = {k: predicted[k] == v for k, v in expected.items()}
    return {"expected": expected, "predicted": predicted, "correct": correct,
            "accuracy": sum(correct.values()) / len(correct) if correct else float("nan")}


def describe_image(rgb: Tensor, alpha: Tensor, model: AttributeClassifier | None = None) -> str:
    """A caption "a <colour> <shape>" of one straight-colour image ``rgb`` ``[H, W, 3]`` with ``alpha``
    ``[H, W, 1]`` (the subject on any background), read by the attribute classifier; given a clip
    (``[F, H, W, 3]`` and ``[F, H, W, 1]``) also its motion: "a <colour> <shape> <motion>".

    The in-house prior follows captions far more reliably than reference images, so pipelines that run it on
    an image or a video without a prompt describe it in the words the prior was trained on. One image cannot
    show a motion, so its caption names none.
    """
    import torch.nn.functional as F

    from pipelines.world.grammar import MOTION_WORDS

    model = load_classifier() if model is None else model
    c = model.config
    clip = rgb.ndim == 4
    rgb, alpha = (rgb, alpha) if clip else (rgb[None], alpha[None])
    # the clip's frames spread over the classifier's (one image: every frame the same)
    pick = torch.linspace(0, rgb.shape[0] - 1, c.frames).round().long()
    premultiplied = (rgb * alpha)[pick].movedim(-1, 1)
    size = (c.resolution, c.resolution)
    x = F.interpolate(torch.cat([premultiplied, alpha[pick].movedim(-1, 1)], 1), size=size, mode="bilinear",
                      align_corners=False, antialias=True).movedim(1, -1)
    x = x[None, None].expand(1, c.views, *x.shape)
    attributes = model.predict(x[..., :3], x[..., 3:])[0]
    article = "an" if attributes["colour"][0] in "aeiou" else "a"
    caption = f"{article} {attributes['colour']} {attributes['shape']}"
    return f"{caption} {MOTION_WORDS[attributes['motion']][0][0]}" if clip else caption
