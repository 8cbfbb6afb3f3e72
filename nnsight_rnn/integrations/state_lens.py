"""A lens on the recurrent state: what the memory of layer ``i`` predicts (an extension of the tuned lens).

The tuned lens (Belrose et al. 2023) decodes the residual stream after layer ``i`` with a learned
affine map into the final layer's basis, then the model's own final norm and unembedding. A recurrent
layer also carries a *state* (Mamba's ``h_t``, RWKV's WKV numerator / denominator), the only channel
through which tokens before ``t`` reach position ``t`` in that layer. The state lens asks what that
memory, on its own, says about the next token:

    logits_i(t) = unembed(final_norm(W_i · φ_i(S_i(t)) + b_i))

- ``S_i(t)``: layer ``i``'s state **after token t was written** (it holds tokens ``0..t``);
  ``φ_i`` turns it into a feature vector (below), standardised with a per-feature mean and standard
  deviation measured on the training data (stored with the lens);
- ``W_i, b_i``: a learned affine map from the state features into the residual stream (``d_model``),
  trained like a tuned-lens translator: KL divergence from the model's final output distribution at
  ``t`` (the same target tuned-lens uses by default), the model frozen;
- ``final_norm`` / ``unembed``: the model's own, frozen (tuned-lens's :class:`~tuned_lens.nn.Unembed`).

What it means. The state lens measures how much of the model's next-token distribution is *linearly
decodable from layer i's memory alone*, without the current token's residual stream. It is a probe:
a low KL says the information is in the state in linearly readable form, not that the model reads it
out that way (the model reads the state through ``C_t`` / ``r_t``, which depend on the current token).
Compare it with the tuned lens at the same depth (the recipe reports both: the residual stream
entering layer ``i`` and the one leaving it): the gap is what the current token's own path adds.
It is not defined for transformers (their "memory" is the KV cache, which grows with ``t``).

Features ``φ`` per mixer kind, declared by the mixer (``state_format.lens``, a
:class:`~nnsight_rnn.mixers.base.StateLensSource`):

- ``mamba1``: ``hook_ssm_state`` ``[b, L, d_inner, N]`` (``h_t``, after the write of ``t``), flattened
  to ``d_inner * N``;
- ``mamba2``: ``hook_ssm_state`` ``[b, L, H, P, N]``, flattened to ``H * P * N``;
- ``rwkv4``: the WKV state after ``t`` is written (``hook_wkv_state`` is the state *read* at ``t``, i.e.
  before its write, so the state after ``t`` is the one read at ``t + 1``, and ``hook_wkv_state_out`` for
  the last position). It is stored as ``(num, den, max)`` with numerator ``num * e^max`` and denominator
  ``den * e^max``; the features are ``num / den`` (the memory's weighted average of past values, what
  the WKV readout returns without the current-token bonus) and ``log(den) + max`` (the log of the total
  weight in memory): ``2 * d_att`` features.

Cost: capturing per-position states materialises them (see docs/state-semantics.md): Mamba-1
``b * L * d_inner * N`` floats per layer; train on short sequences.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cards import card_for
from ..mixers import MIXER_KINDS, mixer_class
from ..mixers.base import StateLensSource
from ..surgery import CARD_ATTR, get_module, install

StateSource = StateLensSource  # the name this module used before the mixers declared it


def state_source(model: nn.Module) -> StateSource:
    """The :class:`StateSource` of the model's card; a clear error where a state lens is not defined."""
    card = card_for(model)
    source = mixer_class(card.mixer_kind).state_format if card.is_recurrent else None
    if source is None or source.lens is None:
        known = sorted(kind for kind, cls in MIXER_KINDS.items() if cls.state_format and cls.state_format.lens)
        raise ValueError(
            f"no state lens for the {card.family} card (mixer kind {card.mixer_kind!r}); defined for mixer kinds {known}. "
            + (
                "Transformers carry no fixed-size state."
                if not card.is_recurrent
                else "A mixer declares one as `state_format.lens` (see nnsight_rnn.mixers.base.StateFormat)."
            )
        )
    return source.lens


