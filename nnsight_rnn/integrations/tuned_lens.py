"""tuned-lens (the unmodified PyPI package, 0.2.0) on every nnsight-rnn card.

Activation is explicit (nothing happens on ``import nnsight_rnn``)::

    from tuned_lens import TunedLens
    from nnsight_rnn.integrations import tuned_lens as tl_rnn

    tl_rnn.enable(model)                 # model: an HF model (e.g. MambaForCausalLM) or nnsight_rnn.load(...)._module
    lens = TunedLens.from_model(model)   # tuned-lens's own API from here on

What :func:`enable` does (idempotent; :func:`disable` undoes 1, 3 and 4):

1. **Model surgery** (global, once). tuned-lens finds the final norm, the layer list and the
   unembedding with ``tuned_lens.model_surgery.get_final_norm`` / ``get_transformer_layers`` /
   ``get_unembedding_matrix``. Those are wrapped: a model tuned-lens already supports (GPT-2,
   GPT-NeoX, Llama, OPT, BLOOM, ...) gets exactly tuned-lens's own answer; any other model with an
   nnsight-rnn card (Mamba, Mamba-2, FalconMamba, RWKV-4, a transformer card you registered) gets
   the modules its card names (``card.modules["final_norm"]``, ``["layers"]``, ``["unembed"]``).
   Modules of tuned-lens that imported these functions by name (``tuned_lens.scripts.ingredients``,
   ``tuned_lens.causal.*``) are rebound too. A model with neither raises tuned-lens's own error.
2. **Compatibility fixes** (kept by :func:`disable`): with TransformerLens >= 4 installed, tuned-lens
   0.2.0's ``get_final_norm`` fails for *every* model (``tl.HookedTransformer`` was removed and raises
   on access); tuned-lens then behaves as if TransformerLens were absent (as it does without it). With
   plotly >= 6, every trajectory plot (``PredictionTrajectory....figure()``) raised on the removed
   colorbar ``titleside``; tuned-lens's plotting module gets a plotly proxy that translates it.
3. **Lens loading checks** for the models this integration adds (not for models tuned-lens
   supports natively): ``TunedLens.from_model_and_pretrained`` refuses a lens whose unembedding
   hash, ``d_model`` or layer count differs from the model's, with :class:`LensMismatchError`
   (tuned-lens itself only logs a warning and may load the translators of another model silently).
4. With a model: :func:`prepare_model` (below).

**Hidden-state convention.** tuned-lens reads ``model(ids, output_hidden_states=True).hidden_states``
assuming the transformer convention ``[emb, out_0, ..., out_{n-2}, norm(out_{n-1})]``: it lenses
``hidden_states[:-1]`` (``n`` entries, translator ``i`` for ``hidden_states[i]``) and treats the
logits as the last layer. Recurrent models in transformers return ``[out_0, ..., out_{n-1},
norm(out_{n-1})]`` (no embeddings): read as-is, every translator would be one layer off and the last
"layer" would be the model's own output. :func:`prepare_model` fixes this for one model without
touching its forward: forward hooks keep references to the residual stream entering layer 0
(``layers[0].input``: the embedding output; for RWKV-4 the raw embedding, which block 0 passes
through ``pre_ln`` first), to the outputs of layers ``0..n-2`` and to the final norm's output, and a
forward hook on the top-level model sets ``output.hidden_states`` to ``[layers[0].input, out_0, ...,
out_{n-2}, norm(out_{n-1})]`` whenever the caller asked for hidden states. The stream is recorded, not
reordered from transformers' tuple, whose convention per family changed between releases. Nothing else changes: logits, cache / state, the forward
function (so nnsight traces and their interventions keep working; inside an nnsight trace,
``model.output.hidden_states`` is the module's own value, in the RNN convention, because the hook
runs after the module's forward), and calls without ``output_hidden_states``. RWKV-4's eval-mode
rescaling is already undone by nnsight-rnn's RWKV-4 patches (applied by :func:`nnsight_rnn.install`,
which :func:`prepare_model` calls), so ``hidden_states`` are unscaled.

A recurrent model that was not prepared is refused by the wrapped model surgery with
:class:`ModelNotPreparedError` (instead of training every translator on the wrong layer).

tuned-lens 0.2.0's CLI also needs shims for current dependencies (``torchdata.dataloader2`` no
longer exists; ``Model.load`` passes ``load_in_8bit``, which transformers 5 rejects): see
:func:`nnsight_rnn.integrations.tuned_lens_cli.install_shims` and ``python -m
nnsight_rnn.integrations.tuned_lens_cli``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from ..cards import Card, UnsupportedArchitectureError, card_for
from ..errors import LensMismatchError, ModelNotPreparedError
from ..surgery import CARD_ATTR, get_module, install
from .hidden_states import transformer_hidden_states
from .tuned_lens_compat import PATCHED_FLAG, fix_plotly_colorbar, fix_transformer_lens_check

__all__ = [
    "LensMismatchError",
    "ModelNotPreparedError",
    "card_modules",
    "check_lens_matches",
    "disable",
    "enable",
    "is_enabled",
    "is_prepared",
    "prepare_model",
    "unprepare_model",
]

_HANDLES_ATTR = "_nnsight_rnn_tuned_lens_hooks"
_PATCHED_FLAG = PATCHED_FLAG
_ORIGINALS: dict[str, Any] = {}
_ENABLED = False


# ---------------------------------------------------------------------------------------------
# tuned-lens import
# ---------------------------------------------------------------------------------------------


def _tuned_lens() -> Any:
    try:
        import tuned_lens
        import tuned_lens.model_surgery
        import tuned_lens.nn.lenses
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"nnsight_rnn.integrations.tuned_lens needs the tuned-lens package ({error}). "
            'Install it with `pip install "nnsight-rnn[tuned-lens]"` (or `pip install tuned-lens==0.2.0`).'
        ) from error
    return tuned_lens


# ---------------------------------------------------------------------------------------------
# cards -> modules
# ---------------------------------------------------------------------------------------------


def _hf_module(model: Any) -> nn.Module:
    """The HF module; a clear error for an nnsight wrapper (tuned-lens calls the module itself)."""
    from ..model import HookedLanguageModel

    if isinstance(model, HookedLanguageModel):
        raise TypeError(
            "tuned-lens runs the HF module itself (model(ids, output_hidden_states=True)); pass "
            "`model._module` of the nnsight_rnn.load(...) result (and call "
            "nnsight_rnn.integrations.tuned_lens.enable(model._module) first)"
        )
    return model


def _card_or_none(model: Any) -> Card | None:
    if getattr(model, "config", None) is None:
        return None
    try:
        return card_for(model)
    except UnsupportedArchitectureError:
        return None


def card_modules(model: nn.Module) -> dict[str, Any]:
    """The modules the model's nnsight-rnn card names, in tuned-lens's terms.

    Returns ``{"layers_path": str, "layers": nn.ModuleList, "final_norm": nn.Module,
    "unembed": nn.Linear}``. Raises :class:`~nnsight_rnn.UnsupportedArchitectureError` for a model
    without a card.
    """
    card = card_for(model)
    unembed = get_module(model, card.modules["unembed"])
    if not isinstance(unembed, nn.Linear):
        raise ValueError(
            f"tuned-lens only supports a linear unembedding; {card.modules['unembed']!r} of this "
            f"{card.family} model is a {type(unembed).__name__}"
        )
    return {
        "layers_path": card.modules["layers"],
        "layers": get_module(model, card.modules["layers"]),
        "final_norm": get_module(model, card.modules["final_norm"]),
        "unembed": unembed,
    }


def _natively_supported(model: Any) -> bool:
    """Whether tuned-lens 0.2.0's own model surgery handles ``model``."""
    try:
        _ORIGINALS["get_transformer_layers"](model)
        _ORIGINALS["get_final_norm"](model)
    except (NotImplementedError, ValueError, AssertionError):
        return False
    return True


