"""RWKV-5/6's time-mix (``attention``) and channel-mix (``feed_forward``): nnsight-rnn's own hookable mixers.

Time-mix hooks (``layers[i].mixer``, the block's ``attention``), in firing order; ``d = hidden_size``,
``A = attention_hidden_size``, ``H = A / head_size`` heads of size ``K = V = head_size``:

==========================  ===================  ===========================================================
hook                        shape                meaning
==========================  ===================  ===========================================================
hook_att_shift_state_in     [b, d]               token-shift input carried in
hook_wkv_state_in           [b, H, K, V]         WKV state carried in (fp32)
hook_x                      [b, L, d]            time-mix input (``ln1`` output)
hook_shifted                [b, L, d]            previous (unpadded) position's x; the carried shift at 0
hook_xw/xk/xv/xr/xg         [b, L, d]            token-shift mixes (RWKV-6: data-dependent, ``x + (shifted - x) *
                                                 (maa_* + lora_*(...))``; RWKV-5: ``x * mix + shifted * (1 - mix)``,
                                                 no ``hook_xw``)
hook_r / hook_k / hook_v    [b, L, A]            receptance, key, value (fp32)
hook_g                      [b, L, A]            output gate ``silu(gate(xg))``
hook_decay                  [b, L, A]            decay ``w = exp(-exp(time_decay + lora(xw)))`` in (0, 1)
                                                 (RWKV-5: ``[b, A]``, constant over positions, one copy per row)
hook_bonus                  [b, A]               current-token bonus ``u = time_faaaa`` per row (no position axis)
hook_wkv_write              [b, L, H, K, V]      per-position write ``k v^T`` (expensive)
hook_wkv_state              [b, L, H, K, V]      per-position state read at t, i.e. before t's write (expensive)
hook_wkv                    [b, L, A]            WKV output ``r^T (S_{t-1} + diag(u) k v^T)`` per head
hook_wkv_normed             [b, L, A]            after the per-head GroupNorm (``ln_x``)
hook_gated                  [b, L, A]            ``normed * g``, input of ``output``
hook_att_shift_state_out    [b, d]               token-shift state carried out (last unpadded x)
hook_wkv_state_out          [b, H, K, V]         WKV state carried out
==========================  ===================  ===========================================================

State semantics (see :mod:`nnsight_rnn.scans.wkv`): ``S_t = diag(w_t) S_{t-1} + W_t``, ``W_t = k_t v_t^T``,
``y_t = r_t^T (S_{t-1} + diag(u) W_t)``. ``hook_wkv_state[:, t]`` is ``S_{t-1}`` (``[:, 0]`` is the carried-in
state): editing it changes the output at t only. ``hook_wkv_write[:, t]`` is ``W_t``: editing it changes t
(through the bonus) and every later position and the state carried out; zeroing it writes nothing. Both cost
``b*L*H*K*V*4`` bytes, are computed only when something listens and honour ``HookPoint.positions``.

Channel-mix hooks (``layers[i].mlp``, the block's ``feed_forward``): ``hook_ffn_shift_state_in`` [b, d],
``hook_x``, ``hook_shifted``, ``hook_xk``, ``hook_xr`` [b, L, d], ``hook_k`` [b, L, d_ff]
(``relu(key(xk))**2``), ``hook_v`` [b, L, d] (``value(k)``), ``hook_r`` [b, L, d] (sigmoid receptance),
``hook_ffn_shift_state_out`` [b, d].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import HookPoint, select_positions
from ..scans.wkv import outer_writes, wkv6_readout, wkv6_scan
from .base import padding_mask
from .rwkv_cache import LayerCall
from .token_shift import ACTIVATION_HOOK, RwkvChannelMix, maa_mix
from .wkv_time_mix import WkvTimeMix, per_head

if TYPE_CHECKING:
    pass


class Rwkv56TimeMix(WkvTimeMix):
    """What the RWKV-5 and RWKV-6 time-mixes share: projections, WKV scan, GroupNorm, gate, hooks.

    Subclasses define the token-shift mixes (:meth:`_mixes`), the decay (:meth:`_decay`) and which
    mix hooks exist (``mix_names``). ``forward(hidden [b, L, d], state: LayerCall | None,
    attention_mask [b, L] | None) -> [b, L, d]``.
    """

    version_name = "RWKV-5/6"
    checkpoints = "RWKV-5/6 checkpoints (the '-hf' hub folders: same state_dict layout) with nnsight_rnn.load(folder)"
    mix_names: ClassVar[tuple[str, ...]] = ()
    decay_per_position: ClassVar[bool] = True

    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__(nn.Module(), config, layer_idx)  # native: nothing to adopt
        d, A = config.hidden_size, config.attention_hidden_size
        self.hidden_size, self.num_heads, self.head_size = d, config.num_heads, config.head_size
        self._init_mix_parameters(config)
        self.time_faaaa = nn.Parameter(torch.zeros(self.num_heads, self.head_size))
        self.receptance = nn.Linear(d, A, bias=False)
        self.key = nn.Linear(d, A, bias=False)
        self.value = nn.Linear(d, A, bias=False)
        self.gate = nn.Linear(d, A, bias=False)
        self.output = nn.Linear(A, d, bias=False)
        self.ln_x = nn.GroupNorm(self.num_heads, A, eps=config.wkv_group_norm_eps)

        # Defined in firing order (iterating hook_points() reads them as they fire).
        self._add_input_hooks("ln1")
        act = ACTIVATION_HOOK
        for name in self.mix_names:
            setattr(self, f"hook_x{name}", HookPoint(**act, doc=f"token-shift mix feeding {name} [b, L, d]"))
        self.hook_r = HookPoint(**act, doc="receptance [b, L, A] (fp32)")
        self.hook_k = HookPoint(**act, doc="key [b, L, A] (fp32)")
        self.hook_v = HookPoint(**act, doc="value [b, L, A] (fp32)")
        self.hook_g = HookPoint(**act, doc="output gate silu(gate(xg)) [b, L, A]")
        if self.decay_per_position:
            self.hook_decay = HookPoint(**act, doc="decay w = exp(-exp(time_decay + lora(xw))) in (0, 1) [b, L, A]")
        else:
            self.hook_decay = HookPoint(
                pos_dim=None, kind="activation", doc="decay w = exp(-exp(time_decay)) in (0, 1), per row [b, A]"
            )
        self.hook_bonus = HookPoint(
            pos_dim=None, kind="activation", doc="current-token bonus u = time_faaaa, one copy per row [b, A]"
        )
        self.hook_wkv_write = HookPoint(
            pos_dim=1, kind="state_write", expensive=True,
            doc="per-position write k v^T [b, L, H, K, V]; edits propagate to t (bonus) and later",
        )  # fmt: skip
        self.hook_wkv_state = HookPoint(
            pos_dim=1, kind="state_readout", expensive=True,
            doc="per-position state read at t, S_{t-1} [b, L, H, K, V]; edits change only t's output",
        )  # fmt: skip
        self.hook_wkv = HookPoint(**act, doc="WKV output r^T (S_{t-1} + diag(u) k v^T) [b, L, A]")
        self.hook_wkv_normed = HookPoint(**act, doc="WKV output after the per-head GroupNorm ln_x [b, L, A]")
        self.hook_gated = HookPoint(**act, doc="normed * g, input of the output projection [b, L, A]")
        self._add_output_hooks()

    # -- per-version parts ------------------------------------------------------------------------

    def _init_mix_parameters(self, config: Any) -> None:
        raise NotImplementedError

    def _mixes(self, x: torch.Tensor, shifted: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token-shift mixes by name (``mix_names``), each through its hook."""
        raise NotImplementedError

    def _decay(self, mixes: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        """Decay factors in (0, 1): ``[b, L, A]`` (per position) or ``[b, A]``."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------

    scan_input_hooks: ClassVar[tuple[str, ...]] = ("hook_wkv_state_in", "hook_k", "hook_v", "hook_decay")

    def recompute_states(self, inputs: dict[str, torch.Tensor], positions: list[int] | None = None) -> torch.Tensor:
        """``hook_wkv_state`` values ``[b, P, H, K, V]`` from the captured scan inputs (unpadded rows)."""
        H = self.num_heads
        k, v, w = inputs["hook_k"], inputs["hook_v"], inputs["hook_decay"]
        positions = select_positions(positions, k.shape[1], self.hook_wkv_state.name)
        w = per_head(w if w.dim() == 3 else w[:, None], H)
        u = torch.zeros_like(self.time_faaaa, dtype=torch.float32)
        _, _, states = wkv6_scan(
            per_head(k, H), w, per_head(k, H), per_head(v, H), u, inputs["hook_wkv_state_in"],
            keep_states=True, keep_positions=positions,
        )  # fmt: skip
        return states

    def forward(
        self,
        hidden: torch.Tensor,
        state: LayerCall | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        batch, length, _ = hidden.shape
        H = self.num_heads
        mask = padding_mask(attention_mask, length)
        state = LayerCall() if state is None else state
        shift_in, wkv_in = self._carried_in(state, hidden)

        x, shifted, last = self._shift(hidden, shift_in, mask)
        mixes = self._mixes(x, shifted)
        r = self.hook_r(self.receptance(mixes["r"]).float())
        k = self.hook_k(self.key(mixes["k"]).float())
        v = self.hook_v(self.value(mixes["v"]).float())
        g = self.hook_g(F.silu(self.gate(mixes["g"])))
        w = self.hook_decay(self._decay(mixes, batch))
        u = self.hook_bonus(self.time_faaaa.float().flatten().expand(batch, -1).clone())

        rh, kh, vh, uh = per_head(r, H), per_head(k, H), per_head(v, H), per_head(u, H)
        wh = per_head(w if w.dim() == 3 else w[:, None], H)
        writes, keep, positions = self._scan_hooks(kh, vh)
        y, wkv_last, states = wkv6_scan(
            rh, wh, kh, vh, uh, wkv_in,
            writes=writes, valid=None if mask is None else mask.bool(), keep_states=keep, keep_positions=positions,
        )  # fmt: skip
        if keep:
            states = self.hook_wkv_state(states)
            sel = list(range(length)) if positions is None else positions
            W = None
            if writes is not None:  # the hooked writes at the kept positions (k v^T where not hooked)
                W = outer_writes(kh[:, sel], vh[:, sel])
                for i, t in enumerate(sel):
                    if t in writes:
                        W[:, i] = writes[t]
            out = wkv6_readout(states, rh[:, sel], uh, W, kh[:, sel], vh[:, sel])
            y = out if positions is None else y.clone().index_copy_(1, torch.tensor(sel, device=y.device), out)
        y = self.hook_wkv(y.flatten(-2))
        normed = self.hook_wkv_normed(self.ln_x(y.reshape(-1, y.shape[-1])).view_as(y))
        out = self.output(self.hook_gated(normed.to(g.dtype) * g))

        self._carry_out(state, last, wkv_last)
        return out


class Rwkv6TimeMix(Rwkv56TimeMix):
    """RWKV-6 time-mix: data-dependent token shift (``time_maa_*``) and decay (``time_decay_w1/w2``)."""

    kind = "rwkv6"
    mix_names: ClassVar[tuple[str, ...]] = ("w", "k", "v", "r", "g")

    def _init_mix_parameters(self, config: Any) -> None:
        d, A = config.hidden_size, config.attention_hidden_size
        for name in ("x", "w", "k", "v", "r", "g"):
            setattr(self, f"time_maa_{name}", nn.Parameter(torch.zeros(1, 1, d)))
        self.time_maa_w1 = nn.Parameter(torch.zeros(d, config.time_mix_extra_dim * 5))
        self.time_maa_w2 = nn.Parameter(torch.zeros(5, config.time_mix_extra_dim, d))
        self.time_decay = nn.Parameter(torch.zeros(1, 1, A))
        self.time_decay_w1 = nn.Parameter(torch.zeros(d, config.time_decay_extra_dim))
        self.time_decay_w2 = nn.Parameter(torch.zeros(config.time_decay_extra_dim, A))

    def _mixes(self, x: torch.Tensor, shifted: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, length, d = x.shape
        delta = shifted - x
        xxx = torch.tanh((x + delta * self.time_maa_x) @ self.time_maa_w1).view(batch * length, 5, -1)
        lora = torch.bmm(xxx.transpose(0, 1), self.time_maa_w2).view(5, batch, length, d)
        out = {}
        for i, name in enumerate(self.mix_names):
            out[name] = getattr(self, f"hook_x{name}")(x + delta * (getattr(self, f"time_maa_{name}") + lora[i]))
        return out

    def _decay(self, mixes: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        lora = torch.tanh(mixes["w"] @ self.time_decay_w1) @ self.time_decay_w2
        return torch.exp(-torch.exp((self.time_decay + lora).float()))


class Rwkv56ChannelMix(RwkvChannelMix):
    """RWKV-5/6 channel-mix (``feed_forward``; nnsight ``layers[i].mlp``): ``sigmoid(receptance(xr)) * value(relu(key(xk))**2)``.

    ``forward(hidden [b, L, d], state: LayerCall | None, attention_mask [b, L] | None) -> [b, L, d]``
    (:class:`~nnsight_rnn.mixers.token_shift.RwkvChannelMix`). RWKV-6 mixes ``x + (shifted - x) * time_maa_*``,
    RWKV-5 ``x * time_mix_* + shifted * (1 - time_mix_*)``.
    """

    kind = "rwkv56_channel_mix"

    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__(nn.Module(), config, layer_idx)  # native: nothing to adopt

    def _init_parameters(self, config: Any) -> None:
        d = config.hidden_size
        for name in (self.key_mix, self.receptance_mix):
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, d)))
        self.key = nn.Linear(d, config.intermediate_size, bias=False)
        self.receptance = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(config.intermediate_size, d, bias=False)


class Rwkv6ChannelMix(Rwkv56ChannelMix):
    """RWKV-6 channel-mix: ``x + (shifted - x) * time_maa_k`` / ``time_maa_r``."""

    mix = staticmethod(maa_mix)
    key_mix, receptance_mix = "time_maa_k", "time_maa_r"
