"""The nnsight envoy nnsight-rnn models use: a misspelled attribute gets the nearest names.

nnsight's own message is "'Envoy' object (nor its module) has attribute 'hook_ssm_stat'"; this
one names the module, its path and the nearest submodules / hook points, and where to list them.

``envoy.positions = [...]`` on a hook point's envoy selects its positions (it sets the hook
point's own ``positions``; a plain envoy would keep the attribute to itself, a silent no-op).
Inside a trace it is refused: the model is already running (and remotely it would change the
server's model for every later request).
"""

from __future__ import annotations

import difflib
from typing import Any

from nnsight.intervention.envoy import Envoy

from .hooks import HookPoint


class SuggestingEnvoy(Envoy):
    """An :class:`~nnsight.intervention.envoy.Envoy` whose unknown-attribute error suggests names."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = self.__dict__.get("_module")
            if module is None or name.startswith("_"):
                raise
            children = [child for child, _ in module.named_children()]
            near = difflib.get_close_matches(name, children + list(type(self).__dict__), n=3, cutoff=0.6)
            hint = f" Nearest: {near}." if near else f" Its submodules: {children[:12]}."
            raise AttributeError(
                f"{type(module).__name__} at {self.__dict__.get('path', '?')!r} has no attribute {name!r}.{hint} "
                "List every hook point with model.hook_points() or `nnsight-rnn info FAMILY`."
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        module = self.__dict__.get("_module")
        if name == "positions" and isinstance(module, HookPoint):
            interleaver = self.__dict__.get("interleaver")  # set by Envoy.__init__
            if interleaver is not None and interleaver.interleaving:
                raise ValueError(
                    f"positions of {self.__dict__.get('path', 'this hook')!r} cannot change inside a trace (the model "
                    "is already running): set them before the trace, or use "
                    "nnsight_rnn.capture.capture_states(model, inputs, layers, positions=...)"
                )
            module.positions = None if value is None else [int(p) for p in value]
            return
        super().__setattr__(name, value)
