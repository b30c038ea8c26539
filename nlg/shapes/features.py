"""FID / IS features of the shapes model's images without a neural network: :class:`ShapesFeatures`.

``core_experiments/calculate_metrics.py --feature_extractor shapes`` passes it to
:func:`nlg.eval.evaluate_folder` in place of InceptionV3, so the shapes model is scored offline.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from .data import COLOURS, SHAPES
from .geneval import assign_pixels, detect_objects

__all__ = ["ShapesFeatures"]


class ShapesFeatures(torch.nn.Module):
    """FID / IS features from the shapes scorer (:mod:`nlg.shapes.geneval`): no neural network, no download.

    For a uint8 image at its own size (32×32 for the shapes model):

    * features (26): the number of detected objects of each (colour, shape) pair (6 × 3), the share of
      pixels nearest to each of the 7 reference colours (background first) and the off-palette share;
    * logits (18): ``log(1 + area)`` of the detected objects of each (colour, shape) pair, so the
      Inception Score's ``p(y|x)`` is the smoothed share of object area per pair.
    """

    num_features = 26
    num_classes = 18

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(features (B, 26), logits (B, 18))`` in float64 for a uint8 batch ``(B, 3, H, W)``."""
        pairs = [(c, s) for c in COLOURS for s in SHAPES]
        features, logits = [], []
        for image in images:
            array = image.permute(1, 2, 0).cpu().numpy()
            labels, off = assign_pixels(array)
            detections, _ = detect_objects(array)
            counts = [sum(d.colour == c and d.shape == s for d in detections) for c, s in pairs]
            areas = [sum(d.area for d in detections if d.colour == c and d.shape == s) for c, s in pairs]
            shares = [float((labels[~off] == k).sum()) / labels.size for k in range(len(COLOURS) + 1)]
            features.append(counts + shares + [float(off.mean())])
            logits.append([math.log1p(a) for a in areas])
        return torch.tensor(features, dtype=torch.float64), torch.tensor(logits, dtype=torch.float64)
