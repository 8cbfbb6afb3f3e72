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
    u = _per_position(u)
    k = k.float()
    v = v.float()
    num, den, mx = state0.float().unbind(1)
    uk = k + u  # HF adds the bonus inside the loop; elementwise, so the same bits
    out = torch.empty(batch, length, d, dtype=torch.float32, device=k.device)
    slots = {t: t for t in range(length)} if keep_positions is None else {t: j for j, t in enumerate(keep_positions)}
    states = torch.empty(batch, len(slots), 3, d, dtype=torch.float32, device=k.device) if keep_states else None
    for t in range(length):
        kt, vt = k[:, t], v[:, t]
        if states is not None and t in slots:
            j = slots[t]
            states[:, j, 0], states[:, j, 1], states[:, j, 2] = num, den, mx
        # Output at t: the past plus the token itself with the bonus u.
        m_out = torch.maximum(mx, uk[:, t])
        e1 = torch.exp(mx - m_out)
        e2 = torch.exp(uk[:, t] - m_out)
        b_t = e2 if den_write is None else e2 * den_write[:, t]
        out[:, t] = (e1 * num + e2 * vt) / (e1 * den + b_t)
        # State update: decay the past by e^w, add the token.
        decayed = mx + w
        m_new = torch.maximum(decayed, kt)
        e1 = torch.exp(decayed - m_new)
        e2 = torch.exp(kt - m_new)
        new_num = e1 * num + e2 * vt
        new_den = e1 * den + (e2 if den_write is None else e2 * den_write[:, t])
        if valid is None:
            num, den, mx = new_num, new_den, m_new
        else:
            keep = valid[:, t, None]
            num = torch.where(keep, new_num, num)
            den = torch.where(keep, new_den, den)
            mx = torch.where(keep, m_new, mx)
    return out, torch.stack([num, den, mx], dim=1), states


def wkv4_readout(
    states: torch.Tensor,  # [batch, L, 3, d] state read at each position
    u: torch.Tensor,  # [d] or [batch, d]
    k: torch.Tensor,  # [batch, L, d]
    v: torch.Tensor,  # [batch, L, d]
    den_write: torch.Tensor | None = None,  # [batch, L, d] or None (1)
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
    return (e1 * num + e2 * v.float()) / (e1 * den + b)


def _per_position(u: torch.Tensor) -> torch.Tensor:
    """A ``[d]`` or ``[batch, d]`` per-channel parameter, fp32, broadcastable against ``[batch, L, d]``."""
    u = u.float()
    return u[:, None] if u.dim() == 2 else u


def wkv4_write(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The per-position write ``(v_t, 1, k_t)``: ``[batch, L, 3, d]`` fp32 (see the module docstring)."""
    return torch.stack([v.float(), torch.ones_like(k, dtype=torch.float32), k.float()], dim=2)
