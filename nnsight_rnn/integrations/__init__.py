"""Bridges from nnsight-rnn models to other interpretability packages (optional dependencies).

Nothing here is imported by ``import nnsight_rnn``; each integration is activated explicitly:

- :mod:`nnsight_rnn.integrations.tuned_lens`: the unmodified ``tuned-lens`` package (0.2.0) on every
  nnsight-rnn card. ``from nnsight_rnn.integrations import tuned_lens as tl_rnn; tl_rnn.enable(model)``.
  Install with ``pip install "nnsight-rnn[tuned-lens]"``.
- :mod:`nnsight_rnn.integrations.tuned_lens_cli`: ``python -m nnsight_rnn.integrations.tuned_lens_cli
  train|eval ...`` runs tuned-lens's own CLI with the shims it needs under current dependencies.
- :mod:`nnsight_rnn.integrations.state_lens`: a lens on the recurrent state (what the memory of layer
  ``i`` predicts), an extension of the tuned lens to the carried state.
"""
