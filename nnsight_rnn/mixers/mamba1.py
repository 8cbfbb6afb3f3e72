"""Hookable Mamba-1 mixer (Mamba, FalconMamba): one code path for prefill, continuation and decode.

Hook points (all ``[batch, pos, ...]`` unless noted; ``D = d_inner``, ``N = ssm_state_size``,
``K = conv_kernel``):

==========================  ===================  ===========================================
hook                        shape                meaning
==========================  ===================  ===========================================
hook_x                      [b, L, D]            x half of ``in_proj`` (conv input)
hook_z                      [b, L, D]            gate half of ``in_proj``
hook_conv                   [b, L, D]            causal conv output, before the activation
hook_x_act                  [b, L, D]            activated conv output ``u`` (scan input)
hook_dt                     [b, L, D]            step size after softplus (0 at padding)
hook_B / hook_C             [b, L, N]            input / output projections of the state
hook_ssm_write              [b, L, D, N]         per-position write ``dt*u*B^T`` (propagating)
hook_ssm_state              [b, L, D, N]         per-position state ``h_t`` (readout only)
hook_y                      [b, L, D]            scan output incl. ``D*u`` skip, before gate
hook_gated                  [b, L, D]            ``y * silu(z)``, input of ``out_proj``
hook_ssm_state_in/_out      [b, D, N]            carried SSM state into / out of the call
hook_conv_state_in/_out     [b, D, K]            carried conv window (last K inputs)
==========================  ===================  ===========================================

On a CUDA device with mamba-ssm and causal-conv1d installed, a call whose per-position hooks and
carried-in hooks are all idle runs the fused upstream kernels instead, as stock HF does on GPU, for
a fresh prompt or a one-token decode step without padding (:mod:`nnsight_rnn.kernels`); the
carried-out hooks still fire, with the kernels' values. Anything else (a hook wanted, padding, a
prompt continuing a carried state) takes the hookable path below.

``hook_ssm_write`` and ``hook_ssm_state`` cost ``b*L*D*N*4`` bytes each and are computed only
when something listens (see :meth:`HookPoint.wanted`). Editing ``hook_ssm_state`` at position t
changes only the output at t; editing ``hook_ssm_write`` at t re-runs the recurrence, changing
t and every later position and the final state. Editing ``hook_ssm_state_in`` changes the whole
call. Tolerance against HF's torch path: fp32 rounding (max |diff| ~1e-6 on logits).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from ..hooks import HookPoint, select_positions
from ..kernels import Mamba1Kernels, mamba1_kernels
from ..scans.selective_scan import readout, selective_scan, state_write
from ..upstream import cache_argument, read_linear_cache, write_linear_cache
from .base import HookableMixer, known, padding_mask
from .linear_cache import with_lens


class HookableMamba1Mixer(HookableMixer):
    kind = "mamba1"
    state_format = with_lens("h_t [d_inner, N] flattened")
    adopted = ("conv1d", "in_proj", "x_proj", "dt_proj", "A_log", "D", "out_proj")
    # FalconMamba's weightless RMS norms on dt, B, C (non-persistent buffers only).
    optional = ("dt_layernorm", "b_layernorm", "c_layernorm")

    def __init__(self, original: torch.nn.Module, config: Any, layer_idx: int) -> None:
        super().__init__(original, config, layer_idx)
        self.hidden_size = config.hidden_size
        self.ssm_state_size = config.state_size
        self.conv_kernel_size = config.conv_kernel
        self.intermediate_size = config.intermediate_size
        self.time_step_rank = int(config.time_step_rank)
        self.act = ACT2FN[config.hidden_act]
        self.activation = config.hidden_act
        self.has_bc_dt_norm = hasattr(original, "b_layernorm")

        # Defined in execution order: iterating hook_points() reads them in the order they fire,
        # which is the order nnsight needs.
        carried = dict(pos_dim=None, kind="state_carried")
        act = dict(pos_dim=1, kind="activation")
        self.hook_ssm_state_in = HookPoint(**carried, doc="SSM state carried into the call [b, d_inner, N]")
        self.hook_conv_state_in = HookPoint(**carried, doc="conv window carried into the call [b, d_inner, K]")
        self.hook_x = HookPoint(**act, doc="x half of in_proj [b, L, d_inner]")
        self.hook_z = HookPoint(**act, doc="gate half of in_proj [b, L, d_inner]")
        self.hook_conv = HookPoint(**act, doc="causal conv output before activation [b, L, d_inner]")
        self.hook_x_act = HookPoint(**act, doc="activated conv output u, the scan input [b, L, d_inner]")
        self.hook_dt = HookPoint(**act, doc="step size after softplus, 0 at padding [b, L, d_inner]")
        self.hook_B = HookPoint(**act, doc="state input projection B [b, L, N]")
        self.hook_C = HookPoint(**act, doc="state output projection C [b, L, N]")
        self.hook_ssm_write = HookPoint(
            pos_dim=1, kind="state_write", expensive=True,
            doc="per-position state write dt*u*B^T [b, L, d_inner, N]; edits propagate",
        )  # fmt: skip
        self.hook_ssm_state = HookPoint(
            pos_dim=1, kind="state_readout", expensive=True,
            doc="per-position state h_t [b, L, d_inner, N]; edits change only that position's output",
        )  # fmt: skip
        self.hook_y = HookPoint(**act, doc="scan output incl. D*u skip, before the gate [b, L, d_inner]")
        self.hook_gated = HookPoint(**act, doc="y * silu(z), input of out_proj [b, L, d_inner]")
        self.hook_ssm_state_out = HookPoint(**carried, doc="SSM state carried out of the call [b, d_inner, N]")
        self.hook_conv_state_out = HookPoint(**carried, doc="conv window carried out of the call [b, d_inner, K]")

    @staticmethod
    def state_slots(config: Any) -> dict[str, tuple[int, ...]]:
        return {
            "conv": (config.intermediate_size, config.conv_kernel),
            "ssm": (config.intermediate_size, config.state_size),
        }

    scan_input_hooks = ("hook_ssm_state_in", "hook_x_act", "hook_dt", "hook_B", "hook_C")
    # What the fused kernels neither expose nor take edits of: any of these wanted means the hookable path.
    fused_skips = (
        "hook_ssm_state_in", "hook_conv_state_in", "hook_x", "hook_z", "hook_conv", "hook_x_act", "hook_dt",
        "hook_B", "hook_C", "hook_ssm_write", "hook_ssm_state", "hook_y", "hook_gated",
    )  # fmt: skip
    fused_activations = ("silu", "swish")  # the only ones the fused conv has

    def recompute_states(self, inputs: dict[str, torch.Tensor], positions: list[int] | None = None) -> torch.Tensor:
        """``hook_ssm_state`` values ``[b, P, d_inner, N]`` from the captured scan inputs."""
        u, dt, B, C = inputs["hook_x_act"], inputs["hook_dt"], inputs["hook_B"], inputs["hook_C"]
        positions = select_positions(positions, u.shape[1], self.hook_ssm_state.name)
        A = -torch.exp(self.A_log.float())
        _, _, states = selective_scan(
            u, dt, A, B, C, inputs["hook_ssm_state_in"], keep_states=True, keep_positions=positions
        )
        return states

    def forward(
        self,
        hidden_states: torch.Tensor,  # [b, L, d_model], already normed by the block
        cache: Any = None,  # HF's cache (named cache_params before transformers 5.24: upstream C1)
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        caches = cache_argument(cache, kwargs)  # usually one; see its docstring
        batch, length, _ = hidden_states.shape
        dtype = hidden_states.dtype
        mask = padding_mask(attention_mask, length)
        conv_carried, ssm_carried = read_linear_cache(caches, self.layer_idx)
        if mask is not None and ssm_carried is not None:
            raise NotImplementedError(
                "a padded batch (attention_mask with zeros) cannot continue from a carried state: the "
                "padding would sit between the state and the new tokens. Run unpadded rows, or pad only the prefix."
            )
        device = hidden_states.device
        kernels = mamba1_kernels(device) if self.activation in self.fused_activations else None
        if kernels is not None and mask is None and (ssm_carried is None or length == 1) and self._skips_idle():
            return self._fused_forward(kernels, hidden_states, ssm_carried, conv_carried, caches)
        if ssm_carried is None:
            ssm_carried = torch.zeros(batch, self.intermediate_size, self.ssm_state_size, device=device)
            conv_carried = torch.zeros(batch, self.intermediate_size, self.conv_kernel_size, device=device, dtype=dtype)
        ssm_in = self.hook_ssm_state_in(ssm_carried)
        conv_in = self.hook_conv_state_in(conv_carried)

        if mask is not None:
            hidden_states = hidden_states * mask[:, :, None].to(dtype)
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        x = self.hook_x(x)
        z = self.hook_z(z)

        # Causal conv over [carried window (last K-1 inputs), new inputs]: exact across calls.
        x_t = x.transpose(1, 2)  # [b, D, L]
        if known(conv_in.any(), unknown=True):
            window = torch.cat([conv_in[..., 1:].to(x.dtype), x_t], dim=-1)  # [b, D, K-1+L]
            conv = F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=self.intermediate_size)
        else:  # zero carried window (a fresh prompt): let the conv pad instead of copying the sequence
            conv = F.conv1d(
                x_t, self.conv1d.weight, self.conv1d.bias, groups=self.intermediate_size,
                padding=self.conv_kernel_size - 1,
            )[..., :length]  # fmt: skip
        conv = self.hook_conv(conv.transpose(1, 2))
        u = self.hook_x_act(self.act(conv))
        if mask is not None:
            u = u * mask[:, :, None].to(u.dtype)

        dt_raw, B, C = self._dt_B_C(u)
        dt = F.softplus(dt_raw.float() + self.dt_proj.bias.float())
        if mask is not None:
            dt = dt * mask[:, :, None]  # dt = 0: the state passes padding untouched
        dt = self.hook_dt(dt)
        B = self.hook_B(B)
        C = self.hook_C(C)

        A = -torch.exp(self.A_log.float())
        write = self.hook_ssm_write(state_write(u, dt, B)) if self.hook_ssm_write.fires() else None
        keep = self.hook_ssm_state.fires()
        positions = select_positions(self.hook_ssm_state.positions, length, self.hook_ssm_state.name)
        y, h_last, states = selective_scan(
            u, dt, A, B, C, ssm_in, write=write, keep_states=keep, keep_positions=positions
        )
        if keep:
            states = self.hook_ssm_state(states)
            if positions is None:
                y = readout(states, C)
            else:  # recompute y only where states were kept (and possibly edited)
                y = y.clone()
                y[:, positions] = readout(states, C[:, positions])

        y = self.hook_y(y + u.float() * self.D.float())
        gated = self.hook_gated(y * F.silu(z.float()))
        out = self.out_proj(gated.to(dtype))

        ssm_out = self.hook_ssm_state_out(h_last)
        conv_out = self.hook_conv_state_out(_last_window(conv_in, x_t, self.conv_kernel_size))
        if caches:
            write_linear_cache(caches, self.layer_idx, conv_out, ssm_out, new_tokens=hidden_states.shape[1])
        return out

    def _skips_idle(self) -> bool:
        """True if no hook in :attr:`fused_skips` is wanted; then counts their visits (nnsight steps stay aligned)."""
        hooks = [getattr(self, name) for name in self.fused_skips]
        if any(hook.wanted() for hook in hooks):
            return False
        for hook in hooks:
            hook.fires()  # not wanted: counts the visit, computes nothing
        return True

    def _fused_forward(
        self,
        kernels: Mamba1Kernels,
        hidden_states: torch.Tensor,  # [b, L, d_model]
        ssm_carried: torch.Tensor | None,  # [b, D, N], or None for a fresh prompt
        conv_carried: torch.Tensor | None,  # [b, D, K]
        caches: list[Any],
    ) -> torch.Tensor:
        """HF's ``cuda_kernels_forward`` with our carried-out hooks: a fresh prompt, or one decode step."""
        x, z = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)  # [b, D, L] each
        weight = self.conv1d.weight.view(self.intermediate_size, self.conv_kernel_size)
        A = -torch.exp(self.A_log.float())
        # The carried-in hooks are in fused_skips: idle (their visits counted by _skips_idle), not called here.
        if ssm_carried is None:  # fresh prompt from a zero state
            u = kernels.causal_conv1d_fn(x, weight, self.conv1d.bias, activation=self.activation)
            dt_raw, B, C = self._dt_B_C(u.transpose(1, 2))
            y, h_last = kernels.selective_scan_fn(
                u, dt_raw.transpose(1, 2), A, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
                self.D.float(), z, self.dt_proj.bias.float(), delta_softplus=True, return_last_state=True,
            )  # fmt: skip
            zero_window = x.new_zeros(x.shape[0], self.intermediate_size, self.conv_kernel_size)
            conv_out = _last_window(zero_window, x, self.conv_kernel_size)
        else:  # one decode step: the kernels update their state arguments in place, so give them copies
            assert conv_carried is not None
            conv_out = conv_carried.clone()
            u = kernels.causal_conv1d_update(x[..., 0], conv_out, weight, self.conv1d.bias, self.activation)
            dt_raw, B, C = self._dt_B_C(u[:, None, :])
            h_last = ssm_carried.clone()
            y = kernels.selective_state_update(
                h_last, u, dt_raw[:, 0], A, B[:, 0], C[:, 0], self.D.float(), z[..., 0],
                dt_bias=self.dt_proj.bias.float(), dt_softplus=True,
            )[..., None]  # fmt: skip
        out = self.out_proj(y.transpose(1, 2).to(hidden_states.dtype))
        ssm_out = self.hook_ssm_state_out(h_last)
        conv_out = self.hook_conv_state_out(conv_out.to(hidden_states.dtype))
        if caches:
            write_linear_cache(caches, self.layer_idx, conv_out, ssm_out, new_tokens=hidden_states.shape[1])
        return out

    def _dt_B_C(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step before its bias and softplus ``[b, L, D]``, B and C ``[b, L, N]`` (FalconMamba: normed)."""
        dt_low, B, C = torch.split(
            self.x_proj(u), [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1
        )
        if self.has_bc_dt_norm:
            dt_low, B, C = self.dt_layernorm(dt_low), self.b_layernorm(B), self.c_layernorm(C)
        return dt_low @ self.dt_proj.weight.T, B, C


def _last_window(carried: torch.Tensor, x_t: torch.Tensor, kernel: int) -> torch.Tensor:
    """The last ``kernel`` conv inputs after this call: ``[b, D, K]`` (carried ones first if L < K)."""
    length = x_t.shape[-1]
    if length >= kernel:
        return x_t[..., -kernel:].to(carried.dtype)
    return torch.cat([carried[..., length:], x_t.to(carried.dtype)], dim=-1)
