"""Grow a model by one block that starts as the identity: the quirky stage's adapter block.

Why (docs/recipes/elk.md): Mallen et al.'s quirky models are pretrained LMs that compute the truth in
their middle layers and are made quirky by a fine-tune that leaves that computation in place. The
zoo's 2-layer models compute the truth only where they answer, in the last block; retraining that
block for Bob overwrites it, and no earlier block holds the truth at the decision token (residual
probe 0.52-0.64 on every architecture). With ``FinetuneConfig.adapter_block`` the quirky stage
instead appends a block and trains only it, so the truthful model stays intact below it: the
paper's setting made explicit, not a finding about what small models keep on their own.

The new block is a copy of the last one with the weights that write into the residual stream
zeroed (the card's ``residual_writers``), so the grown model computes exactly what the original did
(logits equal to float rounding, tested) until the block is trained.
"""

from __future__ import annotations

import copy
import tempfile
from typing import Any

import torch


def grow(model: Any) -> Any:
    """A new :class:`~nnsight_rnn.HookedLanguageModel`: ``model`` with one identity block appended.

    ``model`` is left as it was. The copy is rebuilt from its config with ``n + 1`` layers (so every
    layer index, cache slot and hook name is the family's own) and the weights: the original ``n``
    blocks, then a copy of the last one with its card's ``residual_writers`` zeroed. Memory: one more block.
    """
    from ..cards import all_cards
    from ..model import load

    family = model.card.family
    if not model.card.residual_writers:
        growable = sorted(f for f, card in all_cards().items() if card.residual_writers)
        raise ValueError(
            f"cannot grow a {family!r} model: its card lists no residual_writers; families that can be grown: "
            f"{growable} (add `residual_writers = [...]` to the {family} card, see docs/adding-an-architecture.md)"
        )
    module = copy.deepcopy(model._module)
    blocks = module.get_submodule(model.card.modules["layers"])
    new = copy.deepcopy(blocks[-1])
    with torch.no_grad():
        for path in model.card.residual_writers:
            writer = new.get_submodule(path)
            writer.weight.zero_()
            if getattr(writer, "bias", None) is not None:
                writer.bias.zero_()
    blocks.append(new)
    module.config.num_hidden_layers = len(blocks)  # HF configs map n_layer / num_layers to this name
    with tempfile.TemporaryDirectory() as folder:
        module.save_pretrained(folder)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(folder)
        return load(folder)
