"""``python -m nnsight_rnn.remote {key,check,deploy-config} ...``: see :func:`nnsight_rnn.remote.main`."""

from . import main

raise SystemExit(main())
