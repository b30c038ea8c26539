"""Direction builders: the general two-model difference, autoguidance, UNets as ε-callables, AutoGuidance end to end."""

from __future__ import annotations

import math

import pytest
import torch

from nlg import refine_noise
from nlg.autoguidance import AutoGuidance, autoguidance_direction, guidance_direction, unet_epsilon
from nlg.testing import make_scheduler


def tiny_unet(seed: int, out_channels: int = 1):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=out_channels, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, num_class_embeds=11,
    ).eval()


@pytest.fixture(scope="module")
def unets():
    return tiny_unet(0), tiny_unet(1)


def latents(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_difference_and_gamma_formula_of_any_two_callables():
    x = latents(3)
    d = guidance_direction(lambda n: 2 * n, lambda n: n + 1)
    torch.testing.assert_close(d(x), x - 1)
    d_gamma = guidance_direction(lambda n: 2 * n, lambda n: n + 1, gamma=3.0)
    torch.testing.assert_close(d_gamma(x), 3 * 2 * x + (1 - 3) * (x + 1))


def test_index_reaches_callables_that_take_it():
    weights = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)
    x = latents(3)

    def positive(n, index=None):
        return n * (weights if index is None else weights[index])

    d = guidance_direction(positive, lambda n: torch.zeros_like(n))
    index = torch.tensor([0, 2])
    torch.testing.assert_close(d(x[index], index=index), x[index] * weights[index])


def test_weak_model_of_another_shape_is_refused(unets):
    d = autoguidance_direction(lambda n: n, lambda n: n[:, :, :4])
    with pytest.raises(ValueError, match="weak model output has shape"):
        d(latents(2))
    with pytest.raises(ValueError, match="weak model outputs 2 channels"):
        AutoGuidance(unets[0], tiny_unet(1, out_channels=2), make_scheduler("ddim"))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_unet_epsilon_matches_a_direct_call(unets, prediction_type):
    sched = make_scheduler("ddim", prediction_type)
    labels = torch.tensor([3, 10, 7])
    x = latents(3)
    eps = unet_epsilon(unets[0], sched, class_labels=labels)
    with torch.no_grad():
        out = unets[0](x, 999, class_labels=labels).sample
    ab = float(sched.alphas_cumprod[999])
    expected = out if prediction_type == "epsilon" else math.sqrt(ab) * out + math.sqrt(1 - ab) * x
    torch.testing.assert_close(eps(x), expected, rtol=1e-5, atol=1e-6)
    index = torch.tensor([2])
    torch.testing.assert_close(eps(x[index], index=index), expected[index], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        unet_epsilon(unets[0], make_scheduler("ddim", rescale_betas_zero_snr=True), class_labels=labels)


def test_autoguidance_direction_is_good_minus_weak(unets):
    good, weak = unets
    sched = make_scheduler("ddim")
    null = torch.full((2,), 10)
    x = latents(2, seed=3)
    got = AutoGuidance(good, weak, sched).direction_fn(class_labels=null)(x)
    with torch.no_grad():
        expected = good(x, 999, class_labels=null).sample - weak(x, 999, class_labels=null).sample
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # A model guided by itself has no direction: refinement without noise leaves the latents alone.
    same = AutoGuidance(good, good, sched)(x, conditioning={"class_labels": null}, refining_steps=3, noise_level=0.0)
    torch.testing.assert_close(same.latents, x * 8.0 / x.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
    assert same.step_norms.abs().max() == 0


def test_autoguided_images_do_not_depend_on_the_batch(unets):
    ag = AutoGuidance(*unets, make_scheduler("ddim"))
    labels = torch.tensor([1, 10, 4])
    x = latents(3, seed=5)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    options = dict(refining_steps=12, step_size=0.5, stop_tolerance=0.2, stop_window=2)
    batch = ag(x, conditioning={"class_labels": labels}, generator=gens([0, 1, 2]), **options)
    for i in range(3):
        alone = ag(x[i : i + 1], conditioning={"class_labels": labels[i : i + 1]}, generator=gens([i]), **options)
        torch.testing.assert_close(batch.latents[i : i + 1], alone.latents, rtol=1e-5, atol=1e-5)
        assert batch.evaluations[i] == alone.evaluations[0]


def test_refine_noise_accepts_the_builders_directly(unets):
    out = refine_noise(latents(2), autoguidance_direction(unet_epsilon(unets[0], make_scheduler("ddim"), class_labels=torch.tensor([10, 10])),
                                                          unet_epsilon(unets[1], make_scheduler("ddim"), class_labels=torch.tensor([10, 10]))),
                       refining_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.latents.shape == (2, 1, 8, 8) and out.evaluations.tolist() == [2, 2]
    assert not torch.equal(out.latents, latents(2))
