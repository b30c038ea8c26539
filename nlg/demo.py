"""``make demo``: NLG vs plain classifier-free guidance on the shipped digits model (see :mod:`nlg.digits.demo`)."""

from __future__ import annotations

from .digits.demo import main

if __name__ == "__main__":
    main()
