"""RWKV-7 ("Goose", BlinkDL's x070) as a hookable transformers ``PreTrainedModel``, in plain torch.

Module layout and ``state_dict`` names are fla's (and rwkv7-hf's), so their hub folders load
with ``from_pretrained`` unchanged; BlinkDL ``.pth`` files convert with
:func:`nnsight_rnn.models.blinkdl.load_blinkdl`::

    Rwkv7ForCausalLM
      model.embeddings                      token embedding
      model.layers[i]                       Rwkv7Block
        pre_norm (layer 0 only), attn_norm, attn (Rwkv7TimeMix), ffn_norm, ffn (Rwkv7ChannelMix)
      model.norm                            final LayerNorm
      lm_head

Time-mix hooks (``layers[i].mixer``, nnsight name of ``attn``), in firing order.
``d = hidden_size``, ``A = num_heads * head_dim`` (attention width), ``H`` heads of size ``K = V = head_dim``:

==========================  ===================  ===========================================================
hook                        shape                meaning
==========================  ===================  ===========================================================
hook_att_shift_state_in     [b, d]               token-shift input carried in
hook_wkv_state_in           [b, H, K, V]         WKV state carried in (fp32)
hook_x                      [b, L, d]            time-mix input (``attn_norm`` output)
hook_shifted                [b, L, d]            previous (unpadded) position's x; the carried shift at 0
hook_xr/xw/xk/xv/xa/xg      [b, L, d]            token-shift mixes ``x + (shifted - x) * x_*``
hook_r                      [b, L, A]            receptance
hook_decay                  [b, L, A]            decay ``w = exp(-e^-0.5 sigmoid(w0 + lora))`` in (0, 1)
hook_k                      [b, L, A]            key projection
hook_v                      [b, L, A]            value projection (before the value residual)
hook_iclr                   [b, L, A]            in-context learning rate ``sigmoid(a0 + lora)``
hook_g                      [b, L, A]            output gate
hook_kk                     [b, L, A]            removal key: per-head L2-normalised ``k * k_k``
hook_k_eff                  [b, L, A]            key written: ``k * (1 + (iclr - 1) * k_a)``
hook_v_first                [b, L, A]            layer 0's value (layer 0: the one it hands on)
hook_v_mix                  [b, L, A]            value-residual gate (layer 0: zeros, no residual)
hook_v_eff                  [b, L, A]            value written: ``v + (v_first - v) * v_mix``
hook_a / hook_b             [b, L, A]            state-transition vectors ``a = -kk``, ``b = kk * iclr``
hook_wkv_write              [b, L, H, K, V]      per-position write ``k_eff v_eff^T`` (expensive)
hook_wkv_state              [b, L, H, K, V]      per-position state after t's update (expensive)
hook_wkv                    [b, L, A]            WKV output ``S_t^T r_t`` per head
hook_wkv_normed             [b, L, A]            after the per-head GroupNorm (``g_norm``)
hook_bonus                  [b, L, A]            current-token term ``sum_K(r k_eff r_k) * v_eff`` per head
hook_gated                  [b, L, A]            ``(normed + bonus) * g``, input of ``o_proj``
hook_att_shift_state_out    [b, d]               token-shift state carried out (last unpadded x)
hook_wkv_state_out          [b, H, K, V]         WKV state carried out
==========================  ===================  ===========================================================

State semantics (see :mod:`nnsight_rnn.models.wkv`): ``S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1})
+ W_t`` and ``y_t = S_t^T r_t``. ``hook_wkv_state[:, t]`` is ``S_t``: editing it changes the output
at t only (readout; the recurrence goes on from the unedited state). ``hook_wkv_write[:, t]`` is
``W_t``: editing it re-runs the recurrence from t (t, every later position, the state carried
out); zeroing it writes nothing. Both cost ``b*L*H*K*V*4`` bytes and are computed only when
something listens (:meth:`HookPoint.fires`); with ``HookPoint.positions`` set they hold only
those positions (``[b, P, H, K, V]``, in the order given). Editing a carried-in hook changes the
whole call; editing a carried-out hook changes the state the next call starts from.

Channel-mix hooks (``layers[i].mlp``): ``hook_ffn_shift_state_in`` [b, d], ``hook_x``,
``hook_shifted``, ``hook_xk`` [b, L, d], ``hook_k`` [b, L, d_ff] (``relu(key(xk))**2``, the
neuron activations), ``hook_ffn_shift_state_out`` [b, d].

Padding: an ``attention_mask`` (``[b, L]``, 0 = padding, anywhere) makes padded positions leave
every state untouched (exactly), so each row of a padded batch equals the row alone.
Tolerance against BlinkDL's ``rwkv`` package (fp32, CPU): see tests/models/rwkv7.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ...hooks import HookPoint, select_positions
from ...mixers.base import HookableMixer, padding_mask
from ...mixers.rwkv4 import token_shift
from ..rwkv_common import LayerCall, RwkvCache, cache_layers, call_mask
from ..wkv import outer_writes, wkv7_readout, wkv7_scan
from .configuration import Rwkv7Config

DECAY_SCALE = math.exp(-0.5)  # BlinkDL writes 0.606531


class LowRank(nn.Module):
    """``lora = Sequential(Linear(d_in, rank, bias=False), activation, Linear(rank, d_out, bias))`` (fla's names)."""

    def __init__(self, d_in: int, rank: int, d_out: int, *, bias: bool, activation: str | None) -> None:
        super().__init__()
        act = {"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), None: nn.Identity()}[activation]
        self.lora = nn.Sequential(nn.Linear(d_in, rank, bias=False), act, nn.Linear(rank, d_out, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora(x)


def _per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.view(*x.shape[:-1], heads, x.shape[-1] // heads)


class Rwkv7TimeMix(HookableMixer):
    """RWKV-7 time-mix with hook points (the layer's ``attn``; nnsight ``layers[i].mixer``).

    ``forward(hidden [b, L, d], state: LayerCall | None, attention_mask [b, L] | None,
    v_first [b, L, A] | None) -> [b, L, d]``. Layer 0 stores its value in ``state.v_first``.
    """

    kind = "rwkv7"

    def __init__(self, config: Rwkv7Config, layer_idx: int) -> None:
        super().__init__(nn.Module(), config, layer_idx)  # native: nothing to adopt
        d, A = config.hidden_size, config.attention_hidden_size
        self.hidden_size, self.num_heads, self.head_dim = d, config.num_heads, config.head_dim
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, d)))
        self.k_k = nn.Parameter(torch.zeros(A))
        self.k_a = nn.Parameter(torch.zeros(A))
        self.r_k = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))
        self.r_proj = nn.Linear(d, A, bias=False)
        self.k_proj = nn.Linear(d, A, bias=False)
        self.v_proj = nn.Linear(d, A, bias=False)
        self.o_proj = nn.Linear(A, d, bias=False)
        self.w_lora = LowRank(d, config.decay_low_rank_dim, A, bias=True, activation="tanh")
        if layer_idx != 0:
            self.v_lora = LowRank(d, config.v_low_rank_dim, A, bias=True, activation=None)
        self.a_lora = LowRank(d, config.a_low_rank_dim, A, bias=True, activation=None)
        self.g_lora = LowRank(d, config.gate_low_rank_dim, A, bias=False, activation="sigmoid")
        self.g_norm = nn.GroupNorm(self.num_heads, A, eps=config.wkv_group_norm_eps, affine=True)

        # Defined in firing order (iterating hook_points() reads them as they fire).
        carried = dict(pos_dim=None, kind="state_carried")
        act = dict(pos_dim=1, kind="activation")
        self.hook_att_shift_state_in = HookPoint(**carried, doc="token-shift input carried in [b, d]")
        self.hook_wkv_state_in = HookPoint(**carried, doc="WKV state carried in [b, H, K, V] (fp32)")
        self.hook_x = HookPoint(**act, doc="time-mix input (attn_norm output) [b, L, d]")
        self.hook_shifted = HookPoint(**act, doc="token-shift input: previous position's x [b, L, d]")
        for name in ("r", "w", "k", "v", "a", "g"):
            setattr(
                self, f"hook_x{name}", HookPoint(**act, doc=f"token-shift mix x + (shifted - x) * x_{name} [b, L, d]")
            )
        self.hook_r = HookPoint(**act, doc="receptance [b, L, A]")
        self.hook_decay = HookPoint(**act, doc="decay w = exp(-e^-0.5 sigmoid(w0 + lora(xw))) in (0, 1) [b, L, A]")
        self.hook_k = HookPoint(**act, doc="key projection [b, L, A]")
        self.hook_v = HookPoint(**act, doc="value projection, before the value residual [b, L, A]")
        self.hook_iclr = HookPoint(**act, doc="in-context learning rate sigmoid(a0 + lora(xa)) [b, L, A]")
        self.hook_g = HookPoint(**act, doc="output gate lora(xg) [b, L, A]")
        self.hook_kk = HookPoint(**act, doc="removal key: per-head L2-normalised k * k_k [b, L, A]")
        self.hook_k_eff = HookPoint(**act, doc="key written: k * (1 + (iclr - 1) * k_a) [b, L, A]")
        self.hook_v_first = HookPoint(**act, doc="layer 0's value (in layer 0: the value it hands on) [b, L, A]")
        self.hook_v_mix = HookPoint(**act, doc="value-residual gate sigmoid(v0 + lora(xv)); zeros in layer 0 [b, L, A]")
        self.hook_v_eff = HookPoint(**act, doc="value written: v + (v_first - v) * v_mix [b, L, A]")
        self.hook_a = HookPoint(**act, doc="state-transition vector a = -kk [b, L, A]")
        self.hook_b = HookPoint(**act, doc="state-transition vector b = kk * iclr [b, L, A]")
        self.hook_wkv_write = HookPoint(
            pos_dim=1, kind="state_write", expensive=True,
            doc="per-position write k_eff v_eff^T [b, L, H, K, V]; edits propagate to t and later",
        )  # fmt: skip
        self.hook_wkv_state = HookPoint(
            pos_dim=1, kind="state_readout", expensive=True,
            doc="per-position state S_t after t's update [b, L, H, K, V]; edits change only t's output",
        )  # fmt: skip
        self.hook_wkv = HookPoint(**act, doc="WKV output S_t^T r_t [b, L, A]")
        self.hook_wkv_normed = HookPoint(**act, doc="WKV output after the per-head GroupNorm [b, L, A]")
        self.hook_bonus = HookPoint(**act, doc="current-token term sum_K(r * k_eff * r_k) * v_eff per head [b, L, A]")
        self.hook_gated = HookPoint(**act, doc="(normed + bonus) * g, input of o_proj [b, L, A]")
        self.hook_att_shift_state_out = HookPoint(**carried, doc="token-shift state carried out [b, d]")
        self.hook_wkv_state_out = HookPoint(**carried, doc="WKV state carried out [b, H, K, V] (fp32)")

    @classmethod
    def from_original(cls, original: nn.Module, config: Any, layer_idx: int) -> HookableMixer:
        raise TypeError(
            f"{type(original).__name__} is not nnsight-rnn's RWKV-7 time-mix: load RWKV-7 checkpoints (fla, rwkv7-hf "
            "folders: same state_dict layout) with nnsight_rnn.load(folder) or Rwkv7ForCausalLM.from_pretrained(folder), "
            "BlinkDL .pth files with nnsight_rnn.models.blinkdl.load_blinkdl(path)"
        )

    @staticmethod
    def state_slots(config: Any) -> dict[str, tuple[int, ...]]:
        """One layer's carried state (time-mix and channel-mix), shapes without the batch axis."""
        d, H, N = config.hidden_size, config.num_heads, config.head_dim
        return {"att_shift": (d,), "wkv": (H, N, N), "ffn_shift": (d,)}

    # What recompute_states needs: b*L*5*A + b*H*K*V floats instead of b*L*H*K*V.
    scan_input_hooks = ("hook_wkv_state_in", "hook_decay", "hook_k_eff", "hook_v_eff", "hook_a", "hook_b")

    def recompute_states(self, inputs: dict[str, torch.Tensor], positions: list[int] | None = None) -> torch.Tensor:
        """``hook_wkv_state`` values ``[b, P, H, K, V]`` from the captured scan inputs (unpadded rows)."""
        H = self.num_heads
        positions = select_positions(positions, inputs["hook_k_eff"].shape[1], self.hook_wkv_state.name)
        w, k, v, a, b = (
            _per_head(inputs[n], H) for n in ("hook_decay", "hook_k_eff", "hook_v_eff", "hook_a", "hook_b")
        )
        _, _, states = wkv7_scan(
            k, w, k, v, a, b, inputs["hook_wkv_state_in"], keep_states=True, keep_positions=positions
        )
        return states

    def forward(
        self,
        hidden: torch.Tensor,
        state: LayerCall | None = None,
        attention_mask: torch.Tensor | None = None,
        v_first: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        batch, length, _ = hidden.shape
        H, N = self.num_heads, self.head_dim
        mask = padding_mask(attention_mask, length)
        state = LayerCall() if state is None else state
        shift_in = state.inputs.get("att_shift")
        if shift_in is None:
            shift_in = hidden.new_zeros(batch, self.hidden_size)
        wkv_in = state.inputs.get("wkv")
        if wkv_in is None:
            wkv_in = hidden.new_zeros(batch, H, N, N, dtype=torch.float32)
        shift_in = self.hook_att_shift_state_in(shift_in)
        wkv_in = self.hook_wkv_state_in(wkv_in)

        x = self.hook_x(hidden)
        shifted, last = token_shift(x, shift_in, mask)
        shifted = self.hook_shifted(shifted)
        delta = shifted - x
        xr = self.hook_xr(x + delta * self.x_r)
        xw = self.hook_xw(x + delta * self.x_w)
        xk = self.hook_xk(x + delta * self.x_k)
        xv = self.hook_xv(x + delta * self.x_v)
        xa = self.hook_xa(x + delta * self.x_a)
        xg = self.hook_xg(x + delta * self.x_g)

        r = self.hook_r(self.r_proj(xr))
        w = self.hook_decay(torch.exp(-DECAY_SCALE * torch.sigmoid(self.w_lora(xw).float())))
        k = self.hook_k(self.k_proj(xk))
        v = self.hook_v(self.v_proj(xv))
        iclr = self.hook_iclr(torch.sigmoid(self.a_lora(xa)))
        g = self.hook_g(self.g_lora(xg))
        kk = self.hook_kk(F.normalize(_per_head(k * self.k_k, H), dim=-1, p=2.0).flatten(-2))
        k_eff = self.hook_k_eff(k * (1 + (iclr - 1) * self.k_a))
        if self.layer_idx == 0:
            v_first = self.hook_v_first(v.clone())  # a copy: editing it must not edit this layer's own value
            state.v_first = v_first
            self.hook_v_mix(torch.zeros_like(v))  # no residual in layer 0 (its v is v_first)
            v_eff = self.hook_v_eff(v)
        else:
            if v_first is None:
                raise ValueError(f"RWKV-7 layer {self.layer_idx} needs layer 0's value (v_first)")
            v_first = self.hook_v_first(v_first)
            v_mix = self.hook_v_mix(torch.sigmoid(self.v_lora(xv)))
            v_eff = self.hook_v_eff(v + (v_first - v) * v_mix)
        a = self.hook_a(-kk)
        b = self.hook_b(kk * iclr)

        rh, kh, vh = _per_head(r, H), _per_head(k_eff, H), _per_head(v_eff, H)
        writes = self._hooked_writes(kh, vh) if self.hook_wkv_write.fires() else None
        keep = self.hook_wkv_state.fires()
        positions = select_positions(self.hook_wkv_state.positions, length, self.hook_wkv_state.name)
        y, wkv_last, states = wkv7_scan(
            rh, _per_head(w, H), kh, vh, _per_head(a, H), _per_head(b, H), wkv_in,
            writes=writes, valid=None if mask is None else mask.bool(), keep_states=keep, keep_positions=positions,
        )  # fmt: skip
        if keep:
            states = self.hook_wkv_state(states)
            if positions is None:
                y = wkv7_readout(states, rh)
            else:  # recompute the output only where states were kept (and possibly edited)
                y = y.clone()
                y[:, positions] = wkv7_readout(states, rh[:, positions])
        y = self.hook_wkv(y.flatten(-2).to(r.dtype))
        normed = self.hook_wkv_normed(self.g_norm(y.reshape(-1, y.shape[-1])).view_as(y))
        bonus = self.hook_bonus(((rh * kh * self.r_k).sum(-1, keepdim=True) * vh).flatten(-2))
        out = self.o_proj(self.hook_gated((normed + bonus) * g))

        state.outputs["att_shift"] = self.hook_att_shift_state_out(last)
        state.outputs["wkv"] = self.hook_wkv_state_out(wkv_last)
        return out

    def _hooked_writes(self, k: torch.Tensor, v: torch.Tensor) -> dict[int, torch.Tensor]:
        """Writes after ``hook_wkv_write``, by position (all positions or the selected ones)."""
        hook = self.hook_wkv_write
        positions = select_positions(hook.positions, k.shape[1], hook.name)
        if positions is None:
            write = hook(outer_writes(k, v))
            return {t: write[:, t] for t in range(k.shape[1])}
        write = hook(outer_writes(k[:, positions], v[:, positions]))
        return {t: write[:, i] for i, t in enumerate(positions)}


class Rwkv7ChannelMix(HookableMixer):
    """RWKV-7 channel-mix (``ffn``; nnsight ``layers[i].mlp``): ``value(relu(key(x + (shifted - x) * x_k))**2)``.

    ``forward(hidden [b, L, d], state: LayerCall | None, attention_mask [b, L] | None) -> [b, L, d]``.
    """

    kind = "rwkv7_channel_mix"

    def __init__(self, config: Rwkv7Config, layer_idx: int) -> None:
        super().__init__(nn.Module(), config, layer_idx)
        d = config.hidden_size
        self.hidden_size = d
        self.x_k = nn.Parameter(torch.zeros(d))
        self.key = nn.Linear(d, config.intermediate_size, bias=False)
        self.value = nn.Linear(config.intermediate_size, d, bias=False)
        carried = dict(pos_dim=None, kind="state_carried")
        act = dict(pos_dim=1, kind="activation")
        self.hook_ffn_shift_state_in = HookPoint(**carried, doc="token-shift input carried in [b, d]")
        self.hook_x = HookPoint(**act, doc="channel-mix input (ffn_norm output) [b, L, d]")
        self.hook_shifted = HookPoint(**act, doc="token-shift input: previous position's x [b, L, d]")
        self.hook_xk = HookPoint(**act, doc="key input x + (shifted - x) * x_k [b, L, d]")
        self.hook_k = HookPoint(**act, doc="relu(key(xk))**2, the neuron activations [b, L, d_ff]")
        self.hook_ffn_shift_state_out = HookPoint(**carried, doc="token-shift state carried out [b, d]")

    @staticmethod
    def state_slots(config: Any) -> dict[str, tuple[int, ...]]:
        return {"ffn_shift": (config.hidden_size,)}

    def forward(
        self,
        hidden: torch.Tensor,
        state: LayerCall | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        batch, length, _ = hidden.shape
        mask = padding_mask(attention_mask, length)
        state = LayerCall() if state is None else state
        shift_in = state.inputs.get("ffn_shift")
        if shift_in is None:
            shift_in = hidden.new_zeros(batch, self.hidden_size)
        shift_in = self.hook_ffn_shift_state_in(shift_in)
        x = self.hook_x(hidden)
        shifted, last = token_shift(x, shift_in, mask)
        shifted = self.hook_shifted(shifted)
        xk = self.hook_xk(x + (shifted - x) * self.x_k)
        k = self.hook_k(torch.relu(self.key(xk)) ** 2)
        state.outputs["ffn_shift"] = self.hook_ffn_shift_state_out(last)
        return self.value(k)


class Rwkv7Block(nn.Module):
    """One block: ``h = pre_norm(h)`` (layer 0), ``h += attn(attn_norm(h))``, ``h += ffn(ffn_norm(h))``.

    ``forward(hidden [b, L, d], state: LayerCall | None, attention_mask, v_first) -> [b, L, d]``.
    """

    def __init__(self, config: Rwkv7Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        d, eps, bias = config.hidden_size, config.norm_eps, config.norm_bias
        if layer_idx == 0:
            self.pre_norm = nn.LayerNorm(d, eps=eps, bias=bias)
        self.attn_norm = nn.LayerNorm(d, eps=eps, bias=bias)
        self.attn = Rwkv7TimeMix(config, layer_idx)
        self.ffn_norm = nn.LayerNorm(d, eps=eps, bias=bias)
        self.ffn = Rwkv7ChannelMix(config, layer_idx)

    def forward(
        self,
        hidden: torch.Tensor,
        state: LayerCall | None = None,
        attention_mask: torch.Tensor | None = None,
        v_first: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.layer_idx == 0:
            hidden = self.pre_norm(hidden)
        hidden = hidden + self.attn(self.attn_norm(hidden), state, attention_mask, v_first)
        return hidden + self.ffn(self.ffn_norm(hidden), state, attention_mask)


class Rwkv7PreTrainedModel(PreTrainedModel):
    config_class = Rwkv7Config
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules: ClassVar[list[str]] = ["Rwkv7Block"]
    supports_gradient_checkpointing = False
    _is_stateful = True

    def _init_weights(self, module: nn.Module) -> None:
        """BlinkDL-style initial values for the time-mix parameters; normal(0, initializer_range) for matrices."""
        super()._init_weights(module)
        if isinstance(module, Rwkv7TimeMix):
            cfg = module.config
            n_layers, d, A = cfg.num_hidden_layers, cfg.hidden_size, cfg.attention_hidden_size
            ratio_0_to_1 = module.layer_idx / max(n_layers - 1, 1)
            ratio_1_to_0 = 1.0 - module.layer_idx / n_layers
            ddd = (torch.arange(d, dtype=torch.float32) / d).view(1, 1, d)
            init.copy_(module.x_r, 1.0 - torch.pow(ddd, 0.2 * ratio_1_to_0))
            init.copy_(module.x_w, 1.0 - torch.pow(ddd, 0.9 * ratio_1_to_0))
            init.copy_(module.x_k, 1.0 - torch.pow(ddd, 0.7 * ratio_1_to_0))
            init.copy_(module.x_v, 1.0 - torch.pow(ddd, 0.7 * ratio_1_to_0))
            init.copy_(module.x_a, 1.0 - torch.pow(ddd, 0.9 * ratio_1_to_0))
            init.copy_(module.x_g, 1.0 - torch.pow(ddd, 0.2 * ratio_1_to_0))
            n = torch.arange(A, dtype=torch.float32)
            decay_speed = -7 + 5 * (n / max(A - 1, 1)) ** (0.85 + 1.0 * ratio_0_to_1**0.5)
            init.copy_(module.w_lora.lora[2].bias, decay_speed + 0.5)
            init.constant_(module.k_k, 0.85)
            init.constant_(module.k_a, 1.0)
            init.zeros_(module.r_k)
            init.zeros_(module.a_lora.lora[2].bias)
            if module.layer_idx != 0:
                init.ones_(module.v_lora.lora[2].bias)
        elif isinstance(module, Rwkv7ChannelMix):
            cfg = module.config
            ratio_1_to_0 = 1.0 - module.layer_idx / cfg.num_hidden_layers
            ddd = torch.arange(cfg.hidden_size, dtype=torch.float32) / cfg.hidden_size
            init.copy_(module.x_k, 1.0 - torch.pow(ddd, ratio_1_to_0**4))


class Rwkv7Model(Rwkv7PreTrainedModel):
    """Embedding, blocks, final norm. Returns ``BaseModelOutputWithPast`` whose ``past_key_values``
    is an :class:`RwkvCache` when ``use_cache`` (or a cache was given).

    ``hidden_states`` (``output_hidden_states``) follow the transformer convention, as fla does:
    ``[embeddings, out_0, ..., out_{n-2}, norm(out_{n-1})]``.
    """

    def __init__(self, config: Rwkv7Config) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Rwkv7Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: RwkvCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> tuple | BaseModelOutputWithPast:
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        batch, length, _ = inputs_embeds.shape
        use_cache = use_cache if use_cache is not None else (cfg.use_cache and not self.training)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else cfg.output_hidden_states
        return_dict = return_dict if return_dict is not None else cfg.return_dict
        mask = call_mask(attention_mask, length)
        calls = cache_layers(past_key_values, len(self.layers), batch)

        hidden = inputs_embeds
        all_hidden: tuple[torch.Tensor, ...] | None = (hidden,) if output_hidden_states else None
        v_first = None
        for i, (layer, call) in enumerate(zip(self.layers, calls, strict=True)):
            hidden = layer(hidden, call, mask, v_first)
            if i == 0:
                v_first = call.v_first
            if all_hidden is not None and i + 1 < len(self.layers):
                all_hidden += (hidden,)
        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden += (hidden,)
        cache = None
        if use_cache or past_key_values is not None:
            seen = past_key_values.seen_tokens if isinstance(past_key_values, RwkvCache) else 0
            cache = RwkvCache([c.outputs for c in calls], seen + length)
        if not return_dict:
            return tuple(x for x in (hidden, cache, all_hidden) if x is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache, hidden_states=all_hidden)


class Rwkv7ForCausalLM(Rwkv7PreTrainedModel, GenerationMixin):
    """RWKV-7 language model: :class:`Rwkv7Model` and ``lm_head``. ``generate`` carries an :class:`RwkvCache`."""

    def __init__(self, config: Rwkv7Config) -> None:
        super().__init__(config)
        self.model = Rwkv7Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: RwkvCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> tuple | CausalLMOutputWithPast:
        return causal_lm_forward(
            self, input_ids, attention_mask, inputs_embeds, past_key_values, labels, use_cache,
            output_hidden_states, return_dict, logits_to_keep,
        )  # fmt: skip


def causal_lm_forward(
    lm: PreTrainedModel,
    input_ids: torch.LongTensor | None,
    attention_mask: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    past_key_values: RwkvCache | None,
    labels: torch.LongTensor | None,
    use_cache: bool | None,
    output_hidden_states: bool | None,
    return_dict: bool | None,
    logits_to_keep: int,
) -> tuple | CausalLMOutputWithPast:
    """The shared ``...ForCausalLM.forward``: backbone, ``lm_head``, shifted cross-entropy when ``labels``.

    Padded positions (``attention_mask == 0``) are ignored by the loss.
    """
    base = getattr(lm, lm.base_model_prefix)
    out = base(
        input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
        past_key_values=past_key_values, use_cache=use_cache, output_hidden_states=output_hidden_states,
        return_dict=True,
    )  # fmt: skip
    hidden = out.last_hidden_state
    if logits_to_keep:
        hidden = hidden[:, -logits_to_keep:]
    logits = lm.get_output_embeddings()(hidden)
    loss = None
    if labels is not None:
        targets = labels[:, 1:]
        if attention_mask is not None:
            targets = targets.masked_fill(attention_mask[:, -labels.shape[1] :][:, 1:] == 0, -100)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100
        )
    return_dict = return_dict if return_dict is not None else lm.config.return_dict
    if not return_dict:
        return tuple(x for x in (loss, logits, out.past_key_values, out.hidden_states) if x is not None)
    return CausalLMOutputWithPast(
        loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states
    )
