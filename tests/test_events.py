import json

import numpy as np
import pytest
import torch

from pipelines.context import Cancelled, RunContext
from pipelines.events import (
    Artifact,
    EtaEstimator,
    Log,
    Preview,
    Progress,
    SceneUpdate,
    event_from_record,
    preview_pixels,
)


def test_events_round_trip_through_json_without_arrays():
    events = [
        Progress("stage 1", 3, 10, {"loss": 0.5}, eta_s=12.0),
        Preview("views", image=np.zeros((4, 8, 3), np.uint8), path="previews/a.png", grid=(2, 4), step=3),
        SceneUpdate(scene=object(), path="scene", step=3),
        Artifact("export", "out.glb"),
        Log("hello", level="warning"),
    ]
    for event in events:
        record = json.loads(json.dumps(event.to_record()))
        assert "image" not in record and "scene" not in record
        back = event_from_record(record)
        assert type(back) is type(event)
        assert back.to_record() == event.to_record()
    assert events[0].fraction == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown event type"):
        event_from_record({"type": "bogus"})


def test_context_cancel_and_seeded_generators(tmp_path):
    import threading

    flag = threading.Event()
    ctx = RunContext(tmp_path, seed=7, cancel=flag)
    ctx.check_cancelled()
    a = torch.rand(3, generator=ctx.generator())
    assert torch.equal(a, torch.rand(3, generator=RunContext(tmp_path, seed=7).generator()))
    assert not torch.equal(a, torch.rand(3, generator=ctx.generator(offset=1)))
    flag.set()
    with pytest.raises(Cancelled):
        ctx.check_cancelled()


def test_eta_estimator_counts_down():
    eta = EtaEstimator(total=10)
    assert eta.update(0) is None
    first = eta.update(1)
    assert first is not None and first >= 0
    assert eta.update(10) == 0


def test_preview_pixels_clamp_round_and_leave_the_graph():
    image = torch.tensor([[[-0.5, 0.0, 0.5], [0.998, 1.0, 3.0]]], requires_grad=True)  # [1, 2, 3]
    pixels = preview_pixels(image * 1.0)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 2, 3)
    assert pixels.tolist() == [[[0, 0, 128], [254, 255, 255]]]
