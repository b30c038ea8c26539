"""nlg.digits.model: the shipped weights' config, and clear errors for missing or corrupt files."""

import json
import shutil

import pytest
import torch

from nlg.digits import build_unet, load_digits_model, save_digits_model
from nlg.digits.model import CONFIG_NAME, WEIGHTS_DIR, WEIGHTS_NAME


def test_shipped_weights_follow_the_issue():
    unet, scheduler, record = load_digits_model()
    assert unet.config.num_class_embeds == 11 and unet.config.sample_size == 8 and unet.config.in_channels == 1
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (0.00085, 0.012)
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.prediction_type == "epsilon"
    assert record["parameters"] == sum(p.numel() for p in unet.parameters())
    assert record["label_dropout"] == 0.15 and record["seed"] == 0
    assert (WEIGHTS_DIR / WEIGHTS_NAME).stat().st_size < 5_000_000


@pytest.fixture
def saved(tmp_path):
    save_digits_model(build_unet(seed=0), tmp_path)
    return tmp_path


def test_missing_files_are_named(saved, tmp_path):
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        load_digits_model(saved)
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_digits_model(tmp_path / "nowhere")


def test_corrupt_weights_are_named(saved):
    (saved / WEIGHTS_NAME).write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ValueError, match=WEIGHTS_NAME):
        load_digits_model(saved)


def test_truncated_weights_are_named(saved):
    data = (saved / WEIGHTS_NAME).read_bytes()
    (saved / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=WEIGHTS_NAME):
        load_digits_model(saved)


def test_corrupt_config_is_named(saved):
    (saved / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=CONFIG_NAME):
        load_digits_model(saved)
    (saved / CONFIG_NAME).write_text(json.dumps({"unet": 3}))
    with pytest.raises(ValueError, match=CONFIG_NAME):
        load_digits_model(saved)


def test_weights_of_another_shape_are_named(saved, tmp_path):
    other = tmp_path / "other"
    save_digits_model(build_unet(seed=0, block_out_channels=(16, 32)), other)
    shutil.copy(other / WEIGHTS_NAME, saved / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=WEIGHTS_NAME):
        load_digits_model(saved)


def test_build_unet_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a, b, c = build_unet(seed=1), build_unet(seed=1), build_unet(seed=2)
    assert torch.equal(torch.rand(3), expected)
    wa, wb, wc = (m.conv_in.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    with pytest.raises(TypeError, match="unknown config keys"):
        build_unet(sample_sizes=8)
