"""Contrastive activation addition (CAA) on the residual stream and on the carried recurrent state.

The method of Rimsky et al. (2024), "Steering Llama 2 via Contrastive Activation Addition", with
the same code on every architecture nnsight-rnn supports, and its recurrent-state analogue.

Data: A/B items in CAA's JSON format, a list of
``{"question", "answer_matching_behavior", "answer_not_matching_behavior"}`` where each answer is
an optional prefix and a letter (``" (A)"``, ``"(B)"``). :func:`encode_items` splits an item
into the prompt (``template.format(question=...)``), the answer prefix (``" ("``) and the two
letter tokens. The model's behaviour on an item is ``p(matching) / (p(A) + p(B))`` for the
letter token after ``prompt + prefix`` (:func:`score`); a number in (0, 1).

Vectors (:class:`SteeringVectors`, one per layer):

- ``kind="residual"``: mean over items of ``layers[i].output[letter position]`` for
  ``prompt + prefix + matching letter`` minus the same for the non-matching letter (CAA exactly).
  Applied (:class:`Steer`) by adding ``multiplier * vector`` to ``layers[i].output`` at every
  position after the prompt (the answer prefix when scoring, every generated token when
  generating). The edit propagates to later layers and positions.
- ``kind="state"`` (recurrent models only): the same contrast on the carried state each layer
  holds after ``prompt + prefix + letter`` (every slot of the family, e.g. Mamba's ``conv`` and
  ``ssm``, RWKV-4's token shifts and WKV numerator / denominator), taken in the family's
  *linear* state coordinates (the mixer's ``state_format``: identity for Mamba / Mamba-2; RWKV-4's
  ``(num, den, max)`` becomes ``num * e^max`` and ``den * e^max``, the quantities the
  recurrence is linear in). Applied by adding ``multiplier * vector`` to the state carried out
  of the prompt before the answer prefix is run from it; this edits what every later position
  reads.

:func:`contrast_vectors` takes any two sets of token rows (CAA is its special case; the demo's
``[kind]`` vs ``[cruel]`` prompts are another). :func:`sweep` scores every (layer, multiplier);
:func:`best_layer`, :func:`effect`, :func:`is_monotonic` and :func:`effect_t` (paired t statistic
of the per-item shift) summarise it.

Scoring and generation run the model in left-padded batches with an attention mask (each row
equals the row alone, see the padding tests of every card); a state edit runs the prompt, edits
the carried state and continues from it (exact continuation, see docs/state-semantics.md).

Vectors are saved with :mod:`nnsight_rnn.artifacts` (safetensors + JSON with the model's
fingerprint, the card, layers, hook and the dataset's hash) and refuse to load onto another
architecture or other weights with a message saying what differs.

Modules: :mod:`.items` (CAA items, answers, encoding, left-padded batches), :mod:`.vectors`
(:class:`SteeringVectors` and the contrasts), :mod:`.apply` (:class:`Steer`, scoring, generation),
:mod:`.sweep` (sweeps and their summaries). Everything is re-exported here.
"""

from __future__ import annotations

from ..errors import SteeringDataError
from .apply import Steer, decode, generate, generated_choice, letter_logits, score, steer_state
from .items import (
    DEFAULT_TEMPLATE,
    ITEM_KEYS,
    EncodedItems,
    Item,
    dataset_sha256,
    disposition_dataset,
    encode_items,
    left_pad,
    load_items,
    save_items,
    split_answer,
    validate_items,
)
from .sweep import best_layer, curve, effect, effect_t, is_monotonic, sweep
from .vectors import (
    ARTIFACT_KIND,
    StateSpace,
    SteeringVectors,
    contrast_vectors,
    residual_vectors,
    state_space,
    state_vectors,
)

__all__ = [
    "ARTIFACT_KIND", "DEFAULT_TEMPLATE", "ITEM_KEYS", "EncodedItems", "Item", "StateSpace", "Steer",
    "SteeringDataError", "SteeringVectors", "best_layer", "contrast_vectors", "curve", "dataset_sha256",
    "decode", "disposition_dataset", "effect", "effect_t", "encode_items", "generate", "generated_choice",
    "is_monotonic", "left_pad", "letter_logits", "load_items", "residual_vectors", "save_items", "score",
    "split_answer", "state_space", "state_vectors", "steer_state", "sweep", "validate_items",
]  # fmt: skip
