r"""The one training loop every nlg model trains through: warm-up + cosine, the optimiser step, EMA, resumable checkpoints.

:func:`train_loop` owns everything a diffusion trainer repeats and nothing model-specific: the caller passes
``loss_fn(step, generator)``, which draws its batch (with :func:`nlg.training.training_batch` for noise,
timesteps and loss weights) from the loop's ``torch.Generator`` and returns a scalar loss.  The loop then

* steps AdamW (Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101) with the learning rate
  :math:`\eta_s = \eta \cdot f(s)`, :func:`warmup_cosine`'s linear warm-up followed by cosine decay to 0
  (Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983), after clipping the gradient norm;
* keeps an exponential moving average of the weights (:class:`EMA`) if asked;
* writes a checkpoint atomically every ``checkpoint_every`` steps (modules, optimiser, schedule, EMA, generator
  state, losses, elapsed time), and on a rerun resumes from it **bit-exactly**: the generator's state is part of
  the checkpoint, so a run killed and resumed draws the same batches as one that never stopped (for the same
  thread count).

Settings are a frozen :class:`LoopConfig`, validated once; :func:`training_record` builds the metadata a trained
model ships with (the command as ``shlex.join(sys.argv)``, settings, wall time, threads, torch version).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..utils.io import atomic_save_torch
from ..utils.types import PathLike

__all__ = ["LoopConfig", "LoopResult", "EMA", "warmup_cosine", "train_loop", "training_record", "command_line", "cpu_model"]


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _finite(name: str, value: Any, *, low: float, high: float = math.inf, low_inclusive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    ok_low = value >= low if low_inclusive else value > low
    if not (math.isfinite(value) and ok_low and value <= high):
        bound = "[" if low_inclusive else "("
        raise ValueError(f"{name} must be in {bound}{low}, {high}], got {value}")


@dataclass(frozen=True)
class LoopConfig:
    r"""Settings of :func:`train_loop`, validated once at construction.

    Args:
        steps (`int`): optimiser steps.
        lr (`float`): peak learning rate.
        warmup_steps (`int`, *optional*): linear warm-up steps; defaults to ``max(1, steps // 20)`` (5%).
        weight_decay (`float`, defaults to 0.0): AdamW's decoupled weight decay.
        betas (`tuple`, defaults to ``(0.9, 0.999)``): AdamW's β₁, β₂.
        max_grad_norm (`float`, *optional*, defaults to 1.0): clip the global gradient norm to this (``None`` for no clipping).
        ema_decay (`float`, *optional*): keep an :class:`EMA` of the weights with this decay (``None`` for no EMA).
        checkpoint_every (`int`, defaults to 200): steps between checkpoints (and at the last step).
        gradient_accumulation_steps (`int`, defaults to 1): ``loss_fn`` calls (micro-batches) per optimiser step;
            the gradient is that of their mean, :math:`\nabla \frac1k \sum_{j<k} L_j`.
    """

    steps: int
    lr: float
    warmup_steps: Optional[int] = None
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    max_grad_norm: Optional[float] = 1.0
    ema_decay: Optional[float] = None
    checkpoint_every: int = 200
    gradient_accumulation_steps: int = 1

    def __post_init__(self) -> None:
        _positive_int("steps", self.steps)
        _finite("lr", self.lr, low=0.0)
        if self.warmup_steps is not None:
            _positive_int("warmup_steps", self.warmup_steps, minimum=0)
        _finite("weight_decay", self.weight_decay, low=0.0, low_inclusive=True)
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2):
            raise TypeError(f"betas must be a tuple of two numbers, got {self.betas!r}")
        for i, beta in enumerate(self.betas):
            _finite(f"betas[{i}]", beta, low=0.0, high=1.0, low_inclusive=True)
        if self.max_grad_norm is not None:
            _finite("max_grad_norm", self.max_grad_norm, low=0.0)
        if self.ema_decay is not None:
            _finite("ema_decay", self.ema_decay, low=0.0, high=1.0)
            if self.ema_decay >= 1.0:
                raise ValueError(f"ema_decay must be < 1, got {self.ema_decay}")
        _positive_int("checkpoint_every", self.checkpoint_every)
        _positive_int("gradient_accumulation_steps", self.gradient_accumulation_steps)

    @property
    def warmup(self) -> int:
        """The warm-up length actually used."""
        return max(1, self.steps // 20) if self.warmup_steps is None else self.warmup_steps

    def to_dict(self) -> Dict[str, Any]:
        """The settings as plain JSON-able values."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        if self.gradient_accumulation_steps == 1:  # checkpoints written before the field existed still resume
            del out["gradient_accumulation_steps"]
        return out


def warmup_cosine(steps: int, warmup: int) -> Callable[[int], float]:
    r"""The learning-rate factor :math:`f(s)` of step ``s`` (0-based), for ``torch.optim.lr_scheduler.LambdaLR``.

    .. math::
        f(s) = \frac{s + 1}{W} \ (s < W), \qquad
        f(s) = \tfrac12\Bigl(1 + \cos\frac{\pi (s - W)}{\max(1, S - W)}\Bigr) \ (s \ge W)

    with ``S = steps`` and ``W = warmup``: a linear warm-up reaching the peak at step ``W − 1``, then cosine decay
    to 0 at step ``S`` (SGDR without restarts, Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983).

    Args:
        steps (`int`): total steps ``S``.
        warmup (`int`): warm-up steps ``W`` (0: start at the peak).
    """
    _positive_int("steps", steps)
    _positive_int("warmup", warmup, minimum=0)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return factor


class EMA:
    r"""Exponential moving average of parameters (Polyak averaging), as diffusion models are usually sampled from.

    After optimiser step ``n`` (1-based), every shadow weight moves as
    :math:`\bar\theta \leftarrow d_n \bar\theta + (1 - d_n)\,\theta` with
    :math:`d_n = \min\bigl(d, \tfrac{1 + n}{10 + n}\bigr)`: the warm-up keeps the average from clinging to the
    random initialisation early in short runs (the schedule of diffusers' ``EMAModel`` without its power warm-up).

    Args:
        parameters (`Sequence[torch.nn.Parameter]`): the weights to average (their order defines the state).
        decay (`float`): the target decay ``d`` in (0, 1).
    """

    def __init__(self, parameters: Sequence[torch.nn.Parameter], decay: float) -> None:
        _finite("decay", decay, low=0.0, high=1.0)
        if decay >= 1.0:
            raise ValueError(f"decay must be < 1, got {decay}")
        self.parameters = list(parameters)
        self.decay = float(decay)
        self.updates = 0
        self.shadow = [p.detach().clone() for p in self.parameters]

    def current_decay(self) -> float:
        """:math:`d_n` for the next update."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        """Move the shadow weights toward the current ones."""
        d = self.current_decay()
        for shadow, param in zip(self.shadow, self.parameters):
            shadow.mul_(d).add_(param.detach(), alpha=1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, parameters: Optional[Sequence[torch.nn.Parameter]] = None) -> None:
        """Write the averaged weights into ``parameters`` (defaults to the tracked ones)."""
        targets = self.parameters if parameters is None else list(parameters)
        if len(targets) != len(self.shadow):
            raise ValueError(f"parameters has {len(targets)} tensors, the EMA tracks {len(self.shadow)}")
        for target, shadow in zip(targets, self.shadow):
            target.copy_(shadow)

    def state_dict(self) -> Dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError("the EMA state tracks a different number of tensors")
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        for shadow, saved in zip(self.shadow, state["shadow"]):
            shadow.copy_(saved)


@dataclass
class LoopResult:
    """What :func:`train_loop` returns.

    ``losses`` holds the loss of every step (resumed steps included), ``elapsed`` the training seconds over all
    sessions of the run, ``ema`` the weight average (not yet copied into the modules, or ``None``) and
    ``resumed_from`` the step the last session started at (0 from scratch).
    """

    losses: List[float]
    elapsed: float
    ema: Optional[EMA]
    resumed_from: int


def train_loop(
    modules: Mapping[str, torch.nn.Module],
    loss_fn: Callable[[int, torch.Generator], Tensor],
    config: LoopConfig,
    *,
    generator: torch.Generator,
    checkpoint: Optional[PathLike] = None,
    settings: Optional[Mapping[str, Any]] = None,
    parameters: Optional[Sequence[torch.nn.Parameter]] = None,
    progress: bool = True,
    desc: str = "training",
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    trainable_only: bool = False,
    backward: Optional[Callable[[Tensor], None]] = None,
) -> LoopResult:
    """Train ``modules`` for ``config.steps`` optimiser steps on ``loss_fn``, resumably.

    Args:
        modules (`Mapping[str, torch.nn.Module]`): every module whose weights change (saved in checkpoints by name);
            they are put in train mode.
        loss_fn (`Callable[[int, torch.Generator], torch.Tensor]`): ``loss_fn(step, generator)`` draws a batch from
            ``generator`` only and returns the scalar loss of step ``step`` (0-based).
        config (`LoopConfig`): steps, learning rate, warm-up, clipping, EMA, checkpoint interval.
        generator (`torch.Generator`): the one source of randomness of the batches; its state is checkpointed.
        checkpoint (`str` or `Path`, *optional*): checkpoint file; if it exists the run resumes from it.
        settings (`Mapping[str, Any]`, *optional*): the caller's settings, stored in the checkpoint; resuming a
            checkpoint written with other settings (or another ``config``) raises ``ValueError``.
        parameters (`Sequence[torch.nn.Parameter]`, *optional*): what the optimiser trains; defaults to every
            parameter of ``modules`` that requires a gradient.
        progress (`bool`, defaults to True): a tqdm bar.
        desc (`str`, defaults to ``"training"``): the bar's label.
        callback (`Callable[[dict], None]`, *optional*): called after every step with
            ``{"step", "loss", "lr", "elapsed"}`` (``step`` 1-based: steps done).
        trainable_only (`bool`, defaults to False): checkpoints hold only the entries of ``parameters`` (e.g. a
            LoRA's few weights instead of the whole frozen model); the frozen rest must be rebuilt identically.
        backward (`Callable[[torch.Tensor], None]`, *optional*): how to backpropagate a loss, e.g.
            ``accelerate.Accelerator.backward``; defaults to ``loss.backward()``.

    With ``config.gradient_accumulation_steps = k`` every step calls ``loss_fn(step, generator)`` k times and
    backpropagates each loss divided by k; the recorded loss is their mean.

    Returns:
        :class:`LoopResult`; the modules hold the last (not the averaged) weights, in train mode.
    """
    if not isinstance(config, LoopConfig):
        raise TypeError(f"config must be a LoopConfig, got {type(config).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not modules or not all(isinstance(m, torch.nn.Module) for m in modules.values()):
        raise TypeError("modules must be a non-empty mapping of names to torch.nn.Module")
    if parameters is None:
        parameters = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    parameters = list(parameters)
    if not parameters:
        raise ValueError("parameters is empty: nothing to train")
    record = {"config": config.to_dict(), "settings": dict(settings) if settings is not None else None}
    backward = backward if backward is not None else Tensor.backward
    trained = {id(p) for p in parameters}
    saved_keys = {name: {key for key, p in module.named_parameters() if id(p) in trained} for name, module in modules.items()}

    def module_state(name: str, module: torch.nn.Module) -> Dict[str, Tensor]:
        state = module.state_dict()
        return {k: v for k, v in state.items() if k in saved_keys[name]} if trainable_only else state

    def load_module_state(name: str, module: torch.nn.Module, state: Mapping[str, Tensor]) -> None:
        if trainable_only and set(state) != saved_keys[name]:
            raise ValueError(f"checkpoint {path} holds other trainable parameters of {name!r}; delete it to start afresh")
        module.load_state_dict(state, strict=not trainable_only)

    optimizer = torch.optim.AdamW(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.steps, config.warmup))
    ema = EMA(parameters, config.ema_decay) if config.ema_decay is not None else None
    losses: List[float] = []
    start_step, elapsed_before = 0, 0.0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        state = torch.load(path, weights_only=False)
        if state["record"] != record:
            raise ValueError(f"checkpoint {path} was written with other settings; delete it to start afresh")
        for name, module in modules.items():
            load_module_state(name, module, state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        generator.set_state(state["generator"])
        losses = list(state["losses"])
        start_step, elapsed_before = int(state["step"]), float(state["elapsed"])

    started = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def save(step: int) -> None:
        atomic_save_torch(
            {
                "record": record,
                "step": step,
                "modules": {name: module_state(name, module) for name, module in modules.items()},
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "generator": generator.get_state(),
                "losses": losses,
                "elapsed": elapsed(),
            },
            path,
        )

    for module in modules.values():
        module.train()
    bar = tqdm(range(start_step, config.steps), desc=desc, disable=not progress, mininterval=2.0,
               initial=start_step, total=config.steps)
    accumulate = config.gradient_accumulation_steps
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        value = 0.0
        for _ in range(accumulate):
            loss = loss_fn(step, generator)
            if not (isinstance(loss, Tensor) and loss.ndim == 0):
                raise TypeError("loss_fn must return a scalar torch.Tensor")
            backward(loss / accumulate if accumulate > 1 else loss)
            value += float(loss.detach()) / accumulate
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        lr = schedule.get_last_lr()[0]
        schedule.step()
        if ema is not None:
            ema.update()
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss is {value} at step {step}: lower lr or check the data")
        losses.append(value)
        done = step + 1
        if step % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.4f}")
        if callback is not None:
            callback({"step": done, "loss": value, "lr": lr, "elapsed": elapsed()})
        if path is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            save(done)
    return LoopResult(losses=losses, elapsed=elapsed(), ema=ema, resumed_from=start_step)


def command_line() -> str:
    """This process's command as ``shlex.join(sys.argv)``, with ``python -m <module>`` restored for module runs."""
    argv = list(sys.argv)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        argv = ["python", "-m", name] + argv[1:]
    return shlex.join(argv)


def cpu_model() -> str:
    """This machine's CPU model (``model name`` in ``/proc/cpuinfo``; else ``platform.processor()``, else the
    architecture). Training is bit-exact per CPU and thread count, so the record names both."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def training_record(
    settings: Mapping[str, Any],
    result: LoopResult,
    *,
    threads: int,
    command: Optional[str] = None,
    **extra: Any,
) -> Dict[str, Any]:
    """The metadata a trained model ships with.

    Args:
        settings (`Mapping[str, Any]`): the training settings (JSON-able).
        result (`LoopResult`): what :func:`train_loop` returned.
        threads (`int`): torch threads used (results are bit-exact per CPU model and thread count; the record
            names both, ``cpu`` from :func:`cpu_model`).
        command (`str`, *optional*): the command; defaults to ``shlex.join(sys.argv)`` with ``python -m`` restored
            for module runs.
        **extra: further fields (hashes, parameter counts, …).
    """
    command = command_line() if command is None else command
    tail = result.losses[-200:]
    return {
        "command": command,
        "settings": dict(settings),
        "threads": threads,
        "cpu": cpu_model(),
        "wall_seconds": round(result.elapsed, 1),
        "wall_minutes": round(result.elapsed / 60, 1),
        "final_loss_mean_last_200": round(sum(tail) / len(tail), 5) if tail else None,
        "torch": torch.__version__,
        **extra,
    }
