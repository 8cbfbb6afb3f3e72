"""``nnsight-rnn bench`` runs every mode on tiny stand-ins of the ~130M configs (no timing asserted)."""

from __future__ import annotations

import pytest

from nnsight_rnn import bench

from .families import gpt2, mamba, rwkv4


@pytest.mark.parametrize(("family", "factory"), [("mamba", mamba), ("rwkv4", rwkv4), ("gpt2", gpt2)])
def test_bench_runs_all_modes_twice_on_the_same_baseline(monkeypatch, family, factory, capsys):
    made = []
    monkeypatch.setattr(bench, "bench_model", lambda name: made.append(factory().eval()) or made[-1])
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


def test_the_benchmarked_families_and_their_sizes_come_from_the_cards() -> None:
    from nnsight_rnn.cards import get_card

    assert {"mamba", "mamba2", "rwkv4", "gpt2"} <= set(bench.benchmarked_families())
    for family in bench.benchmarked_families():
        card = get_card(family)
        config = __import__("transformers").AutoConfig.for_model(card.model_types[0], **card.bench_config)
        assert config.model_type in card.model_types  # the card's config builds its own family
        for key, value in card.bench_config.items():
            assert getattr(config, key) == value, (family, key)
    assert get_card("mamba").tl_bridge.state_pos_dim == 2 and get_card("rwkv4").tl_bridge.state_pos_dim is None
    with pytest.raises(ValueError, match=r"no \[bench\] config; benchmarked families: \[.*'mamba'"):
        bench.bench_model("llama")
