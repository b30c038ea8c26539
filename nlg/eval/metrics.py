"""FID, Inception Score and CLIP score for generated images, batched, streaming and multi-process.

Thin layers over torchmetrics, so the figures are torchmetrics' own:

* one pass of torch-fidelity's InceptionV3 (:class:`InceptionFeatures`, torchmetrics'
  ``NoTrainInceptionV3``) gives both the 2048-d pool features for ``FrechetInceptionDistance`` and
  the unbiased logits for ``InceptionScore``, instead of one pass per metric;
* :class:`PerImageCLIPScore` is torchmetrics' ``CLIPScore`` that also keeps every image's score and id,
  for the bottom-k CLIP score;
* every state is a torchmetrics state, so ``compute()`` syncs across ``accelerate`` / ``torch.distributed``
  processes, each of which fed its own shard.

:class:`GenerationMetrics` is the stateful class; :func:`generation_metrics` its functional twin over
iterables of batches (e.g. the DataLoaders of :mod:`nlg.eval.datasets`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
from torchmetrics.image.inception import InceptionScore
from torchmetrics.multimodal.clip_score import CLIPScore
from torchmetrics.utilities.data import dim_zero_cat

from ..utils.types import PathLike
from ._torchmetrics import INCEPTION_SCORE_FEATURES, add_clip_scores, clip_scores, fid_count, inception_features, seeded_inception_score
from ..utils.types import PathLike

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "InceptionFeatures",
    "clip_loader",
    "PerImageCLIPScore",
    "GenerationMetrics",
    "MetricsResult",
    "generation_metrics",
    "bottom_k_mean",
]

#: The CLIP model of the paper's CLIP scores.
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"
ClipLoader = Callable[[], Tuple[Any, Any]]


class InceptionFeatures(NoTrainInceptionV3):
    """torch-fidelity's InceptionV3 (FID/IS standard weights) returning ``(pool_2048, logits_unbiased)``.

    For speed each batch norm is folded into the convolution before it (the network never trains),
    which changes features only by float rounding (~1e-6).

    Args:
        weights_path (`str`, *optional*):
            A saved state dict (torchmetrics' ``feature_extractor_weights_path``); ``None`` downloads
            torch-fidelity's ``pt_inception-2015-12-05`` weights.
        fuse_batch_norms (`bool`, defaults to True): fold batch norms into convolutions.
    """

    def __init__(self, weights_path: Optional[PathLike] = None, *, fuse_batch_norms: bool = True) -> None:
        if weights_path is not None and not Path(weights_path).is_file():
            raise ValueError(f"inception_weights: {weights_path} is not a file")
        super().__init__(
            name="inception-v3-compat",
            features_list=["2048", "logits_unbiased"],
            feature_extractor_weights_path=None if weights_path is None else str(weights_path),
        )
        if fuse_batch_norms:
            from torch.nn.utils.fusion import fuse_conv_bn_eval

            for block in self.modules():
                if isinstance(getattr(block, "conv", None), nn.Conv2d) and isinstance(getattr(block, "bn", None), nn.BatchNorm2d):
                    block.conv = fuse_conv_bn_eval(block.conv, block.bn)
                    block.bn = nn.Identity()

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:  # type: ignore[override]
        """``images``: uint8 ``(B, 3, H, W)``, resized to 299 inside as torchmetrics does."""
        pool, logits = inception_features(self, images)
        return pool.reshape(images.shape[0], -1), logits.reshape(images.shape[0], -1)


class _Precomputed(nn.Module):
    """A stand-in feature extractor for torchmetrics metrics that are fed features, not images."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


class _OrderedInceptionScore(InceptionScore):
    """torchmetrics' ``InceptionScore`` on precomputed logits, made independent of feeding order.

    Before torchmetrics' random split the logits are put in a fixed order and the split permutation is
    drawn from a fixed seed, so the score does not depend on batches, shards or process count.
    ``order="reference"``: the order of the reference script (file names ``<id>.png`` sorted as
    strings) and its generator state (seed, then two InceptionV3 initialisations); ``order="id"``: by
    id, the permutation drawn right after ``torch.manual_seed(seed)``.
    """

    ORDERS = ("reference", "id")

    def __init__(self, splits: int, seed: int, num_classes: int = 1008, order: str = "reference") -> None:
        super().__init__(feature=_Precomputed(num_classes), splits=splits)
        if order not in self.ORDERS:
            raise ValueError(f"inception_score_order must be one of {self.ORDERS}, got {order!r}")
        self.seed = seed
        self.order = order
        # torchmetrics gathers a list state without a reduction batch by batch, interleaving the processes,
        # but a "cat" state process by process: both states are "cat", so logits and ids stay paired (and an
        # uneven number of batches per process cannot desynchronise the collectives).
        self.add_state(INCEPTION_SCORE_FEATURES, [], dist_reduce_fx="cat")
        self.add_state("ids", [], dist_reduce_fx="cat")

    def update(self, logits: Tensor, ids: Tensor) -> None:  # type: ignore[override]
        getattr(self, INCEPTION_SCORE_FEATURES).append(logits)
        self.ids.append(ids)

    def compute(self) -> Tuple[Tensor, Tensor]:
        features = dim_zero_cat(getattr(self, INCEPTION_SCORE_FEATURES))
        if features.shape[0] < self.splits:
            raise ValueError(f"is_splits: {self.splits} splits need at least as many images, got {features.shape[0]}")
        ids = dim_zero_cat(self.ids).tolist()
        if self.order == "reference":
            order = sorted(range(len(ids)), key=lambda j: f"{ids[j]}.png")
        else:
            order = sorted(range(len(ids)), key=lambda j: ids[j])
        ordered = features[torch.tensor(order, device=features.device)]
        return seeded_inception_score(self, ordered, self.seed, as_reference=self.order == "reference")


class _CLIPFeatures(nn.Module):
    """A CLIP model whose ``get_image_features`` / ``get_text_features`` return tensors.

    transformers 5 returns a model output (projected features in ``pooler_output``) where
    torchmetrics' ``CLIPScore`` expects the tensor that transformers 4 returned.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(output: Any) -> Tensor:
        return output if isinstance(output, Tensor) else output.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def clip_loader(model: str = DEFAULT_CLIP_MODEL, *, local_files_only: bool = False) -> ClipLoader:
    """A callable returning ``(CLIPModel, CLIPProcessor)`` from a hub id or a local folder, for ``CLIPScore``."""

    def load() -> Tuple[Any, Any]:
        from transformers import CLIPModel, CLIPProcessor

        try:
            clip = CLIPModel.from_pretrained(model, local_files_only=local_files_only).eval()
            processor = CLIPProcessor.from_pretrained(model, local_files_only=local_files_only)
        except (OSError, ValueError) as err:
            raise ValueError(f"clip_model: cannot load {model!r}: {err}") from err
        return clip, processor

    return load


class PerImageCLIPScore(CLIPScore):
    """torchmetrics' ``CLIPScore`` that also keeps each image's score ``100·cos(image, caption)`` and id.

    Args:
        model (`str` or callable, defaults to ``"openai/clip-vit-base-patch16"``):
            Hub id, local folder, or a callable returning ``(CLIPModel, CLIPProcessor)``.
        local_files_only (`bool`, defaults to False): never contact the hub.
    """

    def __init__(self, model: Union[str, ClipLoader] = DEFAULT_CLIP_MODEL, *, local_files_only: bool = False) -> None:
        loader = model if callable(model) else clip_loader(model, local_files_only=local_files_only)

        def load() -> Tuple[Any, Any]:
            clip, processor = loader()
            return (clip if isinstance(clip, _CLIPFeatures) else _CLIPFeatures(clip)), processor

        super().__init__(model_name_or_path=load)
        self.add_state("ids", [], dist_reduce_fx="cat")
        self.add_state("scores", [], dist_reduce_fx="cat")

    def update(self, images: Tensor, captions: Sequence[str], ids: Tensor) -> None:  # type: ignore[override]
        """``images``: uint8 ``(B, 3, H, W)``; ``captions``: B strings; ``ids``: B integer ids."""
        score, count = clip_scores(images, captions, self.model, self.processor)
        add_clip_scores(self, score, count)
        self.scores.append(score.float())
        self.ids.append(ids.to(score.device))

    def per_image(self) -> Dict[int, float]:
        """Every image's score by id, gathered from all processes."""
        with self.sync_context():
            # "cat" states are lists before a sync and tensors after one
            ids = dim_zero_cat(self.ids).tolist() if len(self.ids) else []
            scores = dim_zero_cat(self.scores).tolist() if len(self.scores) else []
        return dict(zip(ids, scores))


@dataclass
class MetricsResult:
    """Every figure of a metrics run.

    Args:
        fid (`float`): Fréchet Inception Distance, fake vs real.
        inception_score (`float`): Inception Score mean over splits; ``inception_score_std`` its std.
        clip_score (`float`): mean CLIP score of all fake images.
        num_fake, num_real (`int`): images scored.
        clip_scores (`Dict[int, float]`): per-image CLIP score by id.
    """

    fid: float
    inception_score: float
    inception_score_std: float
    clip_score: float
    num_fake: int
    num_real: int
    clip_scores: Dict[int, float] = field(default_factory=dict)

    def figures(self) -> Dict[str, Any]:
        """The scalar figures (no per-image scores)."""
        return {k: v for k, v in asdict(self).items() if k != "clip_scores"}


class GenerationMetrics(nn.Module):
    """FID, Inception Score and CLIP score, fed batch by batch, one Inception pass per image.

    Args:
        inception_weights (`str`, *optional*): InceptionV3 state dict for offline use.
        clip_model (`str` or callable, defaults to ``"openai/clip-vit-base-patch16"``): see
            :class:`PerImageCLIPScore`; ``None`` skips the CLIP score (FID and IS only).
        local_files_only (`bool`, defaults to False): never contact the hub for CLIP.
        is_splits (`int`, defaults to 10): Inception Score splits.
        seed (`int`, defaults to 0): seeds the Inception Score split permutation.
        inception_score_order (`str`, defaults to ``"reference"``): how the Inception Score's split is
            drawn: ``"reference"`` reproduces the reference script's (images in file-name order, global
            generator at ``seed`` advanced by two InceptionV3 initialisations); ``"id"`` orders by id and
            draws right after seeding.
        feature_extractor (`nn.Module`, *optional*): replaces InceptionV3 (torchmetrics' custom
            ``feature`` route): maps uint8 ``(B, 3, H, W)`` images to ``(features (B, D), logits (B, C))``
            and has the attributes ``num_features`` (D) and ``num_classes`` (C); FID is then computed on
            its features and the Inception Score on ``softmax(logits)``.  ``inception_weights`` is unused.
    """

    def __init__(
        self,
        *,
        inception_weights: Optional[PathLike] = None,
        clip_model: Union[str, ClipLoader, None] = DEFAULT_CLIP_MODEL,
        local_files_only: bool = False,
        is_splits: int = 10,
        seed: int = 0,
        inception_score_order: str = "reference",
        feature_extractor: Optional[torch.nn.Module] = None,
    ) -> None:
        super().__init__()
        if isinstance(is_splits, bool) or not isinstance(is_splits, int) or is_splits < 1:
            raise ValueError(f"is_splits must be an int >= 1, got {is_splits!r}")
        if feature_extractor is None:
            self.inception: nn.Module = InceptionFeatures(inception_weights).to(memory_format=torch.channels_last)
            num_features, num_classes = 2048, 1008
        else:
            if not isinstance(feature_extractor, nn.Module):
                raise TypeError(f"feature_extractor must be a torch.nn.Module, got {type(feature_extractor).__name__}")
            num_features = getattr(feature_extractor, "num_features", None)
            num_classes = getattr(feature_extractor, "num_classes", None)
            if not all(isinstance(n, int) and n >= 1 for n in (num_features, num_classes)):
                raise ValueError("feature_extractor needs int attributes num_features and num_classes >= 1")
            self.inception = feature_extractor
        self.fid = FrechetInceptionDistance(feature=_Precomputed(num_features))
        self.inception_score = _OrderedInceptionScore(is_splits, seed, num_classes, inception_score_order)
        self.clip_score = None if clip_model is None else PerImageCLIPScore(clip_model, local_files_only=local_files_only)

    def _features(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        parameter = next(self.inception.parameters(), None)
        images = images if parameter is None else images.to(parameter.device)
        if isinstance(self.inception, InceptionFeatures):
            images = images.contiguous(memory_format=torch.channels_last)
        return self.inception(images)

    @torch.inference_mode()
    def update_fake(
        self, inception_images: Tensor, clip_images: Optional[Tensor], captions: Sequence[str], ids: Tensor
    ) -> None:
        """Add generated images: uint8 ``(B, 3, H, W)`` for Inception and for CLIP (``None`` without
        CLIP), their captions and ids."""
        sizes = {len(captions), len(ids), inception_images.shape[0]}
        if clip_images is not None:
            sizes.add(clip_images.shape[0])
        if len(sizes) != 1:
            raise ValueError("update_fake: images, captions and ids must have the same length")
        pool, logits = self._features(inception_images)
        self.fid.update(pool, real=False)
        self.inception_score.update(logits, ids.to(logits.device))
        if self.clip_score is not None:
            if clip_images is None:
                raise ValueError("update_fake: clip_images are needed for the CLIP score")
            self.clip_score.update(clip_images.to(pool.device), captions, ids)

    @torch.inference_mode()
    def update_real(self, inception_images: Tensor) -> None:
        """Add real images: uint8 ``(B, 3, H, W)``."""
        pool, _ = self._features(inception_images)
        self.fid.update(pool, real=True)

    def compute(self) -> MetricsResult:
        """All figures, synced across processes."""
        is_mean, is_std = self.inception_score.compute()
        return MetricsResult(
            fid=float(self.fid.compute()),
            inception_score=float(is_mean),
            inception_score_std=float(is_std),
            clip_score=math.nan if self.clip_score is None else float(self.clip_score.compute()),
            num_fake=fid_count(self.fid, False),
            num_real=fid_count(self.fid, True),
            clip_scores={} if self.clip_score is None else self.clip_score.per_image(),
        )


def generation_metrics(
    fake_batches: Iterable[Dict[str, Any]],
    real_batches: Iterable[Dict[str, Any]],
    **options: Any,
) -> MetricsResult:
    """Functional twin of :class:`GenerationMetrics`: stream the batches through it and compute.

    Args:
        fake_batches: dicts with ``inception`` and ``clip`` (uint8 image tensors), ``caption`` and ``id``.
        real_batches: dicts with ``inception``.
        **options: :class:`GenerationMetrics` arguments.
    """
    metrics = GenerationMetrics(**options)
    for batch in fake_batches:
        metrics.update_fake(batch["inception"], batch.get("clip"), batch["caption"], batch["id"])
    for batch in real_batches:
        metrics.update_real(batch["inception"])
    return metrics.compute()


def bottom_k_mean(scores: Dict[int, float], k: int, *, ids: Optional[Sequence[int]] = None) -> Tuple[float, List[int]]:
    """Mean CLIP score over the ``k`` lowest-scoring ids (or over the given ``ids``), and those ids.

    ``CLIPScore`` reports ``max(mean, 0)``; so does this.
    """
    if ids is None:
        ids = sorted(scores, key=lambda i: (scores[i], i))[:k]
    missing = [i for i in ids if i not in scores]
    if missing:
        raise ValueError(f"no score for ids {missing[:10]}{' …' if len(missing) > 10 else ''}")
    if not ids:
        return math.nan, []
    return max(sum(scores[i] for i in ids) / len(ids), 0.0), list(ids)
