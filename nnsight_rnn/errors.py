"""Every error nnsight-rnn raises on purpose, in one module (re-exported at the top level).

Each is an :class:`NnsightRnnError` and also the builtin a caller would catch for that kind of
mistake (``ValueError`` for bad input, ``KeyError`` for an unknown name, ``RuntimeError`` for an
environment that no longer behaves as required). Messages name the input and the fix; the command
lines print them as one line (``nnsight-rnn: error: ...``) and exit with status 2.
"""

from __future__ import annotations


class NnsightRnnError(Exception):
    """Base of every error nnsight-rnn raises on purpose."""


class _NamedKeyError(NnsightRnnError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


# --- what to load -------------------------------------------------------------------------------


class SourceError(NnsightRnnError, ValueError):
    """A model source nnsight-rnn cannot load, with what to pass instead (:mod:`nnsight_rnn.sources`)."""


class UnsupportedArchitectureError(NnsightRnnError, ValueError):
    """No card matches the model."""


class UnknownZooModelError(SourceError, KeyError):
    """A ``zoo/<name>`` that the registry does not have (a :class:`SourceError` and a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0])


class UpstreamContractError(NnsightRnnError, RuntimeError):
    """An upstream package no longer behaves as nnsight-rnn relies on (see :mod:`nnsight_rnn.upstream`)."""


# --- hooks and state ----------------------------------------------------------------------------


class UnknownHookError(_NamedKeyError):
    """A hook name that the model does not have."""


class UnknownTLHookError(_NamedKeyError):
    """A TransformerLens hook name this model does not have."""


class StateShapeError(NnsightRnnError, ValueError):
    """A carried state does not fit the model."""


# --- saved artifacts ----------------------------------------------------------------------------


class ArtifactMismatchError(NnsightRnnError, ValueError):
    """An artifact does not belong to this model (or its file is corrupt)."""


class ProbeMismatchError(ArtifactMismatchError):
    """A probe applied to the wrong layer, site or feature width, or asked for but not in the set."""


class LensMismatchError(ArtifactMismatchError):
    """A saved lens does not belong to the model it is being loaded onto."""


# --- data and integrations ----------------------------------------------------------------------


class SteeringDataError(NnsightRnnError, ValueError):
    """A CAA data file or item that cannot be used (missing keys, answers without a letter, ...)."""


class QuirkyDataError(NnsightRnnError, ValueError):
    """A quirky dataset file or item that cannot be used (missing keys, bad labels, ...)."""


class QuirkyTokenizationError(NnsightRnnError, ValueError):
    """The tokenizer splits a quirky item in a way the recipe cannot use."""


class ModelNotPreparedError(NnsightRnnError, RuntimeError):
    """A recurrent model reached tuned-lens without the hidden-state convention fix."""


class RemoteKeyError(NnsightRnnError, ValueError):
    """A model that cannot be named by a model key (built in memory), or a key that cannot be rebuilt."""
