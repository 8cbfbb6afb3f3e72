"""Mamba-1 selective scan, discretised inside the time step.

    h_t = exp(dt_t * A) * h_{t-1} + write_t,   write_t = (dt_t * u_t) B_t^T
    y_t = h_t C_t

Stock HF builds ``exp(dt*A)`` and ``dt*B*u`` for the whole sequence first (two fp32
``[batch, d_inner, L, N]`` tensors) and then loops; this loop builds each step's factors from
``[batch, L, d_inner]`` / ``[batch, L, N]`` inputs on the fly, so memory is O(batch*d_inner*N)
unless per-position states are asked for. Matches HF's torch path and mamba-ssm's
``selective_scan_ref`` to fp32 rounding (see tests/scans).
"""

from __future__ import annotations

import torch

# Steps per chunk for which exp(dt*A) is computed in one op: amortises kernel launches while
# keeping the temporary at [batch, chunk, d_inner, N] (a few MiB), never [batch, L, d_inner, N].
_CHUNK = 32


def selective_scan(
    u: torch.Tensor,  # [batch, L, d_inner]
    dt: torch.Tensor,  # [batch, L, d_inner], after softplus (and padding mask)
    A: torch.Tensor,  # [d_inner, N], negative
    B: torch.Tensor,  # [batch, L, N]
    C: torch.Tensor,  # [batch, L, N]
    h0: torch.Tensor,  # [batch, d_inner, N]
    *,
    write: torch.Tensor | None = None,  # [batch, L, d_inner, N]: replaces (dt*u) B^T when given
    keep_states: bool = False,
    keep_positions: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the recurrence in fp32.

    Returns ``(y [batch, L, d_inner], h_last [batch, d_inner, N], states)`` where ``states`` is
    the ``[batch, P, d_inner, N]`` trajectory (``h_t`` after step t) at the positions
    ``keep_positions`` (all L positions when None) if ``keep_states``, else None.
    ``y`` excludes the ``D * u`` skip and the gate.
    """
    batch, length, d_inner = u.shape
    dt = dt.float()
    A = A.float()
    B = B.float()
    C = C.float()
    h = h0.float()
    du = dt * u.float() if write is None else None
    ys = torch.empty(batch, length, d_inner, dtype=torch.float32, device=u.device)
    slot: dict[int, int] = {}
    if keep_states:
        slot = {t: i for i, t in enumerate(range(length) if keep_positions is None else keep_positions)}
    states = (
        torch.empty(batch, len(slot), d_inner, A.shape[1], dtype=torch.float32, device=u.device) if keep_states else None
    )
    for start in range(0, length, _CHUNK):
        stop = min(start + _CHUNK, length)
        dA = torch.exp(dt[:, start:stop, :, None] * A)  # [batch, chunk, d_inner, N]
        for t in range(start, stop):
            if write is None:
                inc = du[:, t, :, None] * B[:, t, None, :]
            else:
                inc = write[:, t].float()
            h = torch.addcmul(inc, dA[:, t - start], h)
            if t in slot:
                states[:, slot[t]] = h
            ys[:, t] = torch.bmm(h, C[:, t, :, None]).squeeze(-1)
    return ys, h, states


def readout(states: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``y_t = h_t C_t`` from a (possibly edited) ``[batch, L, d_inner, N]`` trajectory."""
    return torch.einsum("bldn,bln->bld", states.float(), C.float())


def state_write(u: torch.Tensor, dt: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The per-position write ``(dt_t * u_t) B_t^T``: ``[batch, L, d_inner, N]``."""
    return (dt.float() * u.float())[..., None] * B.float()[:, :, None, :]
