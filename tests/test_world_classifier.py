"""The attribute classifier: it trains end to end, saves and loads, and the bundled one meets its bars."""

import json

import pytest
import torch

from pipelines.world.classifier import (
    CHECKPOINT_NAME,
    HEADS,
    AttributeClassifier,
    ClassifierConfig,
    describe_image,
    load_classifier,
    prompt_accuracy,
    train_classifier,
)
from pipelines.world.grammar import WorldSpec
from pipelines.world.scene import WorldScene

TINY = ClassifierConfig(views=2, frames=4, resolution=16, width=8)


def test_forward_gives_one_logit_per_class():
    model = AttributeClassifier(TINY)
    logits = model(torch.rand(3, 2, 4, 16, 16, 3), torch.rand(3, 2, 4, 16, 16, 1))
    assert {k: tuple(v.shape) for k, v in logits.items()} == {k: (3, len(c)) for k, c in HEADS.items()}


def test_training_saves_a_model_that_loads_and_judges_a_prompt(tmp_path):
    record = train_classifier(tmp_path / "clf", train_size=8, test_size=4, epochs=1, batch=8, config=TINY,
                              cache_dir=tmp_path / "cache", workers=1, log=lambda _: None)
    assert set(record["test_accuracy"]) == set(HEADS)
    model = load_classifier(tmp_path / "clf")
    assert model.config == TINY
    result = prompt_accuracy(WorldScene(WorldSpec("sphere", "red", "bounce")), "a crimson ball hops up and down",
                             model)
    assert result["expected"] == {"shape": "sphere", "colour": "red", "motion": "bounce"}
    assert set(result["predicted"]) == set(HEADS) and 0 <= result["accuracy"] <= 1


def _bundled():
    from assets import asset_path

    try:
        return asset_path("checkpoints", CHECKPOINT_NAME)
    except FileNotFoundError:
        pytest.skip("the attribute classifier has not been trained into assets/ yet")


def test_the_bundled_classifier_meets_the_accuracy_bars():
    record = json.loads((_bundled() / "config.json").read_text())
    acc = record["test_accuracy"]
    assert acc["shape"] >= 0.95 and acc["colour"] >= 0.95 and acc["motion"] >= 0.85, acc


@pytest.mark.slow
def test_the_bundled_classifier_reads_the_examples():
    _bundled()
    model = load_classifier()
    for spec, prompt in ((WorldSpec("torus", "green", "spin", "glossy", "large"), "a green ring spinning"),
                         (WorldSpec("walker", "yellow", "walk", size="large"), "a yellow figure walking")):
        assert prompt_accuracy(WorldScene(spec), prompt, model)["accuracy"] >= 2 / 3


def test_describe_image_names_the_colour_and_shape_of_the_example_images():
    from assets import asset_path
    from pipelines.diffusion2.inputs import load_reference

    for name, caption in (("red_ball.png", "a red sphere"), ("blue_cube.png", "a blue cube"),
                          ("green_torus.png", "a green torus")):
        ref = load_reference(str(asset_path("examples", name)), "image", frames=1)
        assert describe_image(ref.rgb[0], ref.alpha[0]) == caption


def test_describe_image_of_a_clip_also_names_its_motion():
    """A video reference (as given, before recentring) gets its motion in the caption the in-house prior reads."""
    from assets import asset_path
    from pipelines.diffusion2.inputs import load_reference

    for name, caption in (("pink_ball_bounce.mp4", "a pink sphere bouncing"),
                          ("purple_cone_pulse.mp4", "a purple cone pulsing"),
                          ("teal_cylinder_spin.mp4", "a teal cylinder spinning"),
                          ("yellow_walker.mp4", "a yellow walker walking")):
        ref = load_reference(str(asset_path("examples", name)), "video", frames=8)
        assert describe_image(ref.rgb, ref.alpha) == caption, name
