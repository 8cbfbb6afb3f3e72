"""Live mamba-ssm models (``MambaLMHeadModel``) through nnsight-rnn.

A live ``MambaLMHeadModel`` is converted, weights by reference, into the equivalent HF model
(``MambaForCausalLM`` / ``Mamba2ForCausalLM``) and then hooked like any other: the residual stream
that mamba-ssm splits into ``(hidden, residual)`` with a fused add-norm becomes the single
``[batch, pos, d_model]`` tensor ``layers[i].output``. mamba-ssm needs a CUDA build; on a machine
where it cannot be imported this raises an ``ImportError`` that says so. Importing nnsight-rnn
itself never imports mamba-ssm.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def _mamba_ssm_available() -> None:
    try:
        import mamba_ssm  # noqa: F401
    except Exception as error:  # mamba-ssm fails in many ways without CUDA
        raise ImportError(
            "wrapping a live MambaLMHeadModel needs the mamba-ssm package, which needs a CUDA build "
            f"(import failed: {error!r}). On CPU, save it and load the folder instead: "
            "nnsight_rnn.load(folder) reads original mamba-ssm checkpoints without mamba-ssm."
        ) from None


def wrap_mamba_ssm(model: Any) -> nn.Module:
    """The HF model equivalent to a live mamba-ssm ``MambaLMHeadModel`` (shared weights)."""
    _mamba_ssm_available()
    from transformers import AutoModelForCausalLM

    from .mamba_ssm import hf_config

    cfg = model.config
    original = {k: getattr(cfg, k) for k in vars(cfg)}
    state = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in model.state_dict().items()}
    hf = AutoModelForCausalLM.from_config(hf_config(original, state["backbone.embeddings.weight"].shape[0]))
    hf.load_state_dict(state, strict=False, assign=True)
    hf.tie_weights()
    return hf.to(next(model.parameters()).device)
