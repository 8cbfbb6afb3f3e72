"""Compatibility shims that let tuned-lens 0.2.0 (2023) run under today's TransformerLens and plotly.

Each fixes one upstream incompatibility, idempotently, and is applied by
:func:`nnsight_rnn.integrations.tuned_lens.enable`. (The CLI's own shims, for ``torchdata`` and
``Model.load``, are in :mod:`nnsight_rnn.integrations.tuned_lens_cli`.)
"""

from __future__ import annotations

from typing import Any

PATCHED_FLAG = "__nnsight_rnn_patched__"  # set on everything nnsight-rnn patched into tuned-lens


def fix_transformer_lens_check() -> None:
    """TransformerLens >= 4 has no HookedTransformer: tuned-lens must act as if it were absent."""
    import tuned_lens.model_surgery as ms

    if not ms._transformer_lens_available:
        return
    try:
        ms.tl.HookedTransformer  # noqa: B018  (raises ImportError on TransformerLens >= 4)
    except (ImportError, AttributeError):
        ms._transformer_lens_available = False


class PlotlyCompat:
    """``plotly.graph_objects`` for tuned-lens's plotting module, with plotly >= 6's colorbar title.

    tuned-lens 0.2.0 builds heatmaps with ``colorbar=dict(title=..., titleside="right")``; plotly 6 removed
    ``titleside`` (``title=dict(text=..., side=...)`` replaces it), so every ``.figure()`` / ``.heatmap()``
    of a ``TrajectoryStatistic`` raised. Everything else is plotly's own.
    """

    __nnsight_rnn_patched__ = True

    def __init__(self, go: Any) -> None:
        self._go = go

    def __getattr__(self, name: str) -> Any:
        return getattr(self._go, name)

    def Heatmap(self, *args: Any, **kwargs: Any) -> Any:  # plotly's name
        colorbar = kwargs.get("colorbar")
        if isinstance(colorbar, dict) and "titleside" in colorbar:
            colorbar = dict(colorbar)
            side = colorbar.pop("titleside")
            title = colorbar.get("title")
            colorbar["title"] = {**(title if isinstance(title, dict) else {"text": title}), "side": side}
            kwargs["colorbar"] = colorbar
        return self._go.Heatmap(*args, **kwargs)


def fix_plotly_colorbar() -> None:
    """Make tuned-lens's trajectory plots work with plotly >= 6 (see :class:`PlotlyCompat`)."""
    try:
        import plotly
        import tuned_lens.plotting.trajectory_plotting as tp
    except ImportError:  # pragma: no cover - plotting extras absent
        return
    if int(plotly.__version__.split(".")[0]) >= 6 and not getattr(tp.go, PATCHED_FLAG, False):
        tp.go = PlotlyCompat(tp.go)
