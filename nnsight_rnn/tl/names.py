"""The TransformerLens names of a :class:`~nnsight_rnn.tl.HookedLM`: a tree of bridged hook points built from the card.

The tree parallels the HF model and is named the TransformerLens way::

    hook_embed                              [b, pos, d_model]   output of the embedding
    blocks.{i}.hook_resid_pre               [b, pos, d_model]   input of block i (the residual stream)
    blocks.{i}.hook_mixer_in                [b, pos, d_model]   input of the token mixer (after the block's norm)
    blocks.{i}.mixer.hook_*                 [b, pos, ...]       the hookable mixer's own hook points
    blocks.{i}.hook_mixer_out               [b, pos, d_model]   output of the token mixer (added to the residual)
    blocks.{i}.hook_mlp_in / hook_mlp_out   [b, pos, d_model]   where the family has an MLP (GPT-2, RWKV channel-mix)
    blocks.{i}.mlp.hook_*                   [b, pos, ...]       hookable MLP hook points (RWKV-4 channel-mix)
    blocks.{i}.hook_resid_post              [b, pos, d_model]   output of block i
    blocks.0.pre_ln.hook_normalized         [b, pos, d_model]   RWKV-4 only: block 0's LayerNorm of the embedding
                                                                (RWKV-7: ``blocks.0.pre_norm.hook_normalized``)
    ln_final.hook_normalized                [b, pos, d_model]   output of the final norm
    hook_unembed                            [b, pos, d_vocab]   logits

Every TransformerLens hook point is *bridged* to a place in the HF model: either one of
nnsight-rnn's own hook points (``nnsight_rnn.hooks.HookPoint``) or the input / output of a module
(blocks, mixer, MLP, norms). The bridge is a plain torch hook that exists only while the
TransformerLens hook point has hooks (forward or backward), so:

- an idle :class:`HookedLM` runs exactly the HF model (no hooks installed);
- expensive per-position states (``hook_ssm_state``, ``hook_ssm_write``, ``hook_wkv_state``, ...) are
  computed only while a TransformerLens hook listens to them, the same rule as under nnsight;
- edits returned by a hook replace the value in the HF model, with the meaning of that hook point
  (see docs/state-semantics.md: ``state_write`` edits propagate, ``state_readout`` edits change one
  position's output only);
- backward hooks (``dir="bwd"``) see the gradient w.r.t. the hooked value.

Aliases (TransformerLens / TransformerBridge spellings and the card's aliases, e.g.
``blocks.{i}.hook_in`` -> ``hook_resid_pre``, ``blocks.{i}.mixer.hook_h`` -> ``hook_ssm_state``) are
hook points of their own, bridged to the same place, with their own name: they are accepted wherever
a name is (``add_hook``, ``run_with_hooks``, ``names_filter`` lists) and cached under the name asked
for, but are not in ``hook_dict``, so ``names_filter=None`` or a predicate visits each value once.

Every per-position state hook also has a ``..._flat`` alias (``blocks.{i}.mixer.hook_ssm_state_flat``):
the same value as ``[b, pos, d_inner * N]`` (edits reshaped back), the layout sae-lens and other
one-vector-per-position tools need.

Position is axis 1 of every hook value that has one (``pos_dim``); carried states (``*_state_in``,
``*_state_out``) have ``pos_dim = None``. Note: TransformerBridge's Mamba-1 ``hook_ssm_state`` is
``[b, d_inner, pos, N]`` (``pos_dim = 2``); here it is ``[b, pos, d_inner, N]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..cards import TL_BLOCK_HOOKS, Card
from ..hooks import HookPoint as RNNHookPoint
from ..hooks import hook_points as rnn_hook_points
from ..surgery import get_module, standard_path
from .bridging import Bridge, BridgedHookPoint, FlatOutputOf, InputOf, Namespace, OutputOf

# Block-0 norms of the embedding (RWKV-4 ``pre_ln``, RWKV-7 ``pre_norm``): their output starts the residual stream.
EMBED_NORMS = ("pre_ln", "pre_norm")
# ``blocks.{i}.mixer.hook_ssm_state_flat``: a per-position state hook as ``[b, pos, prod(state dims)]``.
FLAT_SUFFIX = "_flat"


@dataclass
class HookTable:
    """What :func:`build_hook_points` placed: canonical names in execution order and ``alias -> canonical``."""

    canonical: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    resid_start: str = "blocks.0.hook_resid_pre"  # the residual stream's first term (see residual.py)


def place(root: nn.Module, name: str, point: BridgedHookPoint) -> None:
    """Register ``point`` at dotted ``name`` under ``root`` (creating :class:`Namespace` groups on the way)."""
    parent: nn.Module = root
    parts = name.split(".")
    for part in parts[:-1]:
        if part.isdigit():
            parent = parent[int(part)]  # type: ignore[index]
            continue
        child = parent._modules.get(part)
        if child is None:
            child = Namespace()
            parent.add_module(part, child)
        parent = child
    if parts[-1] in parent._modules:
        raise ValueError(f"nnsight_rnn.tl: two hook points named {name!r}")
    parent.add_module(parts[-1], point)


def build_hook_points(
    root: nn.Module,
    model: nn.Module,
    card: Card,
    layers: Sequence[nn.Module],
    *,
    embed: nn.Module,
    final_norm: nn.Module,
    unembed: nn.Module,
) -> HookTable:
    """Place every TransformerLens hook point of ``model`` under ``root`` (which has ``blocks[i]`` namespaces).

    The names come from the card (module paths, ``[tl]`` aliases, hook aliases) and from the hook
    points the mixers declare; nothing here is specific to a family.
    """
    table = HookTable()
    resid = dict(pos_dim=1, kind="resid")
    act = dict(pos_dim=1, kind="activation")

    def add(name: str, bridge: Bridge, aliases: Sequence[str] = (), **meta: Any) -> None:
        place(root, name, BridgedHookPoint(bridge, **meta))
        table.canonical.append(name)
        for alias in aliases:
            if alias in table.aliases or alias in table.canonical:
                continue
            place(root, alias, BridgedHookPoint(bridge, alias_of=name, **meta))
            table.aliases[alias] = name

    def add_ours(std: str, hp: RNNHookPoint) -> None:
        tl_name = "blocks." + std[len("layers.") :]
        head, _, leaf = tl_name.rpartition(".")
        aliases = [f"{head}.{alias}" for alias, target in card.aliases.items() if target == leaf]
        meta = dict(pos_dim=hp.pos_dim, kind=hp.kind, expensive=hp.expensive, doc=hp.doc, source=hp)
        add(tl_name, OutputOf(hp), aliases, **meta)
        if hp.expensive and hp.pos_dim == 1:  # per-position states as one vector per position
            flat = f"{tl_name}{FLAT_SUFFIX}"
            place(root, flat, BridgedHookPoint(FlatOutputOf(hp), alias_of=tl_name, **meta))
            table.aliases[flat] = tl_name

    # Our own hook points by standard name (``layers.3.mixer.hook_x``), in execution order.
    ours_by_layer: dict[int, list[tuple[str, RNNHookPoint]]] = {}
    for path, hp in rnn_hook_points(model).items():
        std = standard_path(card, path)
        if std.startswith("layers."):
            ours_by_layer.setdefault(int(std.split(".")[1]), []).append((std, hp))

    add("hook_embed", OutputOf(embed), **resid, doc="embedding output [b, pos, d_model]")
    mixer_path = card.modules["mixer"]
    mlp_path = card.modules.get("mlp")

    def block_aliases(b: str, key: str) -> list[str]:
        """TransformerBridge's name and the card's ``[tl]`` names of a block-level hook (``key``: ``mixer_in``, ...)."""
        return [f"{b}.{TL_BLOCK_HOOKS[key]}", *(f"{b}.{alias}" for alias in card.tl_aliases.get(key, ()))]

    for i, layer in enumerate(layers):
        b = f"blocks.{i}"
        ours = ours_by_layer.get(i, [])
        embed_norm = next((c for c in EMBED_NORMS if isinstance(getattr(layer, c, None), nn.Module)), None)
        if i == 0 and embed_norm is not None:
            table.resid_start = f"{b}.{embed_norm}.hook_normalized"
            add(
                table.resid_start, OutputOf(getattr(layer, embed_norm)), **resid,
                doc="RWKV block 0's LayerNorm of the embedding: the residual stream's first term [b, pos, d_model]",
            )  # fmt: skip
        add(
            f"{b}.hook_resid_pre", InputOf(layer), [f"{b}.hook_in"], **resid,
            doc="input of the block: the residual stream [b, pos, d_model]",
        )  # fmt: skip
        mixer = get_module(layer, mixer_path)
        add(
            f"{b}.hook_mixer_in", InputOf(mixer), block_aliases(b, "mixer_in"), **act,
            doc="input of the token mixer (normed residual) [b, pos, d_model]",
        )  # fmt: skip
        for std, hp in ours:
            if std.startswith(f"layers.{i}.mixer."):
                add_ours(std, hp)
        if card.is_recurrent and isinstance(getattr(mixer, "in_proj", None), nn.Module):
            add(
                f"{b}.mixer.hook_in_proj", OutputOf(mixer.in_proj), **act,
                doc="in_proj output (TransformerBridge's name) [b, pos, in_proj.out_features]",
            )  # fmt: skip
        add(
            f"{b}.hook_mixer_out", OutputOf(mixer), block_aliases(b, "mixer_out"), **act,
            doc="output of the token mixer, added to the residual stream [b, pos, d_model]",
        )  # fmt: skip
        if mlp_path:
            mlp = get_module(layer, mlp_path)
            add(
                f"{b}.hook_mlp_in", InputOf(mlp), block_aliases(b, "mlp_in"), **act,
                doc="input of the MLP [b, pos, d_model]",
            )  # fmt: skip
            for std, hp in ours:
                if std.startswith(f"layers.{i}.mlp."):
                    add_ours(std, hp)
            add(
                f"{b}.hook_mlp_out", OutputOf(mlp), block_aliases(b, "mlp_out"), **act,
                doc="output of the MLP, added to the residual stream [b, pos, d_model]",
            )  # fmt: skip
        for std, hp in ours:  # any other hook point of the block
            if not (std.startswith(f"layers.{i}.mixer.") or std.startswith(f"layers.{i}.mlp.")):
                add_ours(std, hp)
        add(
            f"{b}.hook_resid_post", OutputOf(layer), [f"{b}.hook_out"], **resid,
            doc="output of the block: the residual stream [b, pos, d_model]",
        )  # fmt: skip
    add("ln_final.hook_normalized", OutputOf(final_norm), **act, doc="final norm output [b, pos, d_model]")
    add("hook_unembed", OutputOf(unembed), **act, doc="logits [b, pos, d_vocab]")
    return table