def _require_prepared(model: nn.Module, card: Card) -> None:
    if card.hidden_states == "rnn" and not is_prepared(model):
        raise ModelNotPreparedError(
            f"this {card.family} model returns hidden states in the RNN convention "
            "[out_0, ..., out_{n-1}, norm(out_{n-1})]; tuned-lens indexes them as "
            "[embeddings, out_0, ..., out_{n-2}, norm(out_{n-1})], so every translator would train on the "
            "wrong layer. Call nnsight_rnn.integrations.tuned_lens.enable(model) (or prepare_model(model)) "
            "before handing the model to tuned-lens."
        )


def _surgery(model: Any, what: str) -> Any:
    model = _hf_module(model)
    original = _ORIGINALS[what]
    if _natively_supported(model) or (what == "get_unembedding_matrix" and _card_or_none(model) is None):
        return original(model)
    card = _card_or_none(model)
    if card is None:
        return original(model)  # tuned-lens's own error for a model nobody supports
    _require_prepared(model, card)
    found = card_modules(model)
    if what == "get_final_norm":
        return found["final_norm"]
    if what == "get_transformer_layers":
        return found["layers_path"], found["layers"]
    return found["unembed"]


def _handled_by_integration(model: Any) -> bool:
    """A model with a card that tuned-lens does not support natively."""
    return _card_or_none(model) is not None and not _natively_supported(model)


