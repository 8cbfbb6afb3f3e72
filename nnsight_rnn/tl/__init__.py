"""TransformerLens surface for nnsight-rnn models (needs ``transformer-lens`` >= 3.9, 4.x included).

>>> import nnsight_rnn.tl as tl
>>> model = tl.load(hf_mamba)                         # a HookedRootModule; the HF model is hooked in place
>>> logits, cache = model.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"])
>>> model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.mixer.hook_ssm_write", patch_fn)])

``register_bridge_adapters()`` makes TransformerLens's own ``TransformerBridge`` use nnsight-rnn for
Mamba, FalconMamba, Mamba-2 and RWKV-4. See docs/transformer-lens.md for the hook names, their shapes
and what an edit of each means.
"""

from __future__ import annotations

try:
    import transformer_lens  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the optional dependency
    raise ImportError(
        "nnsight_rnn.tl needs TransformerLens: pip install 'transformer-lens>=3.9' "
        "(both 3.9+ and 4.x work; sae-lens 6 needs transformer-lens < 4)."
    ) from error

from .bridge import boot_bridge, register_bridge_adapters, unregister_bridge_adapters
from .bridging import BridgedHookPoint
from .config import HookedLMConfig
from .hooked import HookedLM, UnknownTLHookError, lm_cross_entropy, load
from .residual import (
    accumulated_resid,
    apply_ln_final,
    decompose_resid,
    direct_logit_attribution,
    logit_lens,
)

__all__ = [
    "BridgedHookPoint",
    "HookedLM",
    "HookedLMConfig",
    "UnknownTLHookError",
    "accumulated_resid",
    "apply_ln_final",
    "boot_bridge",
    "decompose_resid",
    "direct_logit_attribution",
    "lm_cross_entropy",
    "load",
    "logit_lens",
    "register_bridge_adapters",
    "unregister_bridge_adapters",
]
