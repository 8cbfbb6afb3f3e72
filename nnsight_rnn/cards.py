"""Architecture cards: the declarative table that tells nnsight-rnn where things live in a model.

One TOML file per family under ``cards/`` in the source tree (packaged into the wheel as
``nnsight_rnn/cards/``). A card says which HF configs it matches (an explicit table of
``model_type`` values, no guessing), where embed / layers / mixer / mlp / final norm / unembed
live, which hookable mixer kind replaces the original mixer, which model-level patches apply,
and what each capability means. Users add a model whose mixer kind exists with
:func:`register_card` (a dict or a TOML path) and no code.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib

from .errors import UnsupportedArchitectureError

STANDARD_MODULE_NAMES = ("embed", "layers", "mixer", "mlp", "final_norm", "unembed")


@dataclass(frozen=True)
class Card:
    """One architecture family.

    Attributes:
        family: short name (``"mamba"``), also the key users pass as ``card=``.
        description: one line for ``nnsight-rnn info``.
        model_types: HF ``config.model_type`` values matched exactly.
        modules: standard name -> module path. ``embed``, ``layers``, ``final_norm``,
            ``unembed`` are absolute paths in the HF model; ``mixer`` and ``mlp`` are relative
            to one layer.
        mixer_kind: the hookable mixer that replaces the original mixer (``"mamba1"``,
            ``"mamba2"``, ``"rwkv4"``) or ``"none"`` for transformers (no swap).
        patches: model-level fixes applied after the swap (names in ``nnsight_rnn.patches``).
        hidden_states: ``"rnn"`` (``[out_0..out_{n-1}, norm(out_{n-1})]``) or ``"transformer"``
            (``[emb, out_0..out_{n-2}, norm(out_{n-1})]``) for ``output_hidden_states``.
        capabilities: capability -> reason (padding, generation, state round-trip, ...).
        aliases: alias hook name -> canonical name (relative to the mixer).
        rename: extra nnsight ``rename=`` entries (module path -> envoy name), e.g. a module whose
            HF name collides with an nnsight attribute.
        notes: free text shown in the hook reference.
        tl_aliases: TransformerLens alias names (``[tl]``: ``mixer_in``, ``mixer_out``, ``mlp_in``,
            ``mlp_out`` -> names relative to ``blocks.{i}``) added to the standard block-level hooks.
        residual_writers: block submodules (paths relative to a layer) whose outputs are added to the
            residual stream; zeroing their weights makes a block the identity (``elk.adapter.grow``).
            Empty: the family cannot be grown.
        contract_config: config overrides for a tiny random model of this family (``[contract]
            tiny_config``), on which :mod:`nnsight_rnn.contract` checks the upstream contract
            the first time the family is loaded in a process. Empty: no check.
        bench_config: config overrides for a ~130M random model of this family (``[bench] config``),
            which ``nnsight-rnn bench`` times against the stock model. Empty: not benchmarked.
        tl_bridge: how nnsight-rnn's adapter for TransformerLens's ``TransformerBridge`` is built
            (``[tl.bridge]``, see :class:`TLBridge`); ``None``: no bridge adapter.
    """

    family: str
    description: str
    model_types: tuple[str, ...]
    modules: dict[str, str]
    mixer_kind: str = "none"
    patches: tuple[str, ...] = ()
    hidden_states: str = "transformer"
    capabilities: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    residual_writers: tuple[str, ...] = ()
    tl_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    contract_config: dict[str, Any] = field(default_factory=dict)
    bench_config: dict[str, Any] = field(default_factory=dict)
    tl_bridge: TLBridge | None = None
    source: str = ""

    @property
    def is_recurrent(self) -> bool:
        return self.mixer_kind != "none"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> Card:
        required = ("family", "description", "match", "modules")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"card {source or data.get('family', '?')} lacks required keys {missing}")
        modules = dict(data["modules"])
        for key in ("embed", "layers", "final_norm", "unembed", "mixer"):
            if key not in modules:
                raise ValueError(f"card {data['family']!r}: [modules] must name {key!r}")
        unknown = set(modules) - set(STANDARD_MODULE_NAMES)
        if unknown:
            raise ValueError(
                f"card {data['family']!r}: unknown module names {sorted(unknown)}; known: {STANDARD_MODULE_NAMES}"
            )
        hidden = data.get("hidden_states", "transformer")
        if hidden not in ("rnn", "transformer"):
            raise ValueError(f"card {data['family']!r}: hidden_states must be 'rnn' or 'transformer', got {hidden!r}")
        return cls(
            family=data["family"],
            description=data["description"],
            model_types=tuple(data["match"]["model_types"]),
            modules=modules,
            mixer_kind=data.get("mixer_kind", "none"),
            patches=tuple(data.get("patches", ())),
            hidden_states=hidden,
            capabilities=dict(data.get("capabilities", {})),
            aliases=dict(data.get("aliases", {})),
            rename=dict(data.get("rename", {})),
            notes=data.get("notes", ""),
            residual_writers=tuple(data.get("residual_writers", ())),
            tl_aliases=_tl_aliases(data),
            contract_config=dict(data.get("contract", {}).get("tiny_config", {})),
            bench_config=dict(data.get("bench", {}).get("config", {})),
            tl_bridge=_tl_bridge(data),
            source=source,
        )


TL_BLOCK_HOOKS: dict[str, str] = {
    "mixer_in": "mixer.hook_in",
    "mixer_out": "mixer.hook_out",
    "mlp_in": "mlp.hook_in",
    "mlp_out": "mlp.hook_out",
}
"""``[tl]`` key -> the TransformerBridge hook (relative to ``blocks.{i}``) that the key's aliases also name."""
TL_ALIAS_KEYS = tuple(TL_BLOCK_HOOKS)


