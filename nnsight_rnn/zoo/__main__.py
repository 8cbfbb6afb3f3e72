"""``python -m nnsight_rnn.zoo [--force] [--quiet] [NAME ...]``: build zoo models (the worker of ``build_zoo``)."""

from .build import main

main()
