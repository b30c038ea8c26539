"""``NoiseLevelGuidance``: NLG for a whole pipeline, in two lines.

    nlg = NoiseLevelGuidance()                       # the paper's defaults
    image = nlg(pipe, "a red cube on a blue sphere", generator=torch.Generator("cuda").manual_seed(0)).images[0]

The class holds the configuration (as diffusers' schedulers and guiders do); the algorithm is
:func:`nlg.refine_noise`; the model-specific work is done by an adapter (:mod:`nlg.adapters`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .adapters.auto import get_adapter
from .adapters.base import ENCODE_KWARGS, SDXL_SIZE_KWARGS, check_pipeline_kwargs
from .core.options import RefineOptions
from .core.refine import refine_noise
from .utils.checks import check_generator, check_int, check_number, check_tensor
from .utils.types import GeneratorLike

__all__ = ["NoiseLevelGuidance", "NLGRefinement"]

#: ``pipe(...)`` keywords that :meth:`NoiseLevelGuidance.__call__` hands to :meth:`~NoiseLevelGuidance.refine`.
_REFINE_CALL_KWARGS = ("negative_prompt", "num_images_per_prompt", "latents", "generator", "height", "width")

#: The paper's path length ``K·η`` (K = 20 steps of η = 1).
PAPER_PATH_LENGTH = 20.0


@dataclass
class NLGRefinement:
    """The result of :meth:`NoiseLevelGuidance.refine`.

    Args:
        latents (`torch.Tensor`):
            Refined unit-variance latents, ready for ``pipe(latents=...)``; the pipeline applies
            ``init_noise_sigma`` itself.
        step_norms (`torch.Tensor`):
            ‖ε(n|c) − ε(n|∅)‖₂ per step and image before clipping, shape ``(refining_steps, B)``.
        conditioning (`Dict[str, Any]`):
            The prompt embeddings used, keyed by the pipeline argument that takes them
            (``prompt_embeds``, ``negative_prompt_embeds``, and for SDXL the pooled ones).
        evaluations (`torch.Tensor`, *optional*):
            Batched model evaluations spent on each image, shape ``(B,)`` (fewer than
            ``refining_steps`` only with adaptive stopping).
    """

    latents: Tensor
    step_norms: Tensor
    conditioning: Dict[str, Any] = field(default_factory=dict)
    evaluations: Optional[Tensor] = None


def _setting(name: str) -> property:
    """A read-only attribute that reads ``self.options.<name>``."""
    return property(lambda self: getattr(self.options, name), doc=f"``options.{name}`` (read-only).")


class NoiseLevelGuidance:
    r"""Noise Level Guidance (Mannering, Huang and Prugel-Bennett 2025, https://arxiv.org/abs/2509.13936).

    The settings live in one validated :class:`~nlg.core.options.RefineOptions` (``self.options``); the
    keyword arguments below build it, :meth:`from_options` takes one.

    Refines the initial noise n by K steps of ``n ← normalise(n − η·clip(ε(n|c) − ε(n|∅)) + √λ z)``, with
    the model evaluated at the last training timestep on ``[n, n]`` with (negative, positive)
    prompts, then hands n to the unmodified pipeline as ``latents=``.

    Args:
        refining_steps (`int`, defaults to 20):
            Number of refinement steps K (paper: 20). 0 reproduces the plain pipeline exactly.
        step_size (`float` or `Tuple[float, ...]`, defaults to 1.0):
            Step size η (paper: 1.0), or one η_k per step.
        clip_threshold (`float`, *optional*, defaults to 0.5):
            Per-sample norm bound on the direction (paper: 0.5); ``None`` disables clipping.
        noise_level (`float`, defaults to 0.001):
            Variance λ of the noise added each step (paper: 0.001); 0 adds none.
        normalize_latents (`bool`, defaults to True):
            Rescale each latent to norm √D after every step (paper: on).
        boundary_control (`bool`, defaults to False):
            Clamp latents to [−3, 3] after every step.
        guidance_formula_gamma (`float`, *optional*, defaults to None):
            If set, use the guidance-formula direction ``γ ε(n|c) + (1−γ) ε(n|∅)`` instead of the
            difference (the reference code's ``--guidance_formula`` uses γ = 3.0).
        reference_timestep (`int`, *optional*, defaults to None):
            Timestep at which the model is evaluated; ``None`` means the last training timestep
            (999 for Stable Diffusion).  Zero-terminal-SNR schedules need an earlier one.
        stop_tolerance (`float`, *optional*, defaults to None):
            Adaptive stopping (an ``nlg`` extension): an image stops refining once the relative
            change of its direction norm stays below this for ``stop_window`` steps, and leaves the
            later model batches.  ``None`` refines every image for all ``refining_steps``.
        stop_window (`int`, defaults to 3):
            Consecutive settled steps adaptive stopping waits for.
        stop_signal (`str`, defaults to ``"norm_change"``):
            What ``stop_tolerance`` thresholds: ``"norm_change"`` (relative change of ‖d‖, above) or
            ``"radial"`` (stop once the cosine between the step and the latent reaches
            ``stop_tolerance``); see :func:`nlg.refine_noise`.

    For a fixed cost, :meth:`for_budget` spreads the paper's path length ``K·η = 20`` over fewer steps.
    """

    def __init__(
        self,
        refining_steps: int = 20,
        step_size: float = 1.0,
        clip_threshold: Optional[float] = 0.5,
        noise_level: float = 0.001,
        normalize_latents: bool = True,
        boundary_control: bool = False,
        guidance_formula_gamma: Optional[float] = None,
        *,
        reference_timestep: Optional[int] = None,
        stop_tolerance: Optional[float] = None,
        stop_window: int = 3,
        stop_signal: str = "norm_change",
    ) -> None:
        self.options = RefineOptions(
            refining_steps=refining_steps, step_size=step_size, clip_threshold=clip_threshold, noise_level=noise_level,
            normalize_latents=normalize_latents, boundary_control=boundary_control,
            guidance_formula_gamma=guidance_formula_gamma, reference_timestep=reference_timestep,
            stop_tolerance=stop_tolerance, stop_window=stop_window, stop_signal=stop_signal,
        )

    # The settings, read-only (``self.options`` holds them): build a new object to change them.
    refining_steps = _setting("refining_steps")
    step_size = _setting("step_size")
    clip_threshold = _setting("clip_threshold")
    noise_level = _setting("noise_level")
    normalize_latents = _setting("normalize_latents")
    boundary_control = _setting("boundary_control")
    guidance_formula_gamma = _setting("guidance_formula_gamma")
    reference_timestep = _setting("reference_timestep")
    stop_tolerance = _setting("stop_tolerance")
    stop_window = _setting("stop_window")
    stop_signal = _setting("stop_signal")

    @classmethod
    def from_options(cls, options: RefineOptions) -> "NoiseLevelGuidance":
        """NLG with these :class:`~nlg.core.options.RefineOptions` (e.g. read back with ``RefineOptions.from_json``)."""
        if not isinstance(options, RefineOptions):
            raise TypeError(f"options must be a RefineOptions, got {type(options).__name__}")
        nlg = cls.__new__(cls)
        nlg.options = options
        return nlg

    @classmethod
    def for_budget(cls, evaluations: int, *, path_length: float = PAPER_PATH_LENGTH, **options: Any) -> "NoiseLevelGuidance":
        r"""NLG that spends ``evaluations`` model evaluations and keeps the paper's path length.

        The refinement moves the latent along a path of length ``L = K·η`` (the paper: K = 20, η = 1);
        when clipping does not engage, what it achieves depends on ``L`` far more than on ``K``.  This
        sets ``refining_steps = evaluations`` and ``step_size = path_length / evaluations``:

        .. math::
            K = \text{evaluations}, \qquad \eta = L / K,

        so every choice of ``evaluations`` walks the same path as the paper's default (Mannering, Huang
        and Prugel-Bennett 2025, https://arxiv.org/abs/2509.13936, Alg. 1).  The clipping bound
        ``K·η·τ`` on the path is preserved as well.  Each evaluation is one batched CFG pair (two UNet
        passes for classifier-free models).  On the shipped digits model, ``evaluations=4`` scores like
        ``NoiseLevelGuidance()`` at a fifth of the cost (``docs/guides/cost.md``,
        ``benchmarks/nlg_cost.py``); ``for_budget(20)`` is exactly ``NoiseLevelGuidance()``.

        Args:
            evaluations (`int`):
                Refinement steps ``K`` ≥ 1, i.e. direction evaluations per image.
            path_length (`float`, defaults to 20.0):
                ``L = K·η`` > 0; 20 is the paper's.
            **options:
                Any other constructor option (``clip_threshold``, ``noise_level``, ``stop_tolerance``, …);
                ``refining_steps`` and ``step_size`` are set from the budget and may not be passed.

        Returns:
            A :class:`NoiseLevelGuidance` with ``refining_steps = evaluations`` and ``step_size = L / K``.
        """
        check_int(evaluations, "evaluations", minimum=1)
        check_number(path_length, "path_length", strict=True)
        fixed = sorted({"refining_steps", "step_size"} & set(options))
        if fixed:
            raise TypeError(f"for_budget() sets {fixed} from evaluations and path_length; do not pass them")
        return cls(refining_steps=evaluations, step_size=float(path_length) / evaluations, **options)

    @property
    def path_length(self) -> float:
        """``K·η`` (``Σ η_k`` for per-step sizes): the length of the refinement path before clipping (20 for the paper's defaults)."""
        return self.options.path_length

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({fields})"

    @property
    def config(self) -> Dict[str, Any]:
        """The settings as a JSON-ready dict, e.g. for a manifest (:meth:`RefineOptions.to_dict`)."""
        return self.options.to_dict()

    def refine(
        self,
        pipe: Any,
        prompt: Any = None,
        *,
        negative_prompt: Any = None,
        num_images_per_prompt: int = 1,
        height: Optional[int] = None,
        width: Optional[int] = None,
        latents: Optional[Tensor] = None,
        generator: GeneratorLike = None,
        fixed_noise: Optional[Tensor] = None,
        **kwargs: Any,
    ) -> NLGRefinement:
        """Refine initial noise for ``pipe`` and ``prompt`` without running the sampler.

        Args:
            pipe: a Stable Diffusion / SDXL pipeline, or any object with an ``nlg_adapter()`` method.
            prompt (`str` or `List[str]`, *optional*): the prompt(s); for :mod:`nlg.digits` the class label(s).
                May be None when ``prompt_embeds`` are given (never both, as in diffusers).
            negative_prompt (*optional*): the null condition; defaults to the empty prompt.
            num_images_per_prompt (`int`, defaults to 1): images per prompt.
            height, width (`int`, *optional*): image size in pixels; defaults to the pipeline's.
            latents (`torch.Tensor`, *optional*): initial unit-variance noise; drawn as the pipeline
                would draw it (``randn_tensor`` with ``generator``) if omitted.
            generator (`torch.Generator` or list, *optional*): drives the initial noise and the
                refinement noise; a list gives one generator per image.
            fixed_noise (`torch.Tensor`, *optional*): one refinement noise ``z`` repeated at every step
                (see :func:`nlg.refine_noise`; only to reproduce the reference implementation).
            **kwargs: further encoding options (``prompt_2``, ``negative_prompt_2``, ``clip_skip``),
                precomputed embeddings (``prompt_embeds``, ``negative_prompt_embeds``, and for SDXL
                ``pooled_prompt_embeds``, ``negative_pooled_prompt_embeds``), ``cross_attention_kwargs``
                (with the LoRA ``scale``; it reaches the prompt encoding and every refinement model call and
                is returned in ``.conditioning``) and SDXL micro-conditioning (``original_size``,
                ``crops_coords_top_left``, ``target_size``).
        """
        unknown = set(kwargs) - set(ENCODE_KWARGS) - set(SDXL_SIZE_KWARGS)
        if unknown:
            raise TypeError(f"refine() got unexpected keyword arguments {sorted(unknown)}")
        encode_kwargs = {k: kwargs[k] for k in ENCODE_KWARGS if k in kwargs}
        size_kwargs = {k: kwargs[k] for k in SDXL_SIZE_KWARGS if k in kwargs}
        with torch.inference_mode():
            adapter = get_adapter(pipe)
            batch, conditioning = adapter.encode(
                prompt, num_images_per_prompt=num_images_per_prompt, negative_prompt=negative_prompt, **encode_kwargs
            )
            check_generator(generator, batch)  # batch = prompts × num_images_per_prompt
            shape = adapter.latent_shape(batch, height, width)
            dtype = conditioning["prompt_embeds"].dtype if "prompt_embeds" in conditioning else torch.float32
            if latents is None:
                latents = adapter.initial_latents(shape, generator, dtype)
            else:
                _check_latents(latents, shape)
            direction = adapter.direction_fn(
                conditioning,
                gamma=self.guidance_formula_gamma,
                reference_timestep=self.reference_timestep,
                height=height,
                width=width,
                **size_kwargs,
            )
            result = refine_noise(latents, direction, options=self.options, generator=generator, fixed_noise=fixed_noise)
        # Clone outside inference mode so callers may use these anywhere.
        conditioning = {k: v.clone() if isinstance(v, Tensor) else v for k, v in conditioning.items()}
        return NLGRefinement(
            latents=result.latents.clone(), step_norms=result.step_norms.clone(), conditioning=conditioning,
            evaluations=result.evaluations.clone(),
        )

    def __call__(self, pipe: Any, prompt: Any = None, *, return_refinement: bool = False, **pipeline_kwargs: Any) -> Any:
        """Refine, then run ``pipe`` unchanged with the refined latents and the already-encoded prompt.

        Accepts the pipeline's own keyword arguments, each honoured or refused by name:

        * the prompt options (``negative_prompt``, ``prompt_2``, ``clip_skip``, …) and precomputed embeddings
          (``prompt_embeds``, ``negative_prompt_embeds``, SDXL's pooled ones) drive both the refinement and
          the sampling; ``prompt`` may be None when ``prompt_embeds`` are given, and passing both raises
          ``ValueError`` as diffusers does;
        * ``cross_attention_kwargs`` (the LoRA ``scale``; SD3's ``joint_attention_kwargs``) reaches the prompt
          encoding, every refinement model call and the pipeline;
        * ``ip_adapter_image`` / ``ip_adapter_image_embeds`` raise ``ValueError`` (see :data:`nlg.adapters.base.REFUSED_KWARGS`);
        * any other keyword goes to the pipeline if its ``__call__`` names it, else ``TypeError`` names it
          (before any model call; diffusers' ``**kwargs`` would otherwise ignore a misspelt option silently).

        Returns the pipeline's output, or ``(output, NLGRefinement)`` with ``return_refinement=True``.  With
        ``refining_steps=0`` the images equal ``pipe(prompt, **pipeline_kwargs)`` pixel for pixel.
        """
        check_pipeline_kwargs(pipe, pipeline_kwargs, consumed=_REFINE_CALL_KWARGS)
        refine_args: Dict[str, Any] = {}
        for name in _REFINE_CALL_KWARGS:
            if name in pipeline_kwargs:
                refine_args[name] = pipeline_kwargs.pop(name)
        for name in ENCODE_KWARGS:
            if name in pipeline_kwargs and name not in refine_args:
                refine_args[name] = pipeline_kwargs.pop(name)
        for name in SDXL_SIZE_KWARGS:
            if name in pipeline_kwargs:
                refine_args[name] = pipeline_kwargs[name]  # the pipeline needs them as well
        refinement = self.refine(pipe, prompt, **refine_args)
        call_kwargs: Dict[str, Any] = dict(pipeline_kwargs)
        call_kwargs.update(refinement.conditioning)
        for name in ("generator", "height", "width"):
            if name in refine_args:
                call_kwargs[name] = refine_args[name]
        with torch.inference_mode():
            output = pipe(latents=refinement.latents, num_images_per_prompt=1, **call_kwargs)
        return (output, refinement) if return_refinement else output


def _check_latents(latents: Tensor, shape: Tuple[int, ...]) -> None:
    check_tensor(latents, "latents")
    if latents.ndim != len(shape):
        raise ValueError(f"latents must have rank {len(shape)} (shape {shape}), got shape {tuple(latents.shape)}")
    if latents.shape[0] != shape[0]:
        raise ValueError(
            f"latents hold {latents.shape[0]} samples but prompts × num_images_per_prompt = {shape[0]}"
        )
    if tuple(latents.shape[1:]) != tuple(shape[1:]):
        raise ValueError(f"latents must have shape {shape} for this pipeline and size, got {tuple(latents.shape)}")
