"""The WKV recurrences against fla's naive reference functions, and their padding / edit / readout contracts.

Tolerance: fp32, inputs of unit scale over 24 steps; observed differences ~1e-6 (different association
of the same products), asserted within 1e-5.
"""

from __future__ import annotations

import torch

from nnsight_rnn.scans.wkv import outer_writes, wkv6_readout, wkv6_scan, wkv7_readout, wkv7_scan

from ..models.fla_refs import dplr_recurrence, naive_recurrent_rwkv6

ATOL = 1e-5
B, L, H, N = 2, 24, 3, 8


def _v7_inputs() -> tuple[torch.Tensor, ...]:
    r, k, v = torch.randn(B, L, H, N), torch.randn(B, L, H, N), torch.randn(B, L, H, N)
    w = torch.exp(-0.6 * torch.rand(B, L, H, N))
    kk = torch.nn.functional.normalize(torch.randn(B, L, H, N), dim=-1)
    iclr = torch.rand(B, L, H, N)
    return r, w, k, v, -kk, kk * iclr


def _bhtd(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).contiguous()


def test_wkv7_matches_fla_dplr_recurrence() -> None:
    r, w, k, v, a, b = _v7_inputs()
    s0 = torch.randn(B, H, N, N)
    y, last, _ = wkv7_scan(r, w, k, v, a, b, s0)
    ref = dplr_recurrence()
    # fla scales q by K^-0.5 inside; gk is the log-decay.
    o, s = ref(_bhtd(r) * N**0.5, _bhtd(k), _bhtd(v), _bhtd(a), _bhtd(b), _bhtd(w.log()), initial_state=s0)
    torch.testing.assert_close(y, o.transpose(1, 2), atol=ATOL, rtol=0)
    torch.testing.assert_close(last, s, atol=ATOL, rtol=0)


def test_wkv6_matches_fla_naive_rwkv6() -> None:
    r, k, v = torch.randn(B, L, H, N), torch.randn(B, L, H, N), torch.randn(B, L, H, N)
    w = torch.exp(-torch.exp(torch.randn(B, L, H, N) - 1))
    u = torch.randn(H, N)
    s0 = torch.randn(B, H, N, N)
    y, last, _ = wkv6_scan(r, w, k, v, u, s0)
    o, s = naive_recurrent_rwkv6()(
        _bhtd(r), _bhtd(k), _bhtd(v), _bhtd(w.log()), u, scale=1.0, initial_state=s0, output_final_state=True
    )
    torch.testing.assert_close(y, o.transpose(1, 2), atol=ATOL, rtol=0)
    torch.testing.assert_close(last, s, atol=ATOL, rtol=0)
    # RWKV-5: a decay constant over time broadcasts from [b, 1, H, K].
    y5, last5, _ = wkv6_scan(r, w[:, :1], k, v, u, s0)
    o5, s5 = naive_recurrent_rwkv6()(
        _bhtd(r), _bhtd(k), _bhtd(v), _bhtd(w[:, :1].expand_as(w).log()), u, scale=1.0, initial_state=s0,
        output_final_state=True,
    )  # fmt: skip
    torch.testing.assert_close(y5, o5.transpose(1, 2), atol=ATOL, rtol=0)
    torch.testing.assert_close(last5, s5, atol=ATOL, rtol=0)


def test_invalid_positions_are_skipped_exactly() -> None:
    r, w, k, v, a, b = _v7_inputs()
    u = torch.randn(H, N)
    valid = torch.rand(B, L) > 0.3
    valid[:, 0] = True
    for row in range(B):
        keep = valid[row]
        sl = (slice(row, row + 1),)
        y7, s7, _ = wkv7_scan(r, w, k, v, a, b, torch.zeros(B, H, N, N), valid=valid)
        c7, cs7, _ = wkv7_scan(*(t[sl][:, keep] for t in (r, w, k, v, a, b)), torch.zeros(1, H, N, N))
        torch.testing.assert_close(y7[row, keep], c7[0], atol=0, rtol=0)
        torch.testing.assert_close(s7[row], cs7[0], atol=0, rtol=0)
        y6, s6, _ = wkv6_scan(r, w, k, v, u, torch.zeros(B, H, N, N), valid=valid)
        c6, cs6, _ = wkv6_scan(*(t[sl][:, keep] for t in (r, w, k, v)), u, torch.zeros(1, H, N, N))
        torch.testing.assert_close(y6[row, keep], c6[0], atol=0, rtol=0)
        torch.testing.assert_close(s6[row], cs6[0], atol=0, rtol=0)


