"""The digits trainer runs on nlg.training.loop and still makes exactly the weights of a plain, hand-written loop."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nlg.digits import build_unet, load_split, sd_scheduler, train_digits
from nlg.digits.data import NULL_CLASS


def _hand_written(images, labels, *, steps, batch_size, lr, seed, label_dropout=0.15):
    """The DDPM ε-loop written out step by step: AdamW, 5% linear warm-up then cosine, clip 1."""
    scheduler = sd_scheduler()
    generator = torch.Generator().manual_seed(seed)
    unet = build_unet(seed=seed).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    abar = scheduler.alphas_cumprod
    for step in range(steps):
        factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        clean, true_labels = images[index].float(), labels[index]
        drop = torch.rand(batch_size, generator=generator) < label_dropout
        class_labels = torch.where(drop, torch.full_like(true_labels, NULL_CLASS), true_labels)
        t = torch.randint(0, 1000, (batch_size,), generator=generator)
        noise = torch.randn(clean.shape, generator=generator)
        a = abar[t].float().reshape(-1, 1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(noisy, t, class_labels=class_labels).sample, noise, reduction="none").flatten(1).mean(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
    return unet


def test_digits_training_equals_the_hand_written_loop():
    images, labels = load_split("train")
    images, labels = images[:256], labels[:256]
    trained = train_digits(images, labels, steps=6, batch_size=8, lr=2e-3, seed=4, progress=False)
    expected = _hand_written(images, labels, steps=6, batch_size=8, lr=2e-3, seed=4)
    for (name, a), (_, b) in zip(trained.state_dict().items(), expected.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
