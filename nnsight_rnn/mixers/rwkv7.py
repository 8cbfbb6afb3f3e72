"""RWKV-7's time-mix (``attn``) and channel-mix (``ffn``): nnsight-rnn's own hookable mixers (see :mod:`nnsight_rnn.models.rwkv7`).

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

State semantics (see :mod:`nnsight_rnn.scans.wkv`): ``S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1})
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
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import HookPoint, select_positions
from ..scans.wkv import wkv7_readout, wkv7_scan
from .base import padding_mask
from .rwkv_cache import LayerCall
from .token_shift import ACTIVATION_HOOK, RwkvChannelMix, maa_mix
from .wkv_time_mix import WkvTimeMix, per_head

if TYPE_CHECKING:
    from ..models.rwkv7.configuration import Rwkv7Config


DECAY_SCALE = math.exp(-0.5)  # BlinkDL writes 0.606531


class LowRank(nn.Module):
    """``lora = Sequential(Linear(d_in, rank, bias=False), activation, Linear(rank, d_out, bias))`` (fla's names)."""

    def __init__(self, d_in: int, rank: int, d_out: int, *, bias: bool, activation: str | None) -> None:
        super().__init__()
        act = {"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), None: nn.Identity()}[activation]
        self.lora = nn.Sequential(nn.Linear(d_in, rank, bias=False), act, nn.Linear(rank, d_out, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora(x)


class Rwkv7TimeMix(WkvTimeMix):
    """RWKV-7 time-mix with hook points (the layer's ``attn``; nnsight ``layers[i].mixer``).

    ``forward(hidden [b, L, d], state: LayerCall | None, attention_mask [b, L] | None,
    v_first [b, L, A] | None) -> [b, L, d]``. Layer 0 stores its value in ``state.v_first``.
    """

    kind = "rwkv7"
    cross_layer_hooks = ("hook_v_first",)  # every layer mixes in layer 0's value
    version_name = "RWKV-7"
    checkpoints = (
        "RWKV-7 checkpoints (fla, rwkv7-hf folders: same state_dict layout) with nnsight_rnn.load(folder) "
        "or Rwkv7ForCausalLM.from_pretrained(folder)"
    )

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
        self._add_input_hooks("attn_norm")
        act = ACTIVATION_HOOK
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
        self._add_output_hooks()

    # What recompute_states needs: b*L*5*A + b*H*K*V floats instead of b*L*H*K*V.
    scan_input_hooks = ("hook_wkv_state_in", "hook_decay", "hook_k_eff", "hook_v_eff", "hook_a", "hook_b")

    def recompute_states(self, inputs: dict[str, torch.Tensor], positions: list[int] | None = None) -> torch.Tensor:
        """``hook_wkv_state`` values ``[b, P, H, K, V]`` from the captured scan inputs (unpadded rows)."""
        H = self.num_heads
        positions = select_positions(positions, inputs["hook_k_eff"].shape[1], self.hook_wkv_state.name)
        w, k, v, a, b = (per_head(inputs[n], H) for n in ("hook_decay", "hook_k_eff", "hook_v_eff", "hook_a", "hook_b"))
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
        length = hidden.shape[1]
        H = self.num_heads
        mask = padding_mask(attention_mask, length)
        state = LayerCall() if state is None else state
        shift_in, wkv_in = self._carried_in(state, hidden)

        x, shifted, last = self._shift(hidden, shift_in, mask)
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
        kk = self.hook_kk(F.normalize(per_head(k * self.k_k, H), dim=-1, p=2.0).flatten(-2))
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

        rh, kh, vh = per_head(r, H), per_head(k_eff, H), per_head(v_eff, H)
        writes, keep, positions = self._scan_hooks(kh, vh)
        y, wkv_last, states = wkv7_scan(
            rh, per_head(w, H), kh, vh, per_head(a, H), per_head(b, H), wkv_in,
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

        self._carry_out(state, last, wkv_last)
        return out


class Rwkv7ChannelMix(RwkvChannelMix):
    """RWKV-7 channel-mix (``ffn``; nnsight ``layers[i].mlp``): ``value(relu(key(x + (shifted - x) * x_k))**2)``.

    ``forward(hidden [b, L, d], state: LayerCall | None, attention_mask [b, L] | None) -> [b, L, d]``
    (:class:`~nnsight_rnn.mixers.token_shift.RwkvChannelMix` without a receptance gate).
    """

    kind = "rwkv7_channel_mix"
    mix = staticmethod(maa_mix)
    key_mix, receptance_mix = "x_k", None
    docs: ClassVar[dict[str, str]] = {
        "x": "channel-mix input (ffn_norm output) [b, L, d]",
        "xk": "key input x + (shifted - x) * x_k [b, L, d]",
    }

    def __init__(self, config: Rwkv7Config, layer_idx: int) -> None:
        super().__init__(nn.Module(), config, layer_idx)  # native: nothing to adopt

    def _init_parameters(self, config: Rwkv7Config) -> None:
        d = config.hidden_size
        self.x_k = nn.Parameter(torch.zeros(d))
        self.key = nn.Linear(d, config.intermediate_size, bias=False)
        self.value = nn.Linear(config.intermediate_size, d, bias=False)
