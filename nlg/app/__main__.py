"""``python -m nlg.app``: see :mod:`nlg.app.cli`."""

from .cli import main

main()
