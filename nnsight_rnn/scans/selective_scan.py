"""Mamba-1 selective scan, discretised chunk by chunk.

    h_t = exp(dt_t * A) * h_{t-1} + write_t,   write_t = (dt_t * u_t) B_t^T
    y_t = h_t C_t

Stock HF builds ``exp(dt*A)`` and ``dt*B*u`` for the whole sequence first (two fp32
``[batch, d_inner, L, N]`` tensors) and then loops with several small ops per step. Here the
sequence is cut into chunks of ``chunk`` steps: the decay and write of one chunk are built at once
(``[batch, chunk, d_inner, N]``, a few MiB), the recurrence is one fused multiply-add per step
written straight into the chunk's state buffer, and the readout of the whole chunk is one
contraction. Memory is O(batch * chunk * d_inner * N) unless per-position states are asked for.

Without autograd the per-step op writes into preallocated buffers (``out=``); with autograd it
builds the same values functionally. Both match HF's torch path and mamba-ssm's
``selective_scan_ref`` to fp32 rounding (tests/scans).
"""

from __future__ import annotations

import torch

# Steps per chunk: amortises per-chunk ops while the [batch, chunk, d_inner, N] buffers stay
# cache-sized (32 * 1536 * 16 * 4 B = 3 MiB for mamba-130m at batch 1).
CHUNK = 32


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
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the recurrence in fp32.

    Returns ``(y [batch, L, d_inner], h_last [batch, d_inner, N], states)`` where ``states`` is
    the ``[batch, P, d_inner, N]`` trajectory (``h_t`` after step t) at the positions
    ``keep_positions`` (all L positions when None) if ``keep_states``, else None.
    ``y`` excludes the ``D * u`` skip and the gate.
    """
    batch, length, d_inner = u.shape
    n_state = A.shape[1]
    dt, A, B, C, h = dt.float(), A.float(), B.float(), C.float(), h0.float()
    du = dt * u.float() if write is None else None
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, dt, A, B, C, h0, write))

    positions = list(range(length)) if keep_positions is None else keep_positions
    slot = {t: i for i, t in enumerate(positions)} if keep_states else {}
    states = torch.empty(batch, len(slot), d_inner, n_state, device=u.device) if keep_states else None
    full_trajectory = keep_states and keep_positions is None

    ys = []
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        decay = torch.exp(dt[:, start:stop, :, None] * A)  # [batch, c, d_inner, N]
        inc = du[:, start:stop, :, None] * B[:, start:stop, None, :] if write is None else write[:, start:stop].float()
        if grad:
            hs = []
            for i in range(stop - start):
                h = torch.addcmul(inc[:, i], decay[:, i], h)
                hs.append(h)
            buf = torch.stack(hs, dim=1)
        else:
            # Write each step into the chunk's buffer: the full trajectory itself when it is kept.
            buf = states[:, start:stop] if full_trajectory else torch.empty_like(decay)
            for i in range(stop - start):
                torch.addcmul(inc[:, i], decay[:, i], h, out=buf[:, i])
                h = buf[:, i]
            h = h.clone()
        ys.append(torch.einsum("bldn,bln->bld", buf, C[:, start:stop]))
        if keep_states and not (full_trajectory and not grad):
            for t in range(start, stop):
                if t in slot:
                    states[:, slot[t]] = buf[:, t - start]
    return torch.cat(ys, dim=1), h, states


def readout(states: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``y_t = h_t C_t`` from a (possibly edited) ``[batch, L, d_inner, N]`` trajectory."""
    return torch.einsum("bldn,bln->bld", states.float(), C.float())


def state_write(u: torch.Tensor, dt: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The per-position write ``(dt_t * u_t) B_t^T``: ``[batch, L, d_inner, N]``."""
    return (dt.float() * u.float())[..., None] * B.float()[:, :, None, :]
