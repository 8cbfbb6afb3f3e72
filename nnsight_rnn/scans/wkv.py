"""The WKV recurrences of RWKV-5/6 and RWKV-7, per head, in plain torch (fp32, a loop over positions).

Shapes: ``[b, L, H, K]`` for per-position key-side vectors (r, k, w, a, b), ``[b, L, H, V]`` for
values, ``[b, H, K, V]`` for a state (key axis before value axis).

RWKV-5/6 (:func:`wkv6_scan`), with decay ``w_t`` in (0, 1) (RWKV-5: constant over t) and bonus ``u``::

    y_t = r_t^T (S_{t-1} + diag(u) W_t)        W_t = k_t v_t^T   (the write)
    S_t = diag(w_t) S_{t-1} + W_t

The state *read at* t is ``S_{t-1}`` (before t is written); the write at t enters y_t through the
bonus and the state after t.

RWKV-7 (:func:`wkv7_scan`), a generalised delta rule with ``a = -kk`` and ``b = kk * iclr``::

    S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1}) + W_t       W_t = k_t v_t^T
    y_t = S_t^T r_t

The state read at t is ``S_t`` (after t is written).

Padding: ``valid`` ([b, L] bool) marks real positions; at others the state passes unchanged
(decay 1, nothing written or removed: exact, not approximately). Writes can be replaced per
position (``writes={t: [b, H, K, V]}``), which is how ``hook_wkv_write`` edits propagate; states
can be kept for all or selected positions (``keep_positions``), which is how ``hook_wkv_state``
reads them.
"""

from __future__ import annotations

import torch


