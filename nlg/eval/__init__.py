"""Evaluation infrastructure: experiment run folders (:mod:`~nlg.eval.runs`), image datasets
(:mod:`~nlg.eval.datasets`), FID / IS / CLIP-score metrics (:mod:`~nlg.eval.metrics`), paired statistics
(:mod:`~nlg.eval.stats`: exact McNemar, Holm, bootstrap over prompts) and plots (:mod:`~nlg.eval.plotting`).

Importing this package imports none of them, so the plots do not pull in torchmetrics.
"""
