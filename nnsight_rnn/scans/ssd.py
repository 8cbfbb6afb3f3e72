"""Mamba-2 state-space duality (SSD) scan in plain torch, fp32, from an initial state.

Per head ``h`` (group ``g = h // (H/G)``), with a scalar decay per head and step:

    h_t = exp(dt_t * A_h) * h_{t-1} + write_t,   write_t = (dt_t * x_t) B_t^T     [P, N]
    y_t = h_t C_t                                                                  [P]

Two evaluations of the same recurrence:

- :func:`ssd_chunked` (the default path): splits the sequence into chunks of ``chunk_size``;
  inside a chunk the output is an attention-like masked product (``C B^T`` weighted by the
  decays), across chunks only one ``[batch, H, P, N]`` state per chunk boundary is carried in a
  short Python loop. Its largest temporaries are ``[batch, n_chunks, H, chunk, chunk]`` and
  ``[batch, n_chunks, H, P, N]``: never ``[batch, L, H, P, N]``. All exponents are sums of
  ``dt*A <= 0`` (decays, never growth), so nothing overflows whatever the chunk size.
- :func:`ssd_recurrent`: the step-by-step loop, for single-token decode steps (the cheapest form
  there); :func:`ssd_states` runs it without readout to build the per-position trajectory
  ``[batch, L, H, P, N]`` (or selected positions only) when it is wanted.
- :func:`ssd_write_delta`: how an edit of the per-position write changes ``y`` and the final
  state (the recurrence is linear in the writes), added to the fast path's result, so that
  positions before an edit keep the fast path's values bit for bit.

Both match HF's ``mamba2_chunk_scan`` / ``mamba2_selective_state_update`` to fp32 rounding
(see tests/scans/test_ssd.py). ``y`` excludes the ``D * x`` skip and the gate.
"""

from __future__ import annotations

import torch

# Steps per block for which exp(dt*A) is computed in one op in the recurrent loop.
_STEP_BLOCK = 64


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """``out[..., l, s] = sum_{s < i <= l} a[..., i]`` for ``s <= l``, ``-inf`` above the diagonal.

    Built with a masked cumulative sum (not ``cumsum_l - cumsum_s``) so that long runs of large
    decays do not lose precision to cancellation; same construction as HF's ``segment_sum``.
    """
    q = a.shape[-1]
    x = a[..., None].expand(*a.shape, q)  # [..., i, s] = a_i
    strict = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device), diagonal=-1)
    x = x.masked_fill(~strict, 0.0)
    out = torch.cumsum(x, dim=-2)
    causal = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device), diagonal=0)
    return out.masked_fill(~causal, -torch.inf)


