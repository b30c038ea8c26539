"""Every use of torchmetrics internals in ``nlg``, in one module.

torchmetrics has no public API for these, and each can change in a minor release (``_clip_score_update``
changed its arguments after 1.6).  ``tests/eval/test_metrics.py`` (``test_torchmetrics_contract_*``) checks
each one against an independent computation, so an incompatible torchmetrics fails loudly there
rather than silently changing a figure.  Needs ``torchmetrics>=1.7,<2`` (1.7 is the first release whose
``CLIPScore`` accepts a callable as ``model_name_or_path``; checked by installing 1.6.3 and 1.7.0).

* :func:`inception_features`: ``NoTrainInceptionV3._torch_fidelity_forward``, which returns every
  requested torch-fidelity feature from one pass (the public ``forward`` returns only the first);
* :func:`clip_scores`: ``torchmetrics.functional.multimodal.clip_score._clip_score_update``, the
  per-image ``100·cos(image, caption)`` that ``CLIPScore`` sums (the public API returns only the mean);
* :func:`add_clip_scores` and :func:`fid_count`: the state names ``score`` / ``n_samples`` of
  ``CLIPScore`` and ``real_features_num_samples`` / ``fake_features_num_samples`` of
  ``FrechetInceptionDistance``; :data:`INCEPTION_SCORE_FEATURES`, the ``features`` list state of
  ``InceptionScore``;
* :func:`seeded_inception_score`: ``InceptionScore.compute`` permutes the images with
  ``torch.randperm(n)`` from the *global* generator before splitting; this seeds that draw, optionally
  advanced as the reference script's generator is at that point (:func:`advance_as_reference`).
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import torch
import torchmetrics
from torch import Tensor

#: The oldest torchmetrics whose ``CLIPScore`` takes a callable model loader (1.6.3 fails, 1.7.0 passes).
MIN_TORCHMETRICS = (1, 7)


def _release(version: str) -> tuple:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


if _release(torchmetrics.__version__) < MIN_TORCHMETRICS:
    raise ImportError(
        f"nlg.eval's metrics need torchmetrics>=1.7,<2, found {torchmetrics.__version__}: "
        "pip install 'torchmetrics>=1.7,<2'"
    )

__all__ = [
    "INCEPTION_SCORE_FEATURES",
    "inception_features",
    "clip_scores",
    "add_clip_scores",
    "fid_count",
    "seeded_inception_score",
    "advance_as_reference",
]

#: ``InceptionScore``'s list state of fed logits.
INCEPTION_SCORE_FEATURES = "features"


def inception_features(net: Any, images: Tensor) -> Tuple[Tensor, ...]:
    """All features of ``net`` (a ``NoTrainInceptionV3``) for uint8 ``images``, in ``features_list`` order."""
    return tuple(net._torch_fidelity_forward(images))


def clip_scores(images: Tensor, captions: Sequence[str], model: Any, processor: Any) -> Tuple[Tensor, int]:
    """Per-image ``100·cos(image, caption)`` exactly as ``CLIPScore.update`` computes it, and the count."""
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    score, count = _clip_score_update(images, list(captions), model, processor)
    return score, int(count)


def add_clip_scores(metric: Any, score: Tensor, count: int) -> None:
    """Accumulate per-image scores into a ``CLIPScore``'s own states, as its ``update`` does."""
    metric.score += score.sum(0)
    metric.n_samples += count


def fid_count(fid: Any, real: bool) -> int:
    """Images fed to a ``FrechetInceptionDistance`` (synced across processes)."""
    with fid.sync_context():
        return int(fid.real_features_num_samples if real else fid.fake_features_num_samples)


def advance_as_reference(networks: int = 2) -> None:
    """Advance the global torch generator as building ``networks`` torch-fidelity InceptionV3 networks does.

    The reference metrics script seeds torch with 0, then builds FID's and the Inception Score's
    InceptionV3 (``FrechetInceptionDistance()``, ``InceptionScore()``), whose layers draw their random
    initialisation from the global generator before the weights are loaded, and only then computes the
    Inception Score.  This builds the same layers (no weights loaded) and throws them away.
    """
    import tempfile
    from pathlib import Path

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Layers(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:  # keep the random layers
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pt"
        torch.save({}, empty)
        for _ in range(networks):
            _Layers("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))


def seeded_inception_score(metric: Any, logits: Tensor, seed: int, *, as_reference: bool = False) -> Tuple[Tensor, Tensor]:
    """torchmetrics' ``InceptionScore.compute`` (unwrapped: no sync, no cache) on ``logits`` in this order,
    its split permutation drawn after ``torch.manual_seed(seed)`` (and, with ``as_reference``,
    :func:`advance_as_reference`).  The global generator and the metric's states are restored
    afterwards.  Call it from an (already synced) ``compute``."""
    from torchmetrics.image.inception import InceptionScore

    original: List[Tensor] = getattr(metric, INCEPTION_SCORE_FEATURES)
    setattr(metric, INCEPTION_SCORE_FEATURES, [logits])
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if as_reference:
                advance_as_reference()
            return InceptionScore.compute(metric)
    finally:
        setattr(metric, INCEPTION_SCORE_FEATURES, original)