@torch.no_grad()
def capture_state_features(
    model: nn.Module, input_ids: torch.Tensor, layers: Iterable[int] | None = None
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Run ``model`` on ``input_ids`` ``[b, L]``; return ``({layer: features [b, L, d_state]}, logits [b, L, V])``.

    The model must be hooked by :func:`nnsight_rnn.install` (done here if needed). Hooks are removed
    afterwards; nothing is edited (the states are only read).
    """
    card = card_for(model)
    if getattr(model, CARD_ATTR, None) != card.family:
        install(model, card)
    source = state_source(model)
    all_layers = get_module(model, card.modules["layers"])
    wanted = list(range(len(all_layers))) if layers is None else list(layers)
    captured: dict[int, dict[str, torch.Tensor]] = {i: {} for i in wanted}
    handles = []
    for i in wanted:
        mixer = get_module(all_layers[i], card.modules["mixer"])
        for name in source.hooks:

            def keep(_m: nn.Module, _args: Any, out: torch.Tensor, i: int = i, name: str = name) -> None:
                captured[i][name] = out.detach()

            handles.append(get_module(mixer, name).register_forward_hook(keep))
    try:
        logits = model(input_ids).logits
    finally:
        for handle in handles:
            handle.remove()
    return {i: source.features(captured[i]) for i in wanted}, logits


@dataclass
class StateLensConfig:
    """What a saved state lens was trained on (``config.json`` next to ``params.safetensors``)."""

    base_model_name_or_path: str
    family: str
    mixer_kind: str
    d_model: int
    num_hidden_layers: int
    d_state: int
    unembed_hash: str
    lens_type: str = "state_lens"


class StateLens(nn.Module):
    """One affine map per layer from standardised state features ``[..., d_state]`` to ``[..., d_model]``.

    ``forward(features, idx) -> logits``; ``transform_state(features, idx) -> [..., d_model]`` (before the
    final norm). Built with :meth:`from_model`, trained with :func:`train_state_lens`, saved with
    :meth:`save` and reloaded with :meth:`load` (which refuses a model with a different unembedding).
    """

    def __init__(self, unembed: nn.Module, config: StateLensConfig) -> None:
        super().__init__()
        self.unembed = unembed
        self.config = config
        n, d_state, d_model = config.num_hidden_layers, config.d_state, config.d_model
        self.maps = nn.ModuleList(nn.Linear(d_state, d_model) for _ in range(n))
        for layer_map in self.maps:
            nn.init.zeros_(layer_map.weight)
            nn.init.zeros_(layer_map.bias)
        self.register_buffer("mean", torch.zeros(n, d_state))
        self.register_buffer("std", torch.ones(n, d_state))

    @classmethod
    def from_model(cls, model: nn.Module, example_ids: torch.Tensor | None = None) -> StateLens:
        """A zero-initialised lens for ``model`` (its card's mixer kind must have a :class:`StateSource`)."""
        from tuned_lens.nn.unembed import Unembed

        from .tuned_lens import enable

        enable(model)
        card = card_for(model)
        state_source(model)
        device = next(model.parameters()).device
        ids = (example_ids if example_ids is not None else torch.zeros(1, 2, dtype=torch.long)).to(device)
        feats, _ = capture_state_features(model, ids[:1, :2], layers=[0])
        unembed = Unembed(model)
        config = StateLensConfig(
            base_model_name_or_path=str(model.config.name_or_path),
            family=card.family,
            mixer_kind=card.mixer_kind,
            d_model=model.config.hidden_size,
            num_hidden_layers=model.config.num_hidden_layers,
            d_state=feats[0].shape[-1],
            unembed_hash=unembed.unembedding_hash(),
        )
        return cls(unembed, config).to(next(model.parameters()).device)

    def transform_state(self, features: torch.Tensor, idx: int) -> torch.Tensor:
        return self.maps[idx]((features - self.mean[idx]) / self.std[idx])

    def forward(self, features: torch.Tensor, idx: int) -> torch.Tensor:
        return self.unembed(self.transform_state(features, idx))

    def __len__(self) -> int:
        return len(self.maps)

    def save(self, path: str | Path) -> None:
        """``config.json`` + ``params.safetensors`` (maps and standardisation; no pickle).

        The config records the parameters file's sha256, checked on load.
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items() if not k.startswith("unembed.")}
        save_file(state, str(path / PARAMS_FILE))
        meta = {**asdict(self.config), "params_sha256": _sha256(path / PARAMS_FILE)}
        (path / "config.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path, model: nn.Module) -> StateLens:
        """Load a saved lens onto ``model``; :class:`~nnsight_rnn.integrations.tuned_lens.LensMismatchError` if it
        was trained on a model with another unembedding, width, depth or state layout."""
        from safetensors.torch import load_file
        from tuned_lens.nn.unembed import Unembed

        from ..errors import ArtifactMismatchError
        from .tuned_lens import LensMismatchError, enable

        enable(model)
        path = Path(path)
        if not (path / PARAMS_FILE).exists():
            legacy = (
                " (a params.pt pickle from an older nnsight-rnn, which is never unpickled: retrain)"
                if (path / "params.pt").exists()
                else ""
            )
            raise ArtifactMismatchError(f"no state lens at {str(path)!r}: {PARAMS_FILE} is missing{legacy}")
        try:
            meta = json.loads((path / "config.json").read_text())
            expected_sha = meta.pop("params_sha256")
            config = StateLensConfig(**meta)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ArtifactMismatchError(
                f"the state lens at {str(path)!r} has an unreadable or edited config.json ({type(error).__name__}: "
                f"{error}); save it again with StateLens.save"
            ) from None
        if _sha256(path / PARAMS_FILE) != expected_sha:
            raise ArtifactMismatchError(
                f"{PARAMS_FILE} at {str(path)!r} does not match the checksum in its config.json (changed or corrupt)"
            )
        unembed = Unembed(model)
        card = card_for(model)
        problems = []
        if config.mixer_kind != card.mixer_kind:
            problems.append(f"mixer kind {config.mixer_kind} vs the model's {card.mixer_kind}")
        if (config.d_model, config.num_hidden_layers) != (model.config.hidden_size, model.config.num_hidden_layers):
            problems.append(
                f"d_model/layers {config.d_model}/{config.num_hidden_layers} vs the model's "
                f"{model.config.hidden_size}/{model.config.num_hidden_layers}"
            )
        if not problems and unembed.unembedding_hash() != config.unembed_hash:
            problems.append("a different unembedding matrix (hash mismatch)")
        if problems:
            raise LensMismatchError(
                f"the state lens at {str(path)!r} was trained for {config.base_model_name_or_path!r}, not this "
                f"{card.family} model: " + "; ".join(problems) + ". Train a state lens for this model."
            )
        lens = cls(unembed, config).to(next(model.parameters()).device)
        missing, unexpected = lens.load_state_dict(load_file(str(path / PARAMS_FILE)), strict=False)
        missing = [k for k in missing if not k.startswith("unembed.")]
        if missing or unexpected:
            raise ValueError(f"state lens at {path}: missing {missing}, unexpected {unexpected}")
        return lens


PARAMS_FILE = "params.safetensors"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kl_to(final_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(final || lens) in nats over all positions; ``final_logp`` log-probabilities ``[..., V]``."""
    return (final_logp.exp() * (final_logp - logits.log_softmax(-1))).sum(-1).mean()


def train_state_lens(
    lens: StateLens,
    model: nn.Module,
    batches: list[torch.Tensor],
    *,
    steps: int = 200,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    progress: bool = True,
) -> list[float]:
    """Train every layer map on KL(final output || state lens), the model frozen; returns the loss per step.

    ``batches``: token-id tensors ``[b, L]``; states are captured once per batch (cached for all
    steps: ``len(batches) * b * L * d_state`` floats per layer) and the standardisation statistics are
    set from them first. Adam, cosine-decayed learning rate, gradient clipping at 1.
    """
    from tqdm.auto import trange

    cache = []
    for ids in batches:
        feats, logits = capture_state_features(model, ids)
        cache.append(({i: f.flatten(0, 1) for i, f in feats.items()}, logits.float().log_softmax(-1).flatten(0, 1)))
    with torch.no_grad():
        for i in range(len(lens)):
            allf = torch.cat([c[0][i] for c in cache])
            lens.mean[i] = allf.mean(0)
            lens.std[i] = allf.std(0).clamp_min(1e-6)
    params = [p for p in lens.maps.parameters()]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses = []
    for step in trange(steps, desc="state lens", disable=not progress, leave=False):
        feats, final = cache[step % len(cache)]
        opt.zero_grad(set_to_none=True)
        loss = sum(_kl_to(final, lens(feats[i], i)) for i in range(len(lens))) / len(lens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def evaluate_state_lens(lens: StateLens, model: nn.Module, batches: list[torch.Tensor]) -> dict[str, list[float]]:
    """Per layer: ``ce`` (next-token cross-entropy, nats per token) and ``kl`` (KL from the final output, nats)."""
    n = len(lens)
    ce_sum, kl_sum, count = [0.0] * n, [0.0] * n, 0
    for ids in batches:
        feats, logits = capture_state_features(model, ids)
        final = logits.float().log_softmax(-1)
        for i in range(n):
            lp = lens(feats[i], i).float().log_softmax(-1)
            ce_sum[i] += float(-lp[:, :-1].gather(-1, ids[:, 1:, None]).sum())
            kl_sum[i] += float((final.exp() * (final - lp)).sum(-1)[:, :-1].sum())
        count += ids[:, 1:].numel()
    return {"ce": [c / count for c in ce_sum], "kl": [k / count for k in kl_sum]}