# ---------------------------------------------------------------------------------------------
# hidden-state convention (per model)
# ---------------------------------------------------------------------------------------------


def is_prepared(model: nn.Module) -> bool:
    """Whether :func:`prepare_model` hooks are on ``model``."""
    return bool(model.__dict__.get(_HANDLES_ATTR))


def prepare_model(model: nn.Module) -> nn.Module:
    """Make one model ready for tuned-lens (idempotent); returns it.

    - A model tuned-lens already supports, or whose card uses the transformer hidden-state
      convention: nothing is changed.
    - A recurrent card (``card.hidden_states == "rnn"``): :func:`nnsight_rnn.install` (no-op if done;
      swaps in the hookable mixers, same parameters, same outputs) and the hidden-state hooks described
      in the module docstring.

    Raises :class:`~nnsight_rnn.UnsupportedArchitectureError` for a model that neither tuned-lens nor
      any nnsight-rnn card supports.
    """
    model = _hf_module(model)
    if not _ORIGINALS:
        _save_originals()
    if _natively_supported(model):
        return model
    card = card_for(model)
    if card.hidden_states != "rnn" or is_prepared(model):
        return model
    if getattr(model, CARD_ATTR, None) != card.family:
        install(model, card)
    model.__dict__[_HANDLES_ATTR] = transformer_hidden_states(model, card)
    return model


def unprepare_model(model: nn.Module) -> nn.Module:
    """Remove the hooks of :func:`prepare_model` (the nnsight-rnn install stays)."""
    for handle in model.__dict__.pop(_HANDLES_ATTR, None) or []:
        handle.remove()
    return model


# ---------------------------------------------------------------------------------------------
# patching tuned-lens (global)
# ---------------------------------------------------------------------------------------------

_SURGERY = ("get_final_norm", "get_transformer_layers", "get_unembedding_matrix")


def _save_originals() -> None:
    _tuned_lens()
    import tuned_lens.model_surgery as ms
    from tuned_lens.nn.lenses import TunedLens

    if _ORIGINALS:
        return
    for name in _SURGERY:
        fn = getattr(ms, name)
        _ORIGINALS[name] = getattr(fn, "__wrapped__", fn) if getattr(fn, _PATCHED_FLAG, False) else fn
    _ORIGINALS["from_model_and_pretrained"] = TunedLens.__dict__["from_model_and_pretrained"]
    fix_transformer_lens_check()


def _make_wrapper(name: str) -> Callable[..., Any]:
    original = _ORIGINALS[name]

    @functools.wraps(original)
    def wrapper(model: Any) -> Any:
        return _surgery(model, name)

    setattr(wrapper, _PATCHED_FLAG, True)
    return wrapper


def _from_model_and_pretrained(cls: type, model: Any, lens_resource_id: str | None = None, **kwargs: Any) -> Any:
    """tuned-lens's ``TunedLens.from_model_and_pretrained`` plus a refusal of foreign lenses (see module doc)."""
    original = _ORIGINALS["from_model_and_pretrained"].__func__
    model = _hf_module(model)
    if _handled_by_integration(model):
        check_lens_matches(model, lens_resource_id or model.config.name_or_path, **kwargs)
    return original(cls, model, lens_resource_id, **kwargs)