def test_unedited_writes_and_readouts_reproduce_the_scan() -> None:
    r, w, k, v, a, b = _v7_inputs()
    u = torch.randn(H, N)
    s0 = torch.randn(B, H, N, N)
    writes = outer_writes(k, v)
    by_pos = {t: writes[:, t] for t in range(L)}
    y7, s7, states7 = wkv7_scan(r, w, k, v, a, b, s0, keep_states=True)
    y7w, s7w, _ = wkv7_scan(r, w, k, v, a, b, s0, writes=by_pos)
    torch.testing.assert_close(y7w, y7, atol=ATOL, rtol=0)
    torch.testing.assert_close(s7w, s7, atol=ATOL, rtol=0)
    torch.testing.assert_close(wkv7_readout(states7, r), y7, atol=ATOL, rtol=0)
    assert torch.equal(states7[:, -1], s7)  # RWKV-7 reads the state after its update
    y6, _, states6 = wkv6_scan(r, w, k, v, u, s0, keep_states=True)
    y6w, _, _ = wkv6_scan(r, w, k, v, u, s0, writes=by_pos)
    torch.testing.assert_close(y6w, y6, atol=ATOL, rtol=0)
    assert torch.equal(states6[:, 0], s0)  # RWKV-5/6 read the state before t's write
    torch.testing.assert_close(wkv6_readout(states6, r, u, None, k, v), y6, atol=ATOL, rtol=0)
    torch.testing.assert_close(wkv6_readout(states6, r, u, writes, k, v), y6, atol=ATOL, rtol=0)
    # Selected positions hold the same states, in the order asked.
    _, _, some = wkv7_scan(r, w, k, v, a, b, s0, keep_states=True, keep_positions=[7, 2])
    assert torch.equal(some, states7[:, [7, 2]])


def test_gradients_match_fla_references() -> None:
    """Autograd through our scans equals autograd through fla's naive recurrences (inputs and initial state)."""
    r, w, k, v, a, b = _v7_inputs()
    u = torch.randn(H, N)
    s0 = torch.randn(B, H, N, N)
    ours7 = [t.clone().requires_grad_(True) for t in (r, w, k, v, a, b, s0)]
    y, last, _ = wkv7_scan(*ours7)
    (y.square().sum() + last.sum()).backward()
    ref7 = [t.clone().requires_grad_(True) for t in (r, w, k, v, a, b, s0)]
    rr, rw, rk, rv, ra, rb, rs = ref7
    o, s = dplr_recurrence()(
        _bhtd(rr) * N**0.5, _bhtd(rk), _bhtd(rv), _bhtd(ra), _bhtd(rb), _bhtd(rw.log()), initial_state=rs
    )
    (o.transpose(1, 2).square().sum() + s.sum()).backward()
    for mine, theirs in zip(ours7, ref7, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-4, rtol=1e-4)

    w6 = torch.exp(-torch.exp(torch.randn(B, L, H, N) - 1))
    ours6 = [t.clone().requires_grad_(True) for t in (r, w6, k, v, u, s0)]
    y, last, _ = wkv6_scan(*ours6)
    (y.square().sum() + last.sum()).backward()
    ref6 = [t.clone().requires_grad_(True) for t in (r, w6, k, v, u, s0)]
    rr, rw, rk, rv, ru, rs = ref6
    o, s = naive_recurrent_rwkv6()(
        _bhtd(rr), _bhtd(rk), _bhtd(rv), _bhtd(rw.log()), ru, scale=1.0, initial_state=rs, output_final_state=True
    )
    (o.transpose(1, 2).square().sum() + s.sum()).backward()
    for mine, theirs in zip(ours6, ref6, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-4, rtol=1e-4)