@dataclass(frozen=True)
class TLBridge:
    """``[tl.bridge]``: where nnsight-rnn's mixer goes in TransformerLens's ``TransformerBridge`` (TL >= 4).

    Attributes:
        architecture: the HF class name TransformerLens keys its native adapter on (``"MambaForCausalLM"``);
            nnsight-rnn's adapter subclasses that native adapter.
        block: ``"ssm"`` (the native block stays; its ``mixer`` component becomes nnsight-rnn's mixer) or
            ``"opaque"`` (the whole block is one component with the card's mixer and MLP inside).
        state_pos_dim: the position axis of the *native* adapter's ``hook_ssm_state`` (Mamba-1:
            ``[b, d_inner, pos, N]`` -> 2), for ``nnsight-rnn bench``'s comparison; ``None``: not compared.
    """

    architecture: str
    block: Literal["ssm", "opaque"]
    state_pos_dim: int | None = None


def _tl_bridge(data: dict[str, Any]) -> TLBridge | None:
    table = data.get("tl", {}).get("bridge")
    if table is None:
        return None
    if table.get("block") not in ("ssm", "opaque") or not table.get("architecture"):
        raise ValueError(
            f"card {data['family']!r}: [tl.bridge] needs architecture = '<HF class name>' and block = 'ssm' or "
            f"'opaque'; got {table}"
        )
    return TLBridge(table["architecture"], table["block"], table.get("state_pos_dim"))


def _tl_aliases(data: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    table = {key: value for key, value in data.get("tl", {}).items() if key != "bridge"}
    unknown = set(table) - set(TL_ALIAS_KEYS)
    if unknown:
        raise ValueError(f"card {data['family']!r}: unknown [tl] keys {sorted(unknown)}; known: {list(TL_ALIAS_KEYS)}")
    return {key: tuple(names) for key, names in table.items()}


_CARDS: dict[str, Card] = {}
_BUILTINS_LOADED = False


def _card_files() -> list[Path]:
    # Installed wheel: nnsight_rnn/cards/*.toml. Source tree / editable install: ../cards.
    packaged = resources.files("nnsight_rnn").joinpath("cards")
    if packaged.is_dir():
        return sorted(Path(str(p)) for p in packaged.iterdir() if p.name.endswith(".toml"))
    source_tree = Path(__file__).resolve().parent.parent / "cards"
    return sorted(source_tree.glob("*.toml"))


def _ensure_loaded() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    files = _card_files()
    if not files:
        raise RuntimeError("nnsight-rnn found no architecture cards: the installation is broken (cards/*.toml missing)")
    for path in files:
        with open(path, "rb") as f:
            register_card(Card.from_dict(tomllib.load(f), source=str(path)))


def register_card(card: Card | dict[str, Any] | str | Path, *, replace: bool = False) -> Card:
    """Add a card (a :class:`Card`, a dict in the TOML layout, or a path to a TOML file).

    A card whose ``model_types`` overlap an existing card's is refused unless ``replace=True``
    (two cards for one model type would be a guess).
    """
    if isinstance(card, (str, Path)):
        with open(card, "rb") as f:
            card = Card.from_dict(tomllib.load(f), source=str(card))
    elif isinstance(card, dict):
        card = Card.from_dict(card)
    if _BUILTINS_LOADED is False and not card.source.endswith(".toml"):
        _ensure_loaded()  # user cards are checked against the built-in ones
    for other in list(_CARDS.values()):
        clash = set(other.model_types) & set(card.model_types)
        if other.family != card.family and clash:
            if not replace:
                raise ValueError(
                    f"card {card.family!r} matches model types {sorted(clash)} already matched by {other.family!r}; "
                    "pass replace=True to override it"
                )
            del _CARDS[other.family]
    _CARDS[card.family] = card
    return card


def all_cards() -> dict[str, Card]:
    """Every registered card by family name."""
    _ensure_loaded()
    return dict(_CARDS)


def get_card(family: str) -> Card:
    """The card named ``family``; an error listing the known families otherwise."""
    cards = all_cards()
    if family not in cards:
        near = difflib.get_close_matches(family, cards, n=3)
        hint = f" Did you mean {near}?" if near else ""
        raise UnsupportedArchitectureError(f"unknown card {family!r}.{hint} Supported: {sorted(cards)}")
    return cards[family]


def card_for(config_or_model: Any) -> Card:
    """The card matching an HF config (or a model with ``.config``), by ``config.model_type``."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = getattr(config, "model_type", None)
    for card in all_cards().values():
        if model_type in card.model_types:
            return card
    supported = {c.family: list(c.model_types) for c in all_cards().values()}
    raise UnsupportedArchitectureError(
        f"nnsight-rnn has no card for model_type {model_type!r} "
        f"(class {type(config_or_model).__name__}). Supported families and their model types: {supported}. "
        "To add one whose mixer kind exists, write a TOML card like cards/mamba.toml and call "
        "nnsight_rnn.register_card(path) (see docs/adding-an-architecture.md)."
    )
