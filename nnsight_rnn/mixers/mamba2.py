"""Hookable Mamba-2 (SSD) mixer: one code path for prefill, continuation and decode.

Replaces transformers' ``Mamba2Mixer`` (adopting ``in_proj, conv1d, dt_bias, A_log, D, norm,
out_proj`` by reference). Notation: ``H = num_heads``, ``P = head_dim`` (``H*P = d_inner``),
``G = n_groups``, ``N = state_size``, ``K = conv_kernel``, ``conv_dim = d_inner + 2*G*N``.
All hooks are ``[batch, pos, ...]`` (position axis 1) unless noted.

==========================  ===================  ===========================================
hook                        shape                meaning
==========================  ===================  ===========================================
hook_x                      [b, L, H, P]         x channels of ``in_proj`` (conv input)
hook_z                      [b, L, H, P]         gate channels of ``in_proj``
hook_conv                   [b, L, conv_dim]     causal conv output before the activation, all
                                                 channels in conv1d order ``[x (H*P) | B (G*N) | C (G*N)]``
hook_x_act                  [b, L, H, P]         activated x, the scan input (0 at padding)
hook_dt                     [b, L, H]            step per head: softplus(dt + dt_bias), clamped to
                                                 ``time_step_limit``, 0 at padding
hook_B / hook_C             [b, L, G, N]         activated B / C (state input / output projections)
hook_ssm_write              [b, L, H, P, N]      per-position write ``(dt*x) B^T`` (propagating)
hook_ssm_state              [b, L, H, P, N]      per-position state ``h_t`` (readout only)
hook_y                      [b, L, H, P]         scan output incl. the ``D*x`` skip, before the gate
hook_gated_norm             [b, L, d_inner]      ``norm(y * silu(z))`` (group RMSNorm), input of ``out_proj``
hook_ssm_state_in/_out      [b, H, P, N]         carried SSM state into / out of the call
hook_conv_state_in/_out     [b, conv_dim, K]     carried conv window (last K conv inputs)
==========================  ===================  ===========================================

B and C before the conv have no hook of their own: edit their conv output through ``hook_conv``
(or the activated values through ``hook_B`` / ``hook_C``).

``hook_ssm_write`` and ``hook_ssm_state`` cost ``b*L*H*P*N*4`` bytes each (mamba2-130m: 768 KiB
per layer per position) and are computed only when something listens (see
:meth:`HookPoint.fires`); asking for either adds a step-by-step pass over the sequence to that
layer (both: two passes) on top of the chunked scan, whose result they correct, so positions an
edit cannot reach keep the unhooked values bit for bit. ``hook_ssm_state.positions = [...]``
(see :mod:`nnsight_rnn.capture`) keeps only those positions (``[b, len(positions), H, P, N]``)
and stops the extra pass after the last one. Editing ``hook_ssm_state`` at position t changes
only the output at t; editing ``hook_ssm_write`` at t re-runs the recurrence, changing t, every
later position and the final state. Editing ``hook_ssm_state_in`` changes the whole call.

Differences from stock HF, on purpose: padded positions get zero conv inputs (HF feeds
``in_proj``'s bias there when ``use_bias``, so its left-padded rows then differ from the rows run
alone, by O(1) on a tiny model) and ``dt = 0`` (no decay, no write: a padded position is absent
whatever the state; HF's decay there is harmless only because the state is still zero during
left padding); the ``time_step_limit`` clamp applies in decode steps too (HF's decode step skips
it; equal for the default ``(0, inf)``). Tolerance against HF's torch path: fp32 rounding (max
|diff| ~1e-6 on logits of tiny models, ~1e-3 on a random 24-layer mamba2-130m-sized model, the
same as HF's own chunk 64 vs chunk 256; see tests/mixers/test_mamba2.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from ..hooks import HookPoint, select_positions
from ..scans.ssd import ssd_readout, ssd_scan, ssd_states, ssd_write, ssd_write_delta
from ..upstream import cache_argument, read_linear_cache, write_linear_cache
from .base import HookableMixer, padding_mask
from .linear_cache import with_lens

# Largest chunk of the SSD scan on the hooked path: ``min(config.chunk_size, 64)``. The config's
# ``chunk_size`` (256 in released checkpoints) only sets the kernel tiling; results do not depend
# on it beyond fp32 rounding, and 64 was 1.6x faster than 256 on CPU (mamba2-130m, seq 512).
# Override per mixer with ``mixer.chunk_size = ...``.
DEFAULT_CHUNK_SIZE = 64


class HookableMamba2Mixer(HookableMixer):
    kind = "mamba2"
    state_format = with_lens("h_t [H, P, N] flattened")
    adopted = ("in_proj", "conv1d", "dt_bias", "A_log", "norm", "D", "out_proj")

    def __init__(self, original: torch.nn.Module, config: Any, layer_idx: int) -> None:
        super().__init__(original, config, layer_idx)
        self.num_heads = int(config.num_heads)
        self.head_dim = int(config.head_dim)
        self.n_groups = int(config.n_groups)
        self.ssm_state_size = int(config.state_size)
        self.conv_kernel_size = int(config.conv_kernel)
        self.intermediate_size = self.num_heads * self.head_dim
        if self.intermediate_size != int(config.expand * config.hidden_size):
            raise ValueError(
                f"Mamba-2 config: num_heads*head_dim ({self.intermediate_size}) must equal expand*hidden_size "
                f"({int(config.expand * config.hidden_size)})"
            )
        if self.num_heads % self.n_groups:
            raise ValueError(f"Mamba-2 config: num_heads ({self.num_heads}) must be a multiple of n_groups")
        self.conv_dim = self.intermediate_size + 2 * self.n_groups * self.ssm_state_size
        self.act = ACT2FN[config.hidden_act]
        self.time_step_limit = tuple(float(v) for v in config.time_step_limit)
        self.chunk_size = min(int(config.chunk_size), DEFAULT_CHUNK_SIZE)

        # Registered in firing order (the hook reference lists them in this order).
        carried = dict(pos_dim=None, kind="state_carried")
        self.hook_ssm_state_in = HookPoint(**carried, doc="SSM state carried into the call [b, H, P, N]")
        self.hook_conv_state_in = HookPoint(**carried, doc="conv window carried into the call [b, conv_dim, K]")
        act = dict(pos_dim=1, kind="activation")
        self.hook_z = HookPoint(**act, doc="gate channels of in_proj [b, L, H, P]")
        self.hook_x = HookPoint(**act, doc="x channels of in_proj, the conv input [b, L, H, P]")
        self.hook_conv = HookPoint(
            **act, doc="causal conv output before activation, channels [x | B | C] [b, L, conv_dim]"
        )
        self.hook_x_act = HookPoint(**act, doc="activated x, the scan input, 0 at padding [b, L, H, P]")
        self.hook_dt = HookPoint(**act, doc="step per head softplus(dt + dt_bias), 0 at padding [b, L, H]")
        self.hook_B = HookPoint(**act, doc="state input projection B per group [b, L, G, N]")
        self.hook_C = HookPoint(**act, doc="state output projection C per group [b, L, G, N]")
        self.hook_ssm_write = HookPoint(
            pos_dim=1, kind="state_write", expensive=True,
            doc="per-position state write (dt*x) B^T [b, L, H, P, N]; edits propagate",
        )  # fmt: skip
        self.hook_ssm_state = HookPoint(
            pos_dim=1, kind="state_readout", expensive=True,
            doc="per-position state h_t [b, L, H, P, N]; edits change only that position's output",
        )  # fmt: skip
        self.hook_y = HookPoint(**act, doc="scan output incl. D*x skip, before the gate [b, L, H, P]")
        self.hook_gated_norm = HookPoint(**act, doc="norm(y * silu(z)), input of out_proj [b, L, d_inner]")
        self.hook_ssm_state_out = HookPoint(**carried, doc="SSM state carried out of the call [b, H, P, N]")
        self.hook_conv_state_out = HookPoint(**carried, doc="conv window carried out of the call [b, conv_dim, K]")

    @staticmethod
    def state_slots(config: Any) -> dict[str, tuple[int, ...]]:
        d_inner = int(config.num_heads) * int(config.head_dim)
        conv_dim = d_inner + 2 * int(config.n_groups) * int(config.state_size)
        return {
            "conv": (conv_dim, int(config.conv_kernel)),
            "ssm": (int(config.num_heads), int(config.head_dim), int(config.state_size)),
        }

    scan_input_hooks = ("hook_ssm_state_in", "hook_x_act", "hook_dt", "hook_B")

    def recompute_states(self, inputs: dict[str, torch.Tensor], positions: list[int] | None = None) -> torch.Tensor:
        """``hook_ssm_state`` values ``[b, P, H, P_head, N]`` from the captured scan inputs."""
        x_act, dt, B = inputs["hook_x_act"], inputs["hook_dt"], inputs["hook_B"]
        positions = select_positions(positions, x_act.shape[1], self.hook_ssm_state.name)
        A = -torch.exp(self.A_log.float())
        return ssd_states(x_act, dt, A, B, inputs["hook_ssm_state_in"], positions=positions)

    def forward(
        self,
        hidden_states: torch.Tensor,  # [b, L, d_model], already normed by the block
        cache: Any = None,  # HF's cache (named cache_params before transformers 5.24: upstream C1)
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        caches = cache_argument(cache, kwargs)  # usually one; see its docstring
        batch, length, _ = hidden_states.shape
        dtype, device = hidden_states.dtype, hidden_states.device
        H, P, G, N = self.num_heads, self.head_dim, self.n_groups, self.ssm_state_size
        d_inner = self.intermediate_size
        mask = padding_mask(attention_mask, length)
        conv_carried, ssm_carried = read_linear_cache(caches, self.layer_idx)
        if mask is not None and ssm_carried is not None:
            raise NotImplementedError(
                "a padded batch (attention_mask with zeros) cannot continue from a carried state: the "
                "padding would sit between the state and the new tokens. Run unpadded rows, or pad only the prefix."
            )
        if ssm_carried is None:
            ssm_carried = torch.zeros(batch, H, P, N, device=device)
            conv_carried = torch.zeros(batch, self.conv_dim, self.conv_kernel_size, device=device, dtype=dtype)
        ssm_in = self.hook_ssm_state_in(ssm_carried)
        conv_in = self.hook_conv_state_in(conv_carried)

        if mask is not None:
            hidden_states = hidden_states * mask[:, :, None].to(dtype)
        proj = self.in_proj(hidden_states)
        z = self.hook_z(proj[..., :d_inner].unflatten(-1, (H, P)))
        xBC = proj[..., d_inner : d_inner + self.conv_dim]
        dt_raw = proj[..., d_inner + self.conv_dim :]  # [b, L, H]
        x_view = xBC[..., :d_inner].unflatten(-1, (H, P))
        x_in = self.hook_x(x_view)
        if x_in is not x_view:  # edited: rebuild the conv input from the edited x
            xBC = torch.cat([x_in.flatten(-2).to(xBC.dtype), xBC[..., d_inner:]], dim=-1)
        if mask is not None:
            xBC = xBC * mask[:, :, None].to(xBC.dtype)  # padding = the zero window a row alone starts with

        # Causal conv over [carried window (last K-1 inputs), new inputs]: exact across calls.
        window = torch.cat([conv_in[..., 1:].to(xBC.dtype), xBC.transpose(1, 2)], dim=-1)  # [b, conv_dim, K-1+L]
        conv = F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=self.conv_dim)
        conv = self.hook_conv(conv.transpose(1, 2))  # [b, L, conv_dim]
        xBC_act = self.act(conv)
        if mask is not None:
            xBC_act = xBC_act * mask[:, :, None].to(xBC_act.dtype)
        x_act, B, C = torch.split(xBC_act, [d_inner, G * N, G * N], dim=-1)
        x_act = self.hook_x_act(x_act.unflatten(-1, (H, P)))

        dt = F.softplus(dt_raw.float() + self.dt_bias.float())
        lo, hi = self.time_step_limit
        if lo > 0.0 or hi != float("inf"):
            dt = dt.clamp(min=lo, max=hi)
        if mask is not None:
            dt = dt * mask[:, :, None]  # dt = 0: the state passes padding untouched (no decay, no write)
        dt = self.hook_dt(dt)
        B = self.hook_B(B.unflatten(-1, (G, N)))
        C = self.hook_C(C.unflatten(-1, (G, N)))

        A = -torch.exp(self.A_log.float())
        write = self.hook_ssm_write(ssd_write(x_act, dt, B)) if self.hook_ssm_write.fires() else None
        keep = self.hook_ssm_state.fires()
        y, h_last = ssd_scan(x_act, dt, A, B, C, ssm_in, chunk_size=self.chunk_size)  # [b, L, H, P] fp32
        # The state hooks act as corrections on the fast path's result, so that positions an edit
        # cannot reach keep its values bit for bit (the chunked and step-by-step forms differ in
        # rounding): the recurrence is linear in the writes, and y_t is linear in h_t.
        if write is not None:
            dy, dh = ssd_write_delta(x_act, dt, A, B, C, write)
            y, h_last = y + dy, h_last + dh
        if keep:
            hook = self.hook_ssm_state
            positions = select_positions(hook.positions, length, hook.name)
            states = ssd_states(x_act, dt, A, B, ssm_in, write=write, positions=positions)
            C_kept = C if positions is None else C[:, positions]
            unedited = ssd_readout(states, C_kept)  # before the hook: nnsight edits in place
            change = ssd_readout(hook(states), C_kept) - unedited
            if positions is None:
                y = y + change
            else:
                y = y.index_add(1, torch.tensor(positions, device=y.device), change)

        y = self.hook_y(y + x_act.float() * self.D.float()[:, None])  # [b, L, H, P]
        gated = self.hook_gated_norm(self.norm(y.flatten(-2), z.flatten(-2)))  # [b, L, d_inner]
        out = self.out_proj(gated.to(dtype))

        ssm_out = self.hook_ssm_state_out(h_last)
        conv_out = self.hook_conv_state_out(window[..., -self.conv_kernel_size :])
        if caches:
            write_linear_cache(caches, self.layer_idx, conv_out, ssm_out, new_tokens=hidden_states.shape[1])
        return out
