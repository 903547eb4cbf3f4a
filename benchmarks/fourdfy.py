"""4D-fy step time per update kind at the `preview` preset, and the projected preview run time.

Target (4D-fy issue): a `preview` run on a 2-core CPU with the in-house prior in under 15 minutes. The prior
here has the bundled architecture's size with random weights (speed does not depend on the weights).
``--quick`` uses a smaller prior and fewer repeats.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchmarks import median_time, parse_args, report


def _write_prior(root: Path, quick: bool) -> None:
    import torch
    from safetensors.torch import save_file

    from pipelines.fourdfy.config import INHOUSE_PRIORS
    from pipelines.models.field_dit import FieldDiT, FieldPriorArch
    from pipelines.models.text import PromptTokenizer

    size = dict(width=32, depth=1, heads=2, text_width=32) if quick else dict(width=96, depth=4, heads=4,
                                                                              text_width=64)
    arch = FieldPriorArch(resolution=32, downsample=4, text_layers=1, vocab_size=PromptTokenizer().vocab_size, **size)
    model = FieldDiT(arch)
    for name in INHOUSE_PRIORS.values():
        (root / name).mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / name / "model.safetensors")
        (root / name / "config.json").write_text(json.dumps({"arch": arch.to_dict()}))
    torch.manual_seed(0)


def main() -> None:
    import os

    import torch

    from pipelines.fourdfy.config import FourDfyConfig
    from pipelines.fourdfy.hybrid import HybridSDS, load_priors, prior_names
    from pipelines.fourdfy.schedule import UPDATE_3D, UPDATE_IMG, UPDATE_VID

    args = parse_args(__doc__.splitlines()[0])
    repeats = 2 if args.quick else 5
    root = Path(tempfile.mkdtemp(prefix="fourd-bench-fourdfy-"))
    _write_prior(root, args.quick)
    os.environ["FOURD_MODELS_DIR"] = str(root)
    config = FourDfyConfig.preset("preview")
    figures = {}
    # p_3d = 0 makes stage 2 all IMG and stage 3 all VID, so each kind is timed on its own
    for kind, step, changes in ((UPDATE_3D, 0, {}), (UPDATE_IMG, config.steps_stage1, {"p_3d": 0.0}),
                                (UPDATE_VID, config.steps_stage1 + config.steps_stage2, {"p_3d": 0.0})):
        cfg = config.replace(**changes)
        hybrid = HybridSDS("a red ball bouncing", cfg, load_priors(prior_names(cfg), torch.device("cpu"), 4))
        counter = iter(range(10_000))

        def one(hybrid=hybrid, step=step, counter=counter):
            plan, _ = hybrid.step(step + next(counter) % 5, torch.Generator().manual_seed(step))
            assert plan.update == kind  # noqa: B023 (kind is fixed for this loop)
        figures[f"preview_{kind}_step_s"] = median_time(one, repeats=repeats)
    t3, ti, tv = (figures[f"preview_{k}_step_s"] for k in (UPDATE_3D, UPDATE_IMG, UPDATE_VID))
    p3, pi = config.p_3d, config.p_img
    stage = [config.steps_stage1 * t3,
             config.steps_stage2 * (p3 * t3 + (1 - p3) * ti),
             config.steps_stage3 * (p3 * t3 + p3 * pi * ti + (1 - p3 - p3 * pi) * tv)]
    for i, seconds in enumerate(stage, 1):
        figures[f"preview_stage{i}_projected_s"] = seconds
    figures["preview_total_projected_s"] = sum(stage)
    report("fourdfy", figures, {"preview_total_projected_s": ("<", 900.0)}, args.json)


if __name__ == "__main__":
    main()
