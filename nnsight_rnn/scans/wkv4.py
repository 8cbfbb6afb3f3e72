"""RWKV-4 WKV recurrence in plain torch, fp32, numerically stable (running-max form).

Per channel (``d = d_att``), with decay ``w = -exp(time_decay) < 0`` and bonus ``u = time_first``,
the real state is a numerator/denominator pair ``(A, B)`` over the past tokens:

    wkv_t   = (A_{t-1} + e^{u + k_t} v_t) / (B_{t-1} + e^{u + k_t})       (output at t)
    A_t     = e^{w} A_{t-1} + e^{k_t} v_t,   B_t = e^{w} B_{t-1} + e^{k_t}   (state update)

It is stored as ``(num, den, max)`` with ``A = num * e^{max}``, ``B = den * e^{max}``, exactly as
HF's ``rwkv_linear_attention_cpu`` and the CUDA kernel do, so ``e^{k}`` never overflows. This
module calls that triple a *state* and lays it out ``[..., 3, d]`` (index 0 num, 1 den, 2 max).

A *write* is what token t adds, in the same representation: ``(v_t, 1, k_t)`` (numerator
increment ``v e^{k}``, denominator increment ``1 * e^{k}``). The token's own bonus term in
``wkv_t`` uses the same write with ``u`` added to its log-scale. All zeros is "writes nothing"
(the output at t then reads the past alone; with an empty past that is 0/0 = NaN).

The loop body mirrors HF's op for op, so results equal HF's CPU path to fp32 rounding
(observed: identical bits on CPU for fp32 inputs).
"""

from __future__ import annotations

import torch

# Steps per chunk: the loop only updates the state; each chunk's outputs are one vectorised readout.
CHUNK = 64

# "-infinity" for the log-scale of an empty state, as HF's CPU path uses (finite: -inf - -inf = nan).
EMPTY_MAX = -1e38


def empty_state(batch: int, d: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The state of an empty memory: ``[batch, 3, d]`` fp32 ``(num=0, den=0, max=-1e38)``."""
    state = torch.zeros(batch, 3, d, dtype=torch.float32, device=device)
    state[:, 2] = EMPTY_MAX
    return state


def wkv4_scan(
    w: torch.Tensor,  # [d] or [batch, d] decay, -exp(time_decay)
    u: torch.Tensor,  # [d] or [batch, d] bonus (time_first)
    k: torch.Tensor,  # [batch, L, d] write log-scale (the key)
    v: torch.Tensor,  # [batch, L, d] numerator write (the value)
    state0: torch.Tensor,  # [batch, 3, d] carried-in (num, den, max)
    *,
    den_write: torch.Tensor | None = None,  # [batch, L, d] denominator write; None means 1
    valid: torch.Tensor | None = None,  # [batch, L] bool; False: the step leaves the state untouched
    keep_states: bool = False,
    keep_positions: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the WKV-4 recurrence over L steps in fp32.

    Returns ``(wkv [batch, L, d] fp32, state_last [batch, 3, d], states)`` where ``states`` is the
    ``[batch, L, 3, d]`` trajectory of the states *read* at each position (``states[:, t]`` is the
    state before token t is written; ``states[:, 0] == state0``) if ``keep_states`` else None;
    with ``keep_positions`` (non-negative, distinct) only those positions, in that order:
    ``[batch, P, 3, d]``.
    At positions where ``valid`` is False the output is computed from the unchanged state (a finite,
    meaningless value) and the state is carried through untouched.
    """
    batch, length, d = k.shape
    w = w.float()
    k = k.float()
    v = v.float()
    if w.dim() == 1:
        w = w.expand(batch, d)
    # num and den are updated together: [batch, 2, d], with the token's (v, den_write) alongside.
    nd = state0[:, :2].float()
    mx = state0[:, 2].float()
    vd = torch.stack([v, torch.ones_like(v) if den_write is None else den_write.float()], dim=2)  # [b, L, 2, d]
    slots = {t: t for t in range(length)} if keep_positions is None else {t: j for j, t in enumerate(keep_positions)}
    states = torch.empty(batch, len(slots), 3, d, dtype=torch.float32, device=k.device) if keep_states else None
    out = torch.empty(batch, length, d, dtype=torch.float32, device=k.device)
    for start in range(0, length, CHUNK):
        stop = min(start + CHUNK, length)
        # The state read at each position of the chunk; the outputs then come from it in one go.
        read = torch.empty(batch, stop - start, 3, d, dtype=torch.float32, device=k.device)
        for t in range(start, stop):
            read[:, t - start, :2] = nd
            read[:, t - start, 2] = mx
            # State update: decay the past by e^w, add the token (op for op as HF's CPU path).
            kt = k[:, t]
            decayed = mx + w
            m_new = torch.maximum(decayed, kt)
            e1 = torch.exp(decayed - m_new)
            e2 = torch.exp(kt - m_new)
            new_nd = e1[:, None] * nd + e2[:, None] * vd[:, t]
            if valid is None:
                nd, mx = new_nd, m_new
            else:
                keep = valid[:, t, None]
                nd = torch.where(keep[:, None], new_nd, nd)
                mx = torch.where(keep, m_new, mx)
        sl = slice(start, stop)
        out[:, sl] = wkv4_readout(read, u, k[:, sl], v, den_write=None if den_write is None else den_write[:, sl],
                                  v_slice=sl)  # fmt: skip
        if states is not None:
            for t in range(start, stop):
                if t in slots:
                    states[:, slots[t]] = read[:, t - start]
    return out, torch.cat([nd, mx[:, None]], dim=1), states


def wkv4_readout(
    states: torch.Tensor,  # [batch, L, 3, d] state read at each position
    u: torch.Tensor,  # [d] or [batch, d]
    k: torch.Tensor,  # [batch, L, d]
    v: torch.Tensor,  # [batch, L, d]
    den_write: torch.Tensor | None = None,  # [batch, L, d] or None (1)
    v_slice: slice | None = None,  # use v[:, v_slice] (saves a copy inside the scan)
) -> torch.Tensor:
    """``wkv_t`` from a (possibly edited) per-position state trajectory: ``[batch, L, d]`` fp32.

    The same formula as the scan's output, vectorised over positions: with the trajectory the scan
    kept and nothing edited, the result is bit-identical to the scan's output.
    """
    states = states.float()
    num, den, mx = states[:, :, 0], states[:, :, 1], states[:, :, 2]
    uk = k.float() + _per_position(u)
    m_out = torch.maximum(mx, uk)
    e1 = torch.exp(mx - m_out)
    e2 = torch.exp(uk - m_out)
    b = e2 if den_write is None else e2 * den_write.float()
    v = v.float() if v_slice is None else v[:, v_slice].float()
    return (e1 * num + e2 * v) / (e1 * den + b)


def _per_position(u: torch.Tensor) -> torch.Tensor:
    """A ``[d]`` or ``[batch, d]`` per-channel parameter, fp32, broadcastable against ``[batch, L, d]``."""
    u = u.float()
    return u[:, None] if u.dim() == 2 else u


def wkv4_write(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The per-position write ``(v_t, 1, k_t)``: ``[batch, L, 3, d]`` fp32 (see the module docstring)."""
    return torch.stack([v.float(), torch.ones_like(k, dtype=torch.float32), k.float()], dim=2)
