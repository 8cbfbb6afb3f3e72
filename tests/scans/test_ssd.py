"""The SSD scan against transformers' ``mamba2_chunk_scan`` (torch path) and against itself.

Tolerances (fp32, random inputs with |y| up to ~100): chunked and step-by-step forms within 5e-5
absolute of HF's chunk scan on ``y`` (observed ~1e-5, i.e. ~1e-7 relative) and 5e-6 on the final
state (observed ~1e-6); the write correction is exactly zero where nothing was edited.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan

from nnsight_rnn.scans.ssd import ssd_chunked, ssd_readout, ssd_recurrent, ssd_scan, ssd_write, ssd_write_delta

Y_ATOL = 5e-5
H_ATOL = 5e-6


def _inputs(groups: int, length: int = 37) -> dict[str, torch.Tensor]:
    b, H, P, N = 2, 4, 8, 16
    return {
        "x": torch.randn(b, length, H, P),
        "dt_raw": torch.randn(b, length, H),
        "dt_bias": torch.randn(H),
        "A": -torch.rand(H) * 4,
        "B": torch.randn(b, length, groups, N),
        "C": torch.randn(b, length, groups, N),
        "h0": torch.randn(b, H, P, N),
    }


def _hf(t: dict[str, torch.Tensor], chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return mamba2_chunk_scan(
        t["x"], t["dt_raw"], t["A"], t["B"], t["C"], chunk_size=chunk, D=None, dt_bias=t["dt_bias"],
        dt_softplus=True, initial_states=t["h0"], return_final_states=True,
    )  # fmt: skip


def _dt(t: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.softplus(t["dt_raw"] + t["dt_bias"])


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("chunk", [1, 5, 8, 64])
def test_chunked_matches_hf(groups: int, chunk: int) -> None:
    t = _inputs(groups)
    y_ref, h_ref = _hf(t)
    y, h = ssd_chunked(t["x"], _dt(t), t["A"], t["B"], t["C"], t["h0"], chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, atol=Y_ATOL, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=H_ATOL, rtol=0)


@pytest.mark.parametrize("groups", [1, 2])
def test_recurrent_matches_hf_and_keeps_states(groups: int) -> None:
    t = _inputs(groups)
    y_ref, h_ref = _hf(t)
    y, h, states = ssd_recurrent(t["x"], _dt(t), t["A"], t["B"], t["C"], t["h0"], keep_states=True)
    torch.testing.assert_close(y, y_ref, atol=Y_ATOL, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=H_ATOL, rtol=0)
    assert states.shape == (2, 37, 4, 8, 16)
    torch.testing.assert_close(states[:, -1], h, atol=0, rtol=0)
    torch.testing.assert_close(ssd_readout(states, t["C"]), y, atol=1e-5, rtol=0)


def test_recurrent_consumes_write() -> None:
    t = _inputs(2)
    dt = _dt(t)
    w = ssd_write(t["x"], dt, t["B"])
    y0, h0, _ = ssd_recurrent(t["x"], dt, t["A"], t["B"], t["C"], t["h0"])
    y1, h1, _ = ssd_recurrent(t["x"], dt, t["A"], t["B"], t["C"], t["h0"], write=w)
    torch.testing.assert_close(y1, y0, atol=1e-5, rtol=0)
    torch.testing.assert_close(h1, h0, atol=H_ATOL, rtol=0)


def test_write_delta_is_exact_zero_unedited_and_matches_rerun_when_edited() -> None:
    t = _inputs(2)
    dt = _dt(t)
    args = (t["x"], dt, t["A"], t["B"], t["C"])
    w = ssd_write(t["x"], dt, t["B"])
    dy, dh = ssd_write_delta(*args, w)
    assert torch.count_nonzero(dy) == 0 and torch.count_nonzero(dh) == 0
    edited = w.clone()
    edited[:, 11] = edited[:, 11] * -3.0 + 0.5
    dy, dh = ssd_write_delta(*args, edited)
    assert torch.count_nonzero(dy[:, :11]) == 0
    assert bool((dy[:, 11:].abs().amax(dim=(0, 2, 3)) > 0).all())
    y, h = ssd_chunked(*args, t["h0"], chunk_size=8)
    y_ref, h_ref, _ = ssd_recurrent(*args, t["h0"], write=edited)
    torch.testing.assert_close(y + dy, y_ref, atol=Y_ATOL, rtol=0)
    torch.testing.assert_close(h + dh, h_ref, atol=H_ATOL, rtol=0)


def test_zero_dt_positions_leave_state_untouched() -> None:
    """Padding convention: dt = 0 and x = 0 at a position = the position is absent."""
    t = _inputs(1, length=12)
    dt = _dt(t)
    dt_pad = torch.cat([torch.zeros(2, 5, 4), dt], dim=1)
    x_pad = torch.cat([torch.zeros(2, 5, 4, 8), t["x"]], dim=1)
    B_pad = torch.cat([torch.randn(2, 5, 1, 16), t["B"]], dim=1)
    C_pad = torch.cat([torch.randn(2, 5, 1, 16), t["C"]], dim=1)
    y, h = ssd_chunked(t["x"], dt, t["A"], t["B"], t["C"], t["h0"], chunk_size=4)
    y_pad, h_pad = ssd_chunked(x_pad, dt_pad, t["A"], B_pad, C_pad, t["h0"], chunk_size=4)
    torch.testing.assert_close(y_pad[:, 5:], y, atol=Y_ATOL, rtol=0)
    torch.testing.assert_close(h_pad, h, atol=H_ATOL, rtol=0)


def test_scan_single_step_matches_chunked() -> None:
    t = _inputs(2, length=1)
    dt = _dt(t)
    y, h = ssd_scan(t["x"], dt, t["A"], t["B"], t["C"], t["h0"])
    y_c, h_c = ssd_chunked(t["x"], dt, t["A"], t["B"], t["C"], t["h0"])
    torch.testing.assert_close(y, y_c, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, h_c, atol=H_ATOL, rtol=0)


def test_chunked_does_not_overflow_with_large_decays() -> None:
    """All exponents are sums of dt*A <= 0: long chunks with big steps stay finite."""
    t = _inputs(1, length=64)
    dt = torch.full((2, 64, 4), 5.0)
    y, h = ssd_chunked(t["x"], dt, t["A"] * 10, t["B"], t["C"], t["h0"], chunk_size=64)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    y_ref, h_ref, _ = ssd_recurrent(t["x"], dt, t["A"] * 10, t["B"], t["C"], t["h0"])
    torch.testing.assert_close(y, y_ref, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-4, rtol=1e-5)
