"""The chunked selective scan against a step-by-step reference, initial states included.

Reference: the recurrence written out as in the Mamba paper (and mamba-ssm's ``selective_scan_ref``):
    h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t,   y_t = h_t . C_t
Tolerance: 1e-5 absolute in fp32 (observed ~1e-6).
"""

from __future__ import annotations

import pytest
import torch

from nnsight_rnn.scans.selective_scan import readout, selective_scan, state_write


def reference(u, dt, A, B, C, h0):
    h = h0.clone()
    ys, hs = [], []
    for t in range(u.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        hs.append(h)
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1), h, torch.stack(hs, 1)


def _inputs(batch=2, length=45, d=12, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, d, generator=g)
    dt = torch.rand(batch, length, d, generator=g) * 0.5
    A = -torch.rand(d, n, generator=g) * 2
    B = torch.randn(batch, length, n, generator=g)
    C = torch.randn(batch, length, n, generator=g)
    h0 = torch.randn(batch, d, n, generator=g)
    return u, dt, A, B, C, h0


@pytest.mark.parametrize("chunk", [1, 7, 32, 64])
@pytest.mark.parametrize("grad", [False, True])
def test_matches_reference_with_initial_state(chunk, grad):
    u, dt, A, B, C, h0 = _inputs()
    y_ref, h_ref, states_ref = reference(u, dt, A, B, C, h0)
    with torch.set_grad_enabled(grad):
        if grad:
            u = u.requires_grad_(True)
        y, h, states = selective_scan(u, dt, A, B, C, h0, keep_states=True, chunk=chunk)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(states, states_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(readout(states, C), y_ref, atol=1e-5, rtol=0)


def test_selected_positions_and_given_write():
    u, dt, A, B, C, h0 = _inputs()
    _, _, states_ref = reference(u, dt, A, B, C, h0)
    _, _, picked = selective_scan(u, dt, A, B, C, h0, keep_states=True, keep_positions=[40, 0, 33], chunk=8)
    torch.testing.assert_close(picked, states_ref[:, [40, 0, 33]], atol=1e-5, rtol=0)
    y1, h1, _ = selective_scan(u, dt, A, B, C, h0)
    y2, h2, _ = selective_scan(u, dt, A, B, C, h0, write=state_write(u, dt, B))
    torch.testing.assert_close(y2, y1, atol=1e-5, rtol=0)
    torch.testing.assert_close(h2, h1, atol=1e-5, rtol=0)


def test_gradients_match_reference():
    u, dt, A, B, C, h0 = _inputs(length=20)
    leaves = [t.clone().requires_grad_(True) for t in (u, dt, A, B, C, h0)]
    y, h, _ = selective_scan(*leaves, chunk=6)
    (y.square().sum() + h.sum()).backward()
    ref_leaves = [t.clone().requires_grad_(True) for t in (u, dt, A, B, C, h0)]
    y_r, h_r, _ = reference(*ref_leaves)
    (y_r.square().sum() + h_r.sum()).backward()
    for a, b in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-5)


def test_matches_mamba_ssm_selective_scan_ref_with_initial_state():
    """Against the Mamba authors' ``selective_scan_ref`` (mamba-ssm, pure torch, from its PyPI sdist).

    The reference has no initial-state argument, so the initial state is produced by a prefix:
    ``ref(prefix + suffix)`` must equal our scan of the suffix started from our prefix's final state.
    """
    from ..upstream_refs import selective_scan_ref

    ref = selective_scan_ref()
    u, dt, A, B, C, _ = _inputs(length=48)
    D = torch.randn(u.shape[-1])
    z = torch.randn_like(u)
    # Reference layout: u, delta, z [b, d, L]; B, C [b, N, L].
    y_ref, last_ref = ref(
        u.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=D,
        z=z.transpose(1, 2), return_last_state=True,
    )  # fmt: skip
    y_ref = y_ref.transpose(1, 2)
    cut = 19
    h0 = torch.zeros(u.shape[0], u.shape[-1], A.shape[1])
    y1, h1, _ = selective_scan(u[:, :cut], dt[:, :cut], A, B[:, :cut], C[:, :cut], h0, chunk=8)
    y2, h2, _ = selective_scan(u[:, cut:], dt[:, cut:], A, B[:, cut:], C[:, cut:], h1, chunk=8)
    y = torch.cat([y1, y2], 1)
    ours = (y + u * D) * torch.nn.functional.silu(z)
    torch.testing.assert_close(ours, y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(h2, last_ref, atol=1e-5, rtol=0)
