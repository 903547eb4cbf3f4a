"""The prior evaluation's own measures: silhouettes from RGB, the visual-hull consistency, pooled PSNR."""

import torch

from pipelines.models.evaluate import (
    ORBIT_AZIMUTHS,
    alpha_from_rgb,
    camera_use,
    evaluation_cases,
    hull_consistency,
    identity_agreement,
    orbit,
    pooled_psnr,
    render_truth,
    shape_by_motion,
)
from pipelines.world import grammar


def test_alpha_from_rgb_is_a_silhouette_on_black():
    rgb = torch.zeros(4, 4, 3)
    rgb[1:3, 1:3] = torch.tensor([0.3, 0.1, 0.05])
    alpha = alpha_from_rgb(rgb)
    assert alpha.shape == (4, 4, 1)
    assert alpha[1:3, 1:3].min() == 1 and alpha.sum() == 4


def test_hull_consistency_separates_a_real_object_from_mismatched_views():
    spec = grammar.WorldSpec("cube", "red", "still")
    cams = orbit(ORBIT_AZIMUTHS, 32)
    views = render_truth(spec, cams, [0.0] * 4)
    truth = alpha_from_rgb(views)[..., 0] > 0.5
    consistent = hull_consistency(truth, cams)
    # the same silhouettes, each shifted sideways by a different amount: no single object explains them
    shifted = torch.stack([torch.roll(truth[i], shifts=3 * i, dims=1) for i in range(4)])
    assert consistent > 0.6
    assert hull_consistency(shifted, cams) < consistent - 0.2


def test_identity_agreement_asks_whether_the_views_show_one_object():
    from pipelines.world.classifier import load_classifier

    cams = orbit(ORBIT_AZIMUTHS, 32)
    one = render_truth(grammar.WorldSpec("cube", "red", "still"), cams, [0.0] * 4)
    other = render_truth(grammar.WorldSpec("sphere", "blue", "still"), cams, [0.0] * 4)
    mixed = torch.cat([one[:2], other[2:]])          # two views of a red cube, two of a blue sphere
    classifier = load_classifier()
    assert identity_agreement(classifier, torch.stack([one, other])) == 1.0
    assert identity_agreement(classifier, torch.stack([one, mixed])) == 0.5


def test_pooled_psnr_is_not_dominated_by_exact_images():
    target = torch.rand(3, 8, 8, 3)
    pred = target.clone()
    pred[0] += 0.1
    pooled = pooled_psnr(pred.clamp(0, 1), target)
    assert 20 < pooled < 35


def test_evaluation_cases_keep_held_out_combinations_apart():
    held = [("sphere", "pink", "bounce"), ("cube", "brown", "still")]
    cases = evaluation_cases(6, held)
    assert sum(c.held_out for c in cases) == 2 and len(cases) == 8
    assert all((c.spec.shape, c.spec.colour, c.spec.motion) not in held for c in cases if not c.held_out)
    assert all(grammar.attributes_from_text(c.prompt)["shape"] == c.spec.shape for c in cases)



def test_shape_by_motion_counts_each_motion_apart():
    cases = evaluation_cases(12, [("sphere", "pink", "bounce")])
    motion = cases[0].spec.motion
    # every prompt with the first case's motion read as the wrong shape, everything else right
    wrong = {"sphere": "cube"}
    predicted = [{"shape": wrong.get(c.spec.shape, "sphere") if c.spec.motion == motion else c.spec.shape}
                 for c in cases]
    table = shape_by_motion(predicted, cases)
    assert sum(v["prompts"] for v in table.values()) == len(cases)
    assert table[motion]["shape"] == 0.0 and table[motion]["prompts"] == sum(c.spec.motion == motion for c in cases)
    assert all(v["shape"] == 1.0 for m, v in table.items() if m != motion)


def test_camera_use_is_zero_for_a_model_blind_to_its_cameras():
    """camera_use isolates the camera: views share the noisy input, so only the ray embedding can tell them apart."""
    from pipelines.models.field_dit import FieldDiT, FieldPriorArch
    from pipelines.models.text import PromptTokenizer
    from pipelines.priors.inhouse import FieldPrior

    torch.manual_seed(0)
    tokenizer = PromptTokenizer(8)
    arch = FieldPriorArch(resolution=16, downsample=4, width=32, depth=1, heads=2, text_width=32, text_layers=1,
                          text_length=8, vocab_size=tokenizer.vocab_size)
    model = FieldDiT(arch).eval()
    for layer in (model.final, model.final_ada):  # zero-initialised: give the untrained model an output
        torch.nn.init.normal_(layer.weight, std=0.2)
    prior = FieldPrior(model, "text-to-multiview", "inhouse-t2mv")
    cams = orbit(ORBIT_AZIMUTHS, 16).c2w.reshape(4, 16)
    prompts = ["a red cube", "a blue sphere bouncing"]
    seeing = camera_use(prior, prompts, cams)
    assert seeing["between views"] > 1e-3 and seeing["between prompts"] > 1e-3
    torch.nn.init.zeros_(model.ray.weight)
    torch.nn.init.zeros_(model.ray.bias)
    blind = camera_use(prior, prompts, cams)
    assert blind["between views"] < 1e-6 and blind["between prompts"] > 1e-3
