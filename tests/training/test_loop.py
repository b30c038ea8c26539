"""nlg.training.loop: the learning-rate curve, EMA, bit-exact resume and validation, against independent computations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nlg.training.loop import EMA, LoopConfig, train_loop, training_record, warmup_cosine


def test_warmup_cosine_matches_its_formula_at_landmarks():
    f = warmup_cosine(100, 10)
    assert f(0) == pytest.approx(0.1)  # (0 + 1) / 10
    assert f(9) == pytest.approx(1.0)  # the warm-up's last step reaches the peak
    assert f(10) == pytest.approx(1.0)  # cos(0)
    assert f(55) == pytest.approx(0.5)  # half-way through the decay: ½(1 + cos(π/2))
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warm-up


def test_ema_follows_the_recurrence_with_its_warmup():
    param = torch.nn.Parameter(torch.tensor([0.0]))
    ema = EMA([param], decay=0.9)
    expected, history = 0.0, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0]
    for n, value in enumerate(history, start=1):
        with torch.no_grad():
            param.fill_(value)
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))  # written out independently of the class
        expected = d * expected + (1 - d) * value
        assert float(ema.shadow[0]) == pytest.approx(expected, rel=1e-6)
    ema.copy_to()
    assert float(param) == pytest.approx(expected, rel=1e-6)


def _problem(init_seed: int = 0):
    """A small regression: fixed data, weights initialised from ``init_seed``."""
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(7))
    y = (x[:, :1] * 2 - x[:, 1:2]).sin()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def loss_fn(step, generator):
        index = torch.randint(0, 64, (8,), generator=generator)
        noise = 0.01 * torch.randn(8, 1, generator=generator)
        return torch.nn.functional.mse_loss(model(x[index]), y[index] + noise)

    return model, loss_fn


def test_killed_and_resumed_run_is_bit_exact(tmp_path):
    config = LoopConfig(steps=12, lr=1e-2, ema_decay=0.8, checkpoint_every=4)
    model, loss_fn = _problem()
    straight = train_loop({"m": model}, loss_fn, config, generator=torch.Generator().manual_seed(1), progress=False)
    straight_ema = [s.clone() for s in straight.ema.shadow]
    straight_weights = [p.detach().clone() for p in model.parameters()]

    model, loss_fn = _problem()

    def dies_at_step_6(step, generator):
        if step == 6:
            raise KeyboardInterrupt  # as a killed job: the last checkpoint is step 4
        return loss_fn(step, generator)

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train_loop({"m": model}, dies_at_step_6, config, generator=torch.Generator().manual_seed(1), checkpoint=ckpt,
                   progress=False)
    assert torch.load(ckpt, weights_only=False)["step"] == 4
    model, loss_fn = _problem(init_seed=123)  # a fresh process: other initial weights, which the checkpoint overrides
    resumed = train_loop({"m": model}, loss_fn, config, generator=torch.Generator().manual_seed(999), checkpoint=ckpt,
                         progress=False)
    assert resumed.resumed_from == 4
    assert resumed.losses == straight.losses
    assert all(torch.equal(a, b.detach()) for a, b in zip(straight_weights, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(straight_ema, resumed.ema.shadow))


def test_learning_rate_follows_the_schedule():
    model, loss_fn = _problem()
    seen = []
    train_loop({"m": model}, loss_fn, LoopConfig(steps=40, lr=0.5), generator=torch.Generator().manual_seed(0),
               progress=False, callback=lambda info: seen.append(info["lr"]))
    warmup = 2  # 40 // 20
    expected = [0.5 * ((s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (40 - warmup))))
                 for s in range(40)]
    assert seen == pytest.approx(expected)


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    model, loss_fn = _problem()
    ckpt = tmp_path / "run.pt"
    train_loop({"m": model}, loss_fn, LoopConfig(steps=2, lr=1e-2, checkpoint_every=1), generator=torch.Generator(),
               checkpoint=ckpt, settings={"a": 1}, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train_loop({"m": model}, loss_fn, LoopConfig(steps=2, lr=1e-2, checkpoint_every=1), generator=torch.Generator(),
                   checkpoint=ckpt, settings={"a": 2}, progress=False)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"steps": 0, "lr": 1.0}, "steps"), ({"steps": 1, "lr": -1.0}, "lr"), ({"steps": 1, "lr": float("nan")}, "lr"),
     ({"steps": 1, "lr": 1.0, "ema_decay": 1.0}, "ema_decay"), ({"steps": 1, "lr": 1.0, "checkpoint_every": 0}, "checkpoint_every"),
     ({"steps": 1.5, "lr": 1.0}, "steps"), ({"steps": 1, "lr": 1.0, "max_grad_norm": 0.0}, "max_grad_norm")],
)
def test_bad_config_names_the_field(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        LoopConfig(**kwargs)


def test_non_finite_loss_stops_with_a_clear_error():
    model, _ = _problem()
    with pytest.raises(FloatingPointError, match="step 0"):
        train_loop({"m": model}, lambda step, g: model[0].weight.sum() * float("nan"), LoopConfig(steps=3, lr=1e-3),
                   generator=torch.Generator(), progress=False)


def test_training_record_holds_the_command_and_loss():
    model, loss_fn = _problem()
    result = train_loop({"m": model}, loss_fn, LoopConfig(steps=3, lr=1e-3), generator=torch.Generator(), progress=False)
    record = training_record({"x": 1}, result, threads=1, command="python -m x --y")
    assert record["command"] == "python -m x --y"
    assert record["final_loss_mean_last_200"] == pytest.approx(sum(result.losses) / 3, abs=1e-5)
    assert record["settings"] == {"x": 1} and record["threads"] == 1
    assert isinstance(record["cpu"], str) and record["cpu"].strip()  # bit-exact per CPU: the record names it
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():
        assert f": {record['cpu']}" in cpuinfo.read_text()


def test_gradient_accumulation_steps_with_the_mean_gradient_of_its_micro_batches():
    """k micro-batches per step give the same update as one batch holding all of them (the mean gradient)."""
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(3))
    y = x.sum(1, keepdim=True).cos()

    def run(batch_size, accumulate):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = torch.nn.Linear(3, 1)
        order = torch.arange(32)
        calls = []

        def loss_fn(step, generator):
            start = len(calls) * batch_size
            calls.append(step)
            index = order[start % 32 : start % 32 + batch_size]
            return torch.nn.functional.mse_loss(model(x[index]), y[index])

        result = train_loop({"m": model}, loss_fn, LoopConfig(steps=4, lr=0.1, gradient_accumulation_steps=accumulate,
                                                              max_grad_norm=None),
                            generator=torch.Generator(), progress=False)
        return model, result, calls

    whole, whole_result, _ = run(8, 1)
    split, split_result, calls = run(2, 4)
    assert calls == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    for a, b in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert split_result.losses == pytest.approx(whole_result.losses, rel=1e-5)


def test_trainable_only_checkpoints_hold_the_trained_parameters_and_resume_bit_exactly(tmp_path):
    config = LoopConfig(steps=8, lr=1e-2, checkpoint_every=3)
    model, loss_fn = _problem()
    model[0].requires_grad_(False)  # the frozen part: rebuilt identically by the caller, not checkpointed
    trained = list(model[2].parameters())
    straight = train_loop({"m": model}, loss_fn, config, generator=torch.Generator().manual_seed(1), progress=False,
                          parameters=trained, trainable_only=True)
    straight_weights = [p.detach().clone() for p in model.parameters()]

    model, loss_fn = _problem()
    model[0].requires_grad_(False)

    def dies_at_step_5(step, generator):
        if step == 5:
            raise KeyboardInterrupt
        return loss_fn(step, generator)

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train_loop({"m": model}, dies_at_step_5, config, generator=torch.Generator().manual_seed(1), checkpoint=ckpt,
                   progress=False, parameters=list(model[2].parameters()), trainable_only=True)
    saved = torch.load(ckpt, weights_only=False)
    assert set(saved["modules"]["m"]) == {"2.weight", "2.bias"}
    model, loss_fn = _problem()
    model[0].requires_grad_(False)
    resumed = train_loop({"m": model}, loss_fn, config, generator=torch.Generator().manual_seed(5), checkpoint=ckpt,
                         progress=False, parameters=list(model[2].parameters()), trainable_only=True)
    assert resumed.resumed_from == 3 and resumed.losses == straight.losses
    assert all(torch.equal(a, b.detach()) for a, b in zip(straight_weights, model.parameters()))


def test_backward_hook_is_called_with_each_micro_batch_loss():
    model, loss_fn = _problem()
    seen = []

    def backward(loss):
        seen.append(float(loss))
        loss.backward()

    result = train_loop({"m": model}, loss_fn, LoopConfig(steps=2, lr=1e-3, gradient_accumulation_steps=2),
                        generator=torch.Generator().manual_seed(0), progress=False, backward=backward)
    assert len(seen) == 4
    assert result.losses == pytest.approx([seen[0] + seen[1], seen[2] + seen[3]])  # each hook saw loss / 2
