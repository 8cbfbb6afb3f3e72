"""NDIF deployment: weight sizes and the ``ndif deploy -f`` configuration."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .keys import DEFAULT_TASK, KEY_CLASS, source_kind, split_key
from .server import model_key

# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def weights_bytes(source: str, dtype: str = "float32") -> int:
    """Bytes of the parameters and buffers of a folder's or zoo model's architecture held as ``dtype``.

    Built on the meta device from the config (a zoo model's from its registry entry, so it
    need not be trained yet): no weights are read.
    """
    from nnsight.modeling.mixins.remotable import bytes_per_element
    from transformers import AutoConfig, AutoModelForCausalLM

    if source_kind(source) == "zoo":
        from ..zoo import get_spec

        config = get_spec(source).make_config()
    else:
        config = AutoConfig.from_pretrained(source)
    with torch.device("meta"):
        module = AutoModelForCausalLM.from_config(config)
    elements = sum(p.nelement() for p in module.parameters()) + sum(b.nelement() for b in module.buffers())
    return math.ceil(elements * bytes_per_element(dtype))


def deploy_config(sources: Sequence[str], *, dtype: str = "float32") -> str:
    """YAML for ``ndif deploy -f FILE``: one entry per model, with its key and size spelled out.

    ``size_bytes`` is there because ndif 0.1.2's placement calls
    ``Remotable.describe_checkpoint(key, dtype, trust_remote_code=...)``, an argument nnsight
    0.8.1 does not take: with the size given, ndif places the model anyway.
    """
    lines = ["models:"]
    for source in sources:
        key = model_key(source)
        _, data = split_key(key)
        lines += [
            f"  - checkpoint: {data['repo_id']}",
            f"    envoy_class: {KEY_CLASS}",
            f"    task: {data.get('task') or DEFAULT_TASK}",
            f"    dtype: {dtype}",
            f"    size_bytes: {weights_bytes(source, dtype)}",
            "    max_tp: 0",
            "    model_key: '{}'".format(key.replace("'", "''")),
        ]
    return "\n".join(lines) + "\n"
