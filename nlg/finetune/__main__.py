"""``python -m nlg.finetune``: see :mod:`nlg.finetune.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