def _prepare_valid(
    valid: torch.Tensor | None, w: torch.Tensor, k: torch.Tensor, b: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if valid is None:
        return w, k, b
    m = valid[:, :, None, None]
    w = torch.where(m, w, torch.ones_like(w))
    k = torch.where(m, k, torch.zeros_like(k))
    if b is not None:
        b = torch.where(m, b, torch.zeros_like(b))
    return w, k, b


def _kept(
    keep_states: bool, keep_positions: list[int] | None, length: int, state: torch.Tensor
) -> tuple[torch.Tensor | None, dict[int, int]]:
    if not keep_states:
        return None, {}
    slots = list(range(length)) if keep_positions is None else keep_positions
    out = state.new_empty(state.shape[0], len(slots), *state.shape[1:])
    return out, {t: i for i, t in enumerate(slots)}


def _write_at(
    t: int, k: torch.Tensor, v: torch.Tensor, writes: dict[int, torch.Tensor], valid: torch.Tensor | None
) -> torch.Tensor:
    """The write at position t ``[b, H, K, V]``: the hooked one (none where padded) or ``k_t v_t^T``.

    ``k`` (already zero at padded positions, :func:`_prepare_valid`) ``[b, L, H, K]``, ``v`` ``[b, L, H, V]``.
    """
    if t not in writes:
        return k[:, t, :, :, None] * v[:, t, :, None, :]
    W = writes[t].float()
    return W if valid is None else W * valid[:, t, None, None, None]


def wkv6_scan(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor,
    *,
    writes: dict[int, torch.Tensor] | None = None,
    valid: torch.Tensor | None = None,
    keep_states: bool = False,
    keep_positions: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """RWKV-5/6 WKV over a call.

    Args:
        r, k: ``[b, L, H, K]``; w: ``[b, L, H, K]`` decay factors in (0, 1) (broadcastable: RWKV-5
            passes ``[b, 1, H, K]``); v: ``[b, L, H, V]``; u: ``[H, K]`` or ``[b, H, K]`` bonus.
        state: ``[b, H, K, V]`` carried in.
        writes: position -> ``[b, H, K, V]`` replacing ``k_t v_t^T`` there (bonus and state).
        valid: ``[b, L]`` bool; False positions leave the state untouched.
        keep_states / keep_positions: return the states read at all / these positions.

    Returns:
        ``(y [b, L, H, V], final state [b, H, K, V], states [b, L|P, H, K, V] or None)``, all fp32.
    """
    batch, length, heads, _ = r.shape
    r, w, k, v, u = (t.float() for t in (r, w, k, v, u))
    w = w.expand(batch, length, *w.shape[2:])
    w, k, _ = _prepare_valid(valid, w, k)
    if u.dim() == 2:
        u = u.expand(batch, *u.shape)
    S = state.float()
    y = v.new_empty(batch, length, heads, v.shape[-1])
    u = u[:, :, :, None]  # [b, H, K, 1]
    kept, where = _kept(keep_states, keep_positions, length, S)
    writes = writes or {}
    for t in range(length):
        if t in where:
            kept[:, where[t]] = S
        W = _write_at(t, k, v, writes, valid)
        # BlinkDL's order: r^T (u * W + S); the same ops whether or not the write is hooked.
        y[:, t] = (r[:, t, :, None, :] @ (u * W + S)).squeeze(-2)
        S = S * w[:, t, :, :, None] + W
    return y, S, kept


def wkv6_readout(
    states: torch.Tensor, r: torch.Tensor, u: torch.Tensor, W: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Outputs ``[b, P, H, V]`` from states read at P positions ``[b, P, H, K, V]`` (possibly edited).

    ``r, k`` ``[b, P, H, K]``, ``v`` ``[b, P, H, V]`` at those positions; ``W`` the (hooked) writes
    there ``[b, P, H, K, V]`` or None for ``k v^T``; ``u`` ``[H, K]`` or ``[b, H, K]``.
    """
    r, u = r.float(), u.float()
    if u.dim() == 2:
        u = u.expand(r.shape[0], *u.shape)
    W = outer_writes(k, v) if W is None else W.float()
    return (r[..., None, :] @ (u[:, None, :, :, None] * W + states.float())).squeeze(-2)


def wkv7_scan(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor,
    *,
    writes: dict[int, torch.Tensor] | None = None,
    valid: torch.Tensor | None = None,
    keep_states: bool = False,
    keep_positions: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """RWKV-7 WKV over a call.

    Args:
        r, w, k, a, b: ``[b, L, H, K]`` (w: decay factors in (0, 1)); v: ``[b, L, H, V]``.
        state: ``[b, H, K, V]`` carried in.
        writes: position -> ``[b, H, K, V]`` replacing ``k_t v_t^T`` there.
        valid: ``[b, L]`` bool; False positions leave the state untouched.
        keep_states / keep_positions: return the states read at (i.e. after) all / these positions.

    Returns:
        ``(y [b, L, H, V], final state [b, H, K, V], states [b, L|P, H, K, V] or None)``, all fp32.
    """
    batch, length, heads, _ = r.shape
    r, w, k, v, a, b = (t.float() for t in (r, w, k, v, a, b))
    w, k, b = _prepare_valid(valid, w, k, b)
    S = state.float()
    y = v.new_empty(batch, length, heads, v.shape[-1])
    kept, where = _kept(keep_states, keep_positions, length, S)
    writes = writes or {}
    for t in range(length):
        W = _write_at(t, k, v, writes, valid)
        removed = a[:, t, :, None, :] @ S  # [b, H, 1, V]
        S = S * w[:, t, :, :, None] + b[:, t, :, :, None] * removed + W
        y[:, t] = (r[:, t, :, None, :] @ S).squeeze(-2)
        if t in where:
            kept[:, where[t]] = S
    return y, S, kept


def wkv7_readout(states: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Outputs ``[b, P, H, V]`` from states ``[b, P, H, K, V]`` read at P positions and ``r`` ``[b, P, H, K]``."""
    return (r.float()[..., None, :] @ states.float()).squeeze(-2)


def outer_writes(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The writes ``k_t v_t^T``: ``[b, P, H, K, V]`` from ``k`` ``[b, P, H, K]`` and ``v`` ``[b, P, H, V]`` (fp32)."""
    return k.float()[..., :, None] * v.float()[..., None, :]
