"""Evaluation infrastructure: experiment run folders (:mod:`~nlg.eval.runs`), image datasets
(:mod:`~nlg.eval.datasets`), FID / IS / CLIP-score metrics (:mod:`~nlg.eval.metrics`) and plots
(:mod:`~nlg.eval.plotting`).

Importing this package imports none of them, so the plots do not pull in torchmetrics.
"""
