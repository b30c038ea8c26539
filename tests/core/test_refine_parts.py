"""The public parts of refinement (steps, stopping rules, the per-step callback), each checked against
a hand computation or a property, never against the loop's own output."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

import nlg
from nlg import refine_noise
from nlg.core import NormChange, Radial, StopRule, clip_direction, nlg_step, project_to_sphere, radial_share
from nlg.core.stopping import StreakRule
from nlg.utils.checks import check_bool, check_generator, check_int, check_number, check_tensor


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_clip_direction_bounds_the_norm_and_keeps_the_direction():
    d = torch.tensor([[3.0, 4.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, -12.0]])  # norms 5, 0.1, 12
    out = clip_direction(d, 1.0)
    assert torch.allclose(out.norm(dim=1), torch.tensor([1.0, 0.1, 1.0]))
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8, 0.0])) and torch.equal(out[1], d[1])
    assert clip_direction(d, None) is d


def test_project_to_sphere_sets_norm_root_d():
    x = torch.randn(4, 3, 5, 5, generator=gen(0))
    y = project_to_sphere(x)
    assert torch.allclose(y.flatten(1).norm(dim=1), torch.full((4,), math.sqrt(75.0)))
    cos = torch.nn.functional.cosine_similarity(x.flatten(1), y.flatten(1))
    assert torch.allclose(cos, torch.ones(4))


def test_radial_share_is_minus_the_cosine():
    d, n = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[-3.0, 0.0], [1.0, 1.0]])
    assert torch.allclose(radial_share(d, n), torch.tensor([1.0, -math.sqrt(0.5)]))


def test_nlg_step_is_the_papers_update():
    n, d, z = (torch.randn(2, 8, generator=gen(s)) for s in (1, 2, 3))
    eta, tau, lam = 0.7, 0.4, 0.01
    by_hand = []
    for b in range(2):
        step = n[b] - eta * d[b] * min(1.0, tau / float(d[b].norm())) + math.sqrt(lam) * z[b]
        by_hand.append(step.clamp(-3, 3) * math.sqrt(8) / float(step.clamp(-3, 3).norm()))
    out = nlg_step(n, d, step_size=eta, clip_threshold=tau, noise=z, noise_level=lam, boundary_control=True)
    assert torch.allclose(out, torch.stack(by_hand), atol=1e-6)


def test_per_step_sizes_compose_like_single_steps():
    x0 = torch.randn(3, 2, 4, 4, generator=gen(4))
    fn = lambda x: torch.tanh(x.roll(1, dims=-1)) - 0.2 * x  # noqa: E731
    etas = (2.0, 0.5, 1.5)
    x = x0
    for eta in etas:
        x = refine_noise(x, fn, refining_steps=1, step_size=eta, noise_level=0.0).latents
    out = refine_noise(x0, fn, refining_steps=3, step_size=etas, noise_level=0.0)
    assert torch.equal(out.latents, x)


def test_callback_sees_every_step():
    x0 = torch.randn(4, 1, 4, 4, generator=gen(5))
    seen: List[Dict[str, Any]] = []
    out = refine_noise(x0, lambda x: -x + 0.1, refining_steps=5, generator=gen(6), callback=seen.append)
    assert [info["step"] for info in seen] == [0, 1, 2, 3, 4]
    assert torch.equal(seen[-1]["latents"], out.latents)
    assert torch.equal(seen[0]["previous"], x0)
    for k, info in enumerate(seen):
        assert torch.equal(info["norm"], out.step_norms[k])
        assert torch.allclose(info["norm"], info["direction"].flatten(1).norm(dim=1))
        assert info["stopped"] is None and info["index"].tolist() == [0, 1, 2, 3]


class StopAfter(StreakRule):
    """A rule of the protocol: sample b stops after ``limits[b]`` evaluations."""

    window = 1

    def __init__(self, limits: List[int], keeps_previous: bool = False) -> None:
        self.limits, self.keeps_previous = torch.tensor(limits), keeps_previous

    def hit(self, state: Dict[str, Any], info: Dict[str, Any]) -> torch.Tensor:
        return info["evaluations"] >= self.limits[info["index"]]


@pytest.mark.parametrize("keeps_previous", [False, True])
def test_a_custom_stop_rule_equals_refining_each_sample_alone(keeps_previous):
    limits = [1, 3, 2]
    x0 = torch.randn(3, 2, 4, 4, generator=gen(7))
    fn = lambda x: torch.sin(x) + 0.05  # noqa: E731
    rule = StopAfter(limits, keeps_previous)
    assert isinstance(rule, StopRule)
    stopped: List[List[int]] = []
    out = refine_noise(x0, fn, refining_steps=5, generator=[gen(10 + b) for b in range(3)], stop=rule,
                       callback=lambda info: stopped.append(info["index"][info["stopped"]].tolist()))
    assert out.evaluations.tolist() == limits
    assert stopped == [[0], [2], [1]]
    for b, k in enumerate(limits):
        steps = k - 1 if keeps_previous else k  # keeps_previous: the deciding step is not taken
        alone = refine_noise(x0[b : b + 1], fn, refining_steps=steps, generator=[gen(10 + b)]).latents
        assert torch.equal(out.latents[b : b + 1], alone)


def test_string_aliases_map_to_rule_objects():
    x0 = torch.randn(3, 2, 4, 4, generator=gen(8))
    fn = lambda x: torch.tanh(x.roll(2, dims=-1)) - 0.3 * x  # noqa: E731
    for signal, rule in (("norm_change", NormChange(0.05, 1)), ("radial", Radial(0.2, 1))):
        by_name = refine_noise(x0, fn, generator=gen(9), stop_tolerance=rule.tolerance, stop_window=1, stop_signal=signal)
        by_object = refine_noise(x0, fn, generator=gen(9), stop=rule)
        assert torch.equal(by_name.latents, by_object.latents) and torch.equal(by_name.evaluations, by_object.evaluations)
    with pytest.raises(TypeError, match="stop"):
        refine_noise(x0, fn, stop=NormChange(0.1), stop_tolerance=0.1)
    with pytest.raises(ValueError, match="tolerance"):
        NormChange(-1.0)
    with pytest.raises(ValueError, match="tolerance"):
        Radial(1.5)


def test_shared_checks_name_the_parameter():
    with pytest.raises(TypeError, match="alpha"):
        check_number(True, "alpha")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        check_number(0, "alpha", strict=True)
    assert check_number(None, "alpha", optional=True) is None
    with pytest.raises(ValueError, match="count must be >= 1"):
        check_int(0, "count", minimum=1)
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError, match=f"flag must be a bool, got {type(bad).__name__}"):
            check_bool(bad, "flag")
    assert check_bool(False, "flag") is False and check_bool(True, "flag") is True
    with pytest.raises(ValueError, match="generator"):
        check_generator([gen(0)], 2)
    with pytest.raises(TypeError, match="generator"):
        check_generator(3)
    with pytest.raises(ValueError, match="noise"):
        check_tensor(torch.tensor([[float("nan")]]), "noise")
    with pytest.raises(ValueError, match="rank 4"):
        check_tensor(torch.zeros(2, 3), rank=4)


def test_deprecated_names_warn_and_agree():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=10)
    with pytest.warns(DeprecationWarning, match="schedule_point_at"):
        old = nlg.noise_level_at(scheduler, 3)
    assert old == nlg.schedule_point_at(scheduler, 3)
    with pytest.warns(DeprecationWarning, match="schedule_point_for_strength"):
        assert nlg.noise_level_for_strength(scheduler, 0.5, 4) == nlg.schedule_point_for_strength(scheduler, 0.5, 4)
    with pytest.warns(DeprecationWarning, match="strength_for_sigma"):
        nlg.strength_for_noise_level(scheduler, 1.0, 4)
    with pytest.warns(DeprecationWarning, match="SchedulePoint"):
        assert nlg.NoiseLevel is nlg.SchedulePoint
    from nlg.shapes import train

    with pytest.warns(DeprecationWarning, match="safetensors_sha256"):
        assert train.weights_sha256(Path(__file__).parent) == {}  # no *.safetensors here


def test_options_or_arguments_not_both():
    from nlg import RefineOptions

    x0 = torch.randn(2, 1, 4, 4, generator=gen(11))
    fn = lambda x: torch.cos(x)  # noqa: E731
    by_options = refine_noise(x0, fn, options=RefineOptions(refining_steps=3, noise_level=0.0))
    by_arguments = refine_noise(x0, fn, refining_steps=3, noise_level=0.0)
    assert torch.equal(by_options.latents, by_arguments.latents)
    with pytest.raises(TypeError, match="refining_steps"):
        refine_noise(x0, fn, options=RefineOptions(), refining_steps=3)
