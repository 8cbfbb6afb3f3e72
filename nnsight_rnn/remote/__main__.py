"""``python -m nnsight_rnn.remote {key,check,deploy-config} ...``: see :func:`nnsight_rnn.remote.cli.main`."""

from .cli import main

raise SystemExit(main())
