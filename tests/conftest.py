"""Suite-wide settings: the tests' models are tiny, so one intra-op thread is fastest and steadiest.

On a 2-core machine that is also running other work, torch's thread pool oversubscribes the cores and
tiny-model calls slow down by an order of magnitude; subprocesses (notebooks, the app, accelerate)
inherit the same limit through the environment.
"""

import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
