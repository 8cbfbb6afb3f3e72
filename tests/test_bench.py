"""``nnsight-rnn bench`` runs every mode on tiny stand-ins of the ~130M configs (no timing asserted)."""

from __future__ import annotations

import pytest

from nnsight_rnn import bench

from .families import gpt2, mamba, rwkv4


@pytest.mark.parametrize(("family", "factory"), [("mamba", mamba), ("rwkv4", rwkv4), ("gpt2", gpt2)])
def test_bench_runs_all_modes_twice_on_the_same_baseline(monkeypatch, family, factory, capsys):
    made = []
    monkeypatch.setitem(bench.SIZES, family, lambda: made.append(factory().eval()) or made[-1])
    # two configurations: the second one reuses the baseline model the first one benchmarked
    results = bench.run([family], [1, 2], [12], None, repeats=1)
    modes = {"hf", "nnsight", "rnn_idle", "rnn_resid"} | ({"rnn_states", "rnn_traj"} if family != "gpt2" else set())
    for batch in (1, 2):
        got = {r.mode for r in results if r.batch == batch}
        assert modes <= got, (batch, got)
    assert all(r.seconds > 0 and r.tokens_per_s > 0 for r in results)
    assert f"-- {family} batch 2 seq 12" in capsys.readouterr().out
    # the stock baseline is never instrumented by the plain-nnsight mode (it wraps a copy)
    assert not any("__nnsight__" in m.__dict__ for m in made[0].modules())
