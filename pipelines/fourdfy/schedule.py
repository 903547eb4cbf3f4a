"""Algorithm 1 of 4D-fy as pure functions of the global step: stage, update kind, rates, resolutions, t ranges.

Everything the optimisation does at step ``s`` follows from ``s``, the config and the step's own random
draw, so a run resumed from a checkpoint repeats exactly what an uninterrupted run does.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.fourdfy.config import FourDfyConfig
from pipelines.priors.guidance import anneal_range

UPDATE_3D, UPDATE_IMG, UPDATE_VID = "3d", "img", "vid"
STAGE_TITLES = {1: "1/3 3D SDS", 2: "2/3 +VSD", 3: "3/3 +video"}  # short: progress bars show ~10 chars


@dataclass(frozen=True)
class StepPlan:
    """What step ``step`` (0-based, global) does: its ``stage`` (1-3), ``stage_step`` within the stage,
    the ``update`` kind, the static hash map's learning rate and the dynamic grid's mode."""

    step: int
    stage: int
    stage_step: int
    update: str
    lr_static: float
    dynamic_mode: str


def stage_of(step: int, config: FourDfyConfig) -> tuple[int, int]:
    """(stage 1-3, step within the stage) of the 0-based global ``step``."""
    n1, n2 = config.steps_stage1, config.steps_stage2
    if step < n1:
        return 1, step
    if step < n1 + n2:
        return 2, step - n1
    return 3, step - n1 - n2


def choose_update(stage: int, u: float, p_3d: float, p_img: float) -> str:
    """Algorithm 1 lines 4, 8 and 13 for a uniform draw ``u`` in [0, 1).

    Stage 1: always 3D. Stage 2: 3D with probability P_3D, else IMG. Stage 3: 3D with P_3D, IMG with
    P_3D * P_IMG, VID with the rest (1 - P_3D - P_3D * P_IMG; the text says 1 - P_3D * P_IMG, which does
    not sum to one with P_3D, so the listed cases are taken in order).
    """
    if stage == 1:
        return UPDATE_3D
    if stage == 2:
        return UPDATE_3D if u < p_3d else UPDATE_IMG
    if u < p_3d:
        return UPDATE_3D
    if u < p_3d + p_3d * p_img:
        return UPDATE_IMG
    return UPDATE_VID


def plan_step(step: int, u: float, config: FourDfyConfig) -> StepPlan:
    """The plan of global ``step`` given its uniform draw ``u``."""
    stage, stage_step = stage_of(step, config)
    update = choose_update(stage, u, config.p_3d, config.p_img)
    # Alg. 1 line 11: lower the static rate before stage 3; line 2 / 14: dynamic grid frozen except VID.
    lr_static = config.lr_static_stage3 if stage == 3 else config.lr_static
    if stage < 3:
        mode = "off"  # a static scene: the (zero-initialised, frozen) dynamic grid is not even evaluated
    else:
        mode = "train" if update == UPDATE_VID else "frozen"
    return StepPlan(step, stage, stage_step, update, lr_static, mode)


def render_size_3d(step: int, config: FourDfyConfig) -> int:
    """Multi-view render size: ``render_3d_start`` until ``render_3d_switch`` steps, then ``render_3d``."""
    return config.render_3d_start if step < config.render_3d_switch else config.render_3d


def t_range(update: str, step: int, config: FourDfyConfig) -> tuple[float, float]:
    """The noise-level range (fraction of the ladder) of an update at global ``step``: 3D and IMG anneal
    their upper bound (MVDream, ProlificDreamer), video SDS keeps its range."""
    if update == UPDATE_3D:
        return anneal_range(step, config.t_anneal_3d_steps, config.t_range_3d, config.t_range_3d_end)
    if update == UPDATE_IMG:
        since = max(0, step - config.steps_stage1)  # VSD starts with stage 2
        return anneal_range(since, config.t_anneal_img_steps, config.t_range_img, config.t_range_img_end)
    return tuple(config.t_range_video)


LOSS_OF_UPDATE = {UPDATE_3D: "sds_3d", UPDATE_IMG: "vsd", UPDATE_VID: "sds_video"}


class StagePlateau:
    """Early stopping of a stage whose guidance losses no longer fall (asked for by users of 4D-fy, whose
    fixed step counts run for a day). Each update kind's loss is smoothed with an exponential moving
    average over about ``patience / 4`` of its updates; the stage has plateaued when every kind it has seen
    has gone ``patience`` updates without its smoothed loss falling ``tolerance`` (relative) below its best.
    SDS losses are noisy, so the patience counts updates, and no stage ends before each kind has had
    ``patience`` updates. ``patience`` 0 never stops."""

    def __init__(self, patience: int, tolerance: float = 0.01) -> None:
        self.patience, self.tolerance = patience, tolerance
        self.reset()

    def reset(self) -> None:
        self._kinds: dict[str, dict[str, float]] = {}

    def update(self, kind: str, loss: float) -> bool:
        """Record one update's loss; True when the stage has plateaued."""
        if self.patience <= 0 or loss != loss:  # off, or a NaN loss (the run's own checks report it)
            return False
        k = self._kinds.setdefault(kind, {"n": 0, "ema": loss, "best": float("inf"), "since": 0})
        alpha = 1.0 / max(1.0, self.patience / 4)
        k["n"] += 1
        k["ema"] = loss if k["n"] == 1 else (1 - alpha) * k["ema"] + alpha * loss
        if k["ema"] < k["best"] * (1 - self.tolerance):  # the first update always sets a best (below inf)
            k["best"], k["since"] = k["ema"], 0
        else:
            k["since"] += 1
        return all(v["n"] >= self.patience and v["since"] >= self.patience for v in self._kinds.values())