def check_lens_matches(model: nn.Module, lens_resource_id: str, **kwargs: Any) -> None:
    """Raise :class:`LensMismatchError` unless the lens at ``lens_resource_id`` was trained on ``model``.

    Compares the lens config's ``unembed_hash`` (tuned-lens's hash of the unembedding matrix),
    ``d_model`` and ``num_hidden_layers`` with the model's.
    """
    from tuned_lens.load_artifacts import load_lens_artifacts
    from tuned_lens.nn.unembed import Unembed

    names = load_lens_artifacts.__code__.co_varnames
    config_path, _ = load_lens_artifacts(
        resource_id=lens_resource_id, **{k: v for k, v in kwargs.items() if k in names}
    )
    with open(config_path) as f:
        config = json.load(f)
    card = card_for(model)
    problems = []
    d_model, n_layers = model.config.hidden_size, model.config.num_hidden_layers
    if config.get("d_model") != d_model:
        problems.append(f"d_model {config.get('d_model')} vs the model's {d_model}")
    if config.get("num_hidden_layers") != n_layers:
        problems.append(f"{config.get('num_hidden_layers')} layers vs the model's {n_layers}")
    expected = config.get("unembed_hash")
    if expected is not None and not problems:
        actual = Unembed(model).unembedding_hash()
        if actual != expected:
            problems.append(f"unembedding hash {expected[:12]}... vs the model's {actual[:12]}...")
    if problems:
        raise LensMismatchError(
            f"the lens at {lens_resource_id!r} was trained for {config.get('base_model_name_or_path')!r}, not for "
            f"this {card.family} model ({model.config.name_or_path or 'unnamed'}): " + "; ".join(problems) + ". "
            "A tuned lens is only meaningful on the model whose unembedding it was trained with: train one for "
            "this model (TunedLens.from_model + training, or recipes/tuned_lens.py)."
        )


def _rebind_imported_names() -> None:
    """Point ``from tuned_lens.model_surgery import X`` bindings in loaded tuned-lens modules at the wrappers."""
    import tuned_lens.model_surgery as ms

    for mod_name, module in list(sys.modules.items()):
        if module is None or not mod_name.startswith("tuned_lens.") or module is ms:
            continue
        for name in _SURGERY:
            if getattr(module, name, None) is _ORIGINALS[name]:
                setattr(module, name, getattr(ms, name))


def enable(model: nn.Module | None = None) -> nn.Module | None:
    """Activate the tuned-lens integration (idempotent) and, given a model, :func:`prepare_model` it.

    Returns ``model``. See the module docstring for exactly what is patched; :func:`disable` undoes it.
    """
    global _ENABLED
    _tuned_lens()
    import tuned_lens.model_surgery as ms
    from tuned_lens.nn.lenses import TunedLens

    _save_originals()
    fix_transformer_lens_check()
    fix_plotly_colorbar()
    for name in _SURGERY:
        if not getattr(getattr(ms, name), _PATCHED_FLAG, False):
            setattr(ms, name, _make_wrapper(name))
    if not getattr(TunedLens.__dict__["from_model_and_pretrained"].__func__, _PATCHED_FLAG, False):
        setattr(_from_model_and_pretrained, _PATCHED_FLAG, True)
        TunedLens.from_model_and_pretrained = classmethod(_from_model_and_pretrained)  # type: ignore[assignment]
    _rebind_imported_names()
    _ENABLED = True
    if model is not None:
        prepare_model(model)
    return model


def disable(model: nn.Module | None = None) -> None:
    """Undo :func:`enable`: restore tuned-lens's functions (and unprepare ``model`` if given).

    The TransformerLens >= 4 compatibility fix stays (without it tuned-lens fails for every model).
    """
    global _ENABLED
    if model is not None:
        unprepare_model(model)
    if not _ORIGINALS:
        return
    import tuned_lens.model_surgery as ms
    from tuned_lens.nn.lenses import TunedLens

    for name in _SURGERY:
        wrapper = getattr(ms, name)
        setattr(ms, name, _ORIGINALS[name])
        for mod_name, module in list(sys.modules.items()):
            if module is not None and mod_name.startswith("tuned_lens.") and getattr(module, name, None) is wrapper:
                setattr(module, name, _ORIGINALS[name])
    TunedLens.from_model_and_pretrained = _ORIGINALS["from_model_and_pretrained"]  # type: ignore[assignment]
    # The TransformerLens >= 4 fix stays: restoring it would only break tuned-lens for every model again.
    _ENABLED = False


def is_enabled() -> bool:
    """Whether :func:`enable` is in effect."""
    return _ENABLED