def ssd_chunked(
    x: torch.Tensor,  # [batch, L, H, P]
    dt: torch.Tensor,  # [batch, L, H], after softplus / clamp / padding mask
    A: torch.Tensor,  # [H], negative
    B: torch.Tensor,  # [batch, L, G, N]
    C: torch.Tensor,  # [batch, L, G, N]
    h0: torch.Tensor,  # [batch, H, P, N]
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD. Returns ``(y [batch, L, H, P], h_last [batch, H, P, N])`` in fp32.

    ``chunk_size`` trades the quadratic intra-chunk work (``chunk^2`` per head) against the number
    of Python-level chunk steps; 64 is a good CPU default (HF uses the config's, 256 by default).
    """
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[2], B.shape[3]
    if heads % groups:
        raise ValueError(f"num_heads ({heads}) must be a multiple of n_groups ({groups})")
    rep = heads // groups
    q = max(1, min(int(chunk_size), length))
    pad = (-length) % q
    n_chunks = (length + pad) // q

    x = x.float()
    dt = dt.float()
    B = B.float()
    C = C.float()
    if pad:
        # Padded tail steps: dt = 0 (no decay) and x = 0 (no write), so the final state is exact.
        x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad))
        dt = torch.nn.functional.pad(dt, (0, 0, 0, pad))
        B = torch.nn.functional.pad(B, (0, 0, 0, 0, 0, pad))
        C = torch.nn.functional.pad(C, (0, 0, 0, 0, 0, pad))

    # Layout: b batch, c chunk, l/s position in chunk, g group, r head within group, p head_dim, n state.
    xdt = (x * dt[..., None]).view(batch, n_chunks, q, groups, rep, head_dim)
    a = (dt * A.float()).view(batch, n_chunks, q, groups, rep).permute(0, 1, 3, 4, 2)  # [b, c, g, r, l]
    Bc = B.view(batch, n_chunks, q, groups, state)
    Cc = C.view(batch, n_chunks, q, groups, state)
    a_cum = torch.cumsum(a, dim=-1)  # [b, c, g, r, l]

    # 1. Within chunks: y_l += sum_{s<=l} (C_l . B_s) exp(sum_{s<i<=l} a_i) xdt_s
    decay = torch.exp(_segsum(a))  # [b, c, g, r, l, s]
    scores = torch.einsum("bclgn,bcsgn->bcgls", Cc, Bc)  # [b, c, g, l, s]
    weights = decay * scores[:, :, :, None]  # [b, c, g, r, l, s]
    y = torch.einsum("bcgrls,bcsgrp->bclgrp", weights, xdt)

    # 2. What each chunk writes into the state, decayed to the chunk's end.
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # [b, c, g, r, l]
    xdt_end = xdt * to_end.permute(0, 1, 4, 2, 3)[..., None]  # [b, c, l, g, r, p]
    chunk_writes = torch.einsum("bclgn,bclgrp->bcgrpn", Bc, xdt_end)  # [b, c, g, r, p, n]

    # 3. Carry the state across chunk boundaries (n_chunks small steps).
    chunk_decay = torch.exp(a_cum[..., -1])  # [b, c, g, r]
    h = h0.float().reshape(batch, groups, rep, head_dim, state)
    starts = torch.empty(batch, n_chunks, groups, rep, head_dim, state, dtype=torch.float32, device=x.device)
    for c in range(n_chunks):
        starts[:, c] = h
        h = torch.addcmul(chunk_writes[:, c], chunk_decay[:, c, :, :, None, None], h)

    # 4. Contribution of each chunk's start state: y_l += exp(sum_{i<=l} a_i) C_l . h_start
    from_start = torch.exp(a_cum).permute(0, 1, 4, 2, 3)[..., None]  # [b, c, l, g, r, 1]
    y = y + torch.einsum("bclgn,bcgrpn->bclgrp", Cc, starts) * from_start

    y = y.reshape(batch, n_chunks * q, heads, head_dim)[:, :length]
    return y, h.reshape(batch, heads, head_dim, state)


def ssd_recurrent(
    x: torch.Tensor,  # [batch, L, H, P]
    dt: torch.Tensor,  # [batch, L, H]
    A: torch.Tensor,  # [H]
    B: torch.Tensor,  # [batch, L, G, N]
    C: torch.Tensor,  # [batch, L, G, N]
    h0: torch.Tensor,  # [batch, H, P, N]
    *,
    write: torch.Tensor | None = None,  # [batch, L, H, P, N]: replaces (dt*x) B^T when given
    keep_states: bool = False,
    keep_positions: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Step-by-step SSD in fp32.

    Returns ``(y [batch, L, H, P], h_last [batch, H, P, N], states)`` where ``states`` is the
    ``[batch, L, H, P, N]`` trajectory (``h_t`` after step t) if ``keep_states`` else None.
    With ``keep_positions`` (non-negative, distinct), only those states are kept, in that order
    (``[batch, len(keep_positions), H, P, N]``). With ``write`` given, the recurrence adds
    ``write[:, t]`` at step t instead of ``(dt_t x_t) B_t^T``.
    """
    return _loop(x, dt, A, B, C, h0, write=write, keep_states=keep_states, delta=False, positions=keep_positions)


def ssd_states(
    x: torch.Tensor,  # [batch, L, H, P]
    dt: torch.Tensor,  # [batch, L, H]
    A: torch.Tensor,  # [H]
    B: torch.Tensor,  # [batch, L, G, N]
    h0: torch.Tensor,  # [batch, H, P, N]
    *,
    write: torch.Tensor | None = None,
    positions: list[int] | None = None,
) -> torch.Tensor:
    """Only the state trajectory: ``[batch, L, H, P, N]``, or ``[batch, len(positions), H, P, N]``.

    With ``positions`` the loop stops after the last one asked for, and only those are stored.
    No readout is computed (callers have ``y`` from the fast path).
    """
    if positions is not None and not positions:
        return torch.empty(x.shape[0], 0, x.shape[2], x.shape[3], B.shape[3], device=x.device)
    stop = x.shape[1] if positions is None else max(positions) + 1
    x, dt, B = x[:, :stop], dt[:, :stop], B[:, :stop]
    write = None if write is None else write[:, :stop]
    _, _, states = _loop(x, dt, A, B, None, h0, write=write, keep_states=True, delta=False, positions=positions)
    return states


def ssd_write_delta(
    x: torch.Tensor,  # [batch, L, H, P]
    dt: torch.Tensor,  # [batch, L, H]
    A: torch.Tensor,  # [H]
    B: torch.Tensor,  # [batch, L, G, N]
    C: torch.Tensor,  # [batch, L, G, N]
    write: torch.Tensor,  # [batch, L, H, P, N], an edited :func:`ssd_write`
) -> tuple[torch.Tensor, torch.Tensor]:
    """Response of the (linear) recurrence to ``write - (dt*x) B^T``, from a zero state.

    Returns ``(dy [batch, L, H, P], dh_last [batch, H, P, N])`` to add to an unedited scan's
    ``(y, h_last)``. The difference is formed per step from the same products as
    :func:`ssd_write`, so it is exactly zero wherever the write was not edited, and ``dy`` is
    exactly zero before the first edited position: unedited positions keep the fast path's
    values bit for bit.
    """
    h0 = torch.zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[3], dtype=torch.float32, device=x.device)
    dy, dh, _ = _loop(x, dt, A, B, C, h0, write=write, keep_states=False, delta=True)
    return dy, dh


def _loop(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor | None,
    h0: torch.Tensor,
    *,
    write: torch.Tensor | None,
    keep_states: bool,
    delta: bool,
    positions: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The recurrence; ``C=None`` skips the readout (``y`` is then returned empty)."""
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[2], B.shape[3]
    rep = heads // groups
    dt = dt.float()
    Bh = B.float().repeat_interleave(rep, dim=2)  # [b, L, H, N]
    Ch = None if C is None else C.float().repeat_interleave(rep, dim=2)
    xdt = _xdt(x, dt) if (write is None or delta) else None  # [b, L, H, P]
    h = h0.float()
    ys = torch.empty(batch, length if Ch is not None else 0, heads, head_dim, dtype=torch.float32, device=x.device)
    slot: dict[int, int] = {}
    if keep_states:
        slot = {t: i for i, t in enumerate(range(length) if positions is None else positions)}
    states = (
        torch.empty(batch, len(slot), heads, head_dim, state, dtype=torch.float32, device=x.device)
        if keep_states
        else None
    )
    A = A.float()
    for start in range(0, length, _STEP_BLOCK):
        stop = min(start + _STEP_BLOCK, length)
        dA = torch.exp(dt[:, start:stop] * A)[..., None, None]  # [b, block, H, 1, 1]
        for t in range(start, stop):
            if write is None:
                inc = xdt[:, t, :, :, None] * Bh[:, t, :, None, :]
            elif delta:
                inc = write[:, t].float() - xdt[:, t, :, :, None] * Bh[:, t, :, None, :]
            else:
                inc = write[:, t].float()
            h = torch.addcmul(inc, dA[:, t - start], h)
            if t in slot:
                states[:, slot[t]] = h
            if Ch is not None:
                ys[:, t] = torch.matmul(h, Ch[:, t, :, :, None]).squeeze(-1)
    return ys, h, states


def _xdt(x: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    return x.float() * dt.float()[..., None]


def ssd_write(x: torch.Tensor, dt: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The per-position write ``(dt_t x_t) B_t^T``: ``[batch, L, H, P, N]`` (fp32)."""
    heads, groups = x.shape[2], B.shape[2]
    Bh = B.float().repeat_interleave(heads // groups, dim=2)  # [b, L, H, N]
    return _xdt(x, dt)[..., None] * Bh[:, :, :, None, :]


def ssd_readout(states: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``y_t = h_t C_t`` from a ``[batch, L, H, P, N]`` trajectory: ``[batch, L, H, P]``."""
    heads, groups = states.shape[2], C.shape[2]
    Ch = C.float().repeat_interleave(heads // groups, dim=2)
    return torch.einsum("blhpn,blhn->blhp", states.float(), Ch)


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast path: one recurrent step for ``L == 1`` (decode), the chunked form otherwise.

    Shapes as in :func:`ssd_chunked`; returns ``(y [batch, L, H, P], h_last [batch, H, P, N])`` in fp32.
    """
    if x.shape[1] == 1:
        y, h, _ = _loop(x, dt, A, B, C, h0, write=None, keep_states=False, delta=False)
        return y, h
    return ssd_chunked(x, dt, A, B, C, h0, chunk_size=chunk_size)
