"""nlg.digits training: the loss goes down, runs are bit-exact, save/load round-trips, the batch_fn contract."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from nlg.digits import build_unet, load_digits_model, load_split, save_digits_model, sd_scheduler, train_digits
from nlg.digits.train import ddpm_batch


@pytest.fixture(scope="module")
def subset():
    images, labels = load_split("train")
    return images[:256], labels[:256]


def _fixed_batch_loss(unet, images, labels):
    """ε-MSE on a fixed noisy batch, computed by hand with SD's betas; ``unet=None`` predicts ε = 0."""
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0).float()
    g = torch.Generator().manual_seed(123)
    t = torch.randint(0, 1000, (len(images),), generator=g)
    noise = torch.randn(images.shape, generator=g)
    a = alpha_bar[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * images + (1 - a).sqrt() * noise
    if unet is None:
        return float((noise**2).mean())
    with torch.no_grad():
        return float(((unet(noisy, t, class_labels=labels).sample - noise) ** 2).mean())


@pytest.mark.slow
def test_training_lowers_loss_and_save_load_round_trips(subset, tmp_path):
    images, labels = subset
    trained = train_digits(images, labels, steps=30, batch_size=32, lr=3e-3, seed=3, progress=False)
    held_images, held_labels = load_split("test")
    before = _fixed_batch_loss(build_unet(seed=3), held_images[:64], held_labels[:64])
    after = _fixed_batch_loss(trained, held_images[:64], held_labels[:64])
    # On the same noisy batch: training lowered the loss, and to below that of predicting ε = 0 (E ε² = 1),
    # the best constant prediction, so the model uses its input.
    zero = _fixed_batch_loss(None, held_images[:64], held_labels[:64])
    assert after < before and after < zero, (before, zero, after)

    save_digits_model(trained, tmp_path, training={"steps": 40})
    loaded, scheduler, record = load_digits_model(tmp_path)
    assert record == {"steps": 40}
    assert scheduler.config.beta_schedule == "scaled_linear"
    original = trained.state_dict()
    assert set(loaded.state_dict()) == set(original)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name


def test_training_is_bit_exact_for_a_seed(subset):
    images, labels = subset
    runs = [train_digits(images, labels, steps=3, batch_size=16, seed=s, progress=False) for s in (7, 7, 8)]
    same = runs[1].state_dict()
    for name, tensor in runs[0].state_dict().items():
        assert torch.equal(tensor, same[name]), name
    assert not torch.equal(runs[0].conv_in.weight, runs[2].conv_in.weight)


def test_zero_loss_weights_leave_the_initial_weights(subset):
    images, labels = subset

    def zero_weights(clean, labels, scheduler, generator):
        noisy, t, target, _ = ddpm_batch(clean, labels, scheduler, generator)
        return noisy, t, target, torch.zeros(len(clean))

    unet = train_digits(images, labels, steps=3, batch_size=8, seed=5, batch_fn=zero_weights, progress=False)
    for (name, a), b in zip(unet.state_dict().items(), build_unet(seed=5).state_dict().values()):
        assert torch.equal(a, b), name


def test_batch_fn_sees_true_labels_and_on_step_reports_every_step(subset):
    images, labels = subset
    seen, losses = [], []

    def spy(clean, batch_labels, scheduler, generator):
        seen.append(batch_labels.clone())
        return ddpm_batch(clean, batch_labels, scheduler, generator)

    train_digits(images, labels, steps=4, batch_size=16, seed=0, batch_fn=spy, progress=False,
                 on_step=lambda step, loss: losses.append((step, loss)))
    assert [s for s, _ in losses] == [0, 1, 2, 3] and all(math.isfinite(v) for _, v in losses)
    assert all(int(b.max()) <= 9 for b in seen)  # dropout to the null class happens after batch_fn


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddpm_batch_draws_t_then_eps_and_forms_the_forward_process(prediction_type):
    scheduler = DDPMScheduler.from_config(sd_scheduler().config, prediction_type=prediction_type)
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert abs(float(alpha_bar[-1]) - 0.0047) < 1e-4  # SD's terminal signal, the one NLG uses
    clean = load_split("test")[0][:16]
    noisy, t, target, weights = ddpm_batch(clean, torch.zeros(16, dtype=torch.long), scheduler, torch.Generator().manual_seed(3))
    # the draws by hand from the same seed, in the shipped weights' order: t by randint, then ε by randn
    hand = torch.Generator().manual_seed(3)
    t_hand = torch.randint(0, 1000, (16,), generator=hand)
    eps = torch.randn(clean.shape, generator=hand)
    assert torch.equal(t, t_hand)
    a, x0 = alpha_bar[t].view(-1, 1, 1, 1), clean.double()
    torch.testing.assert_close(noisy.double(), a.sqrt() * x0 + (1 - a).sqrt() * eps.double(), atol=1e-5, rtol=0)
    expected = eps.double() if prediction_type == "epsilon" else a.sqrt() * eps.double() - (1 - a).sqrt() * x0
    torch.testing.assert_close(target.double(), expected, atol=1e-5, rtol=0)
    # bit for bit diffusers' own forward process on those draws, the batches the shipped weights were trained on
    assert torch.equal(noisy, scheduler.add_noise(clean, eps, t))
    assert torch.equal(target, eps if prediction_type == "epsilon" else scheduler.get_velocity(clean, eps, t))
    assert torch.equal(weights, torch.ones(16)) and weights.dtype == torch.float32


@pytest.mark.parametrize(
    "images, labels, error, match",
    [
        (torch.zeros(4, 1, 16, 16), torch.zeros(4, dtype=torch.long), ValueError, "images"),
        (torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.long), ValueError, "labels"),
        (torch.zeros(4, 1, 8, 8), torch.full((4,), 10), ValueError, "labels"),
        (torch.zeros(4, 1, 8, 8), torch.zeros(4), TypeError, "labels"),
        (torch.zeros(4, 1, 8, 8, dtype=torch.long), torch.zeros(4, dtype=torch.long), TypeError, "images"),
    ],
)
def test_bad_training_data(images, labels, error, match):
    with pytest.raises(error, match=match):
        train_digits(images, labels, steps=1, progress=False)
