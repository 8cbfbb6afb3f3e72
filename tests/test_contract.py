"""The upstream contract layer (nnsight_rnn.upstream) and its load-time check (nnsight_rnn.contract)."""

from __future__ import annotations

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM

import nnsight_rnn
import nnsight_rnn.mixers.mamba1 as mamba1_module
from nnsight_rnn import contract, upstream
from nnsight_rnn.cli import main as cli_main

from .families import mamba


@pytest.fixture
def fresh_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which families this process has checked, so install() checks again."""
    monkeypatch.setattr(contract, "_checked", {})
    monkeypatch.setenv(contract.CONTRACT_ENV, "1")


def test_doctor_passes_on_the_installed_release(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"transformers {upstream.version_of('transformers')}" in out
    for family, card in nnsight_rnn.all_cards().items():
        line = next(line for line in out.splitlines() if line.strip().startswith(family + " "))
        assert ("ok" in line) if card.is_recurrent else ("-" in line), line


@pytest.mark.usefixtures("fresh_contract")
def test_a_mixer_that_no_longer_sees_the_cache_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    # What transformers 5.24's rename of cache_params did to main: the mixer got no cache, silently.
    monkeypatch.setattr(mamba1_module, "cache_argument", lambda explicit, kwargs: None)
    with pytest.raises(upstream.UpstreamContractError) as error:
        nnsight_rnn.install(mamba())
    message = str(error.value)
    assert "'mamba'" in message and "edit" in message and "round_trip" in message
    assert f"transformers {upstream.version_of('transformers')}" in message  # the installed versions
    assert "tested with transformers 5.23-" in message  # and the supported range


@pytest.mark.usefixtures("fresh_contract")
def test_a_cache_layout_change_fails_loudly() -> None:
    # A release that renames the cache layer's storage: an error naming the layout, never a wrong number.
    cfg = MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, intermediate_size=32)
    model = nnsight_rnn.install(MambaForCausalLM(cfg).eval())
    cache = upstream.new_linear_cache(model.config)
    ids = torch.randint(0, 64, (1, 5))
    out = model(ids, use_cache=True, **upstream.mamba_cache_kwargs(cache))
    for layer in upstream.output_cache(out).layers:
        del layer.has_previous_state
    with pytest.raises(upstream.UpstreamContractError, match="linear-attention layer layout"):
        upstream.read_linear_cache(upstream.output_cache(out), 0)


@pytest.mark.usefixtures("fresh_contract")
def test_the_check_runs_once_per_family(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = contract.run_checks
    monkeypatch.setattr(contract, "run_checks", lambda card, *a: calls.append(card.family) or real(card, *a))
    nnsight_rnn.install(mamba())
    nnsight_rnn.install(mamba())
    assert calls == ["mamba"]


def test_versions_outside_the_tested_range_are_named() -> None:
    low, high = upstream.TESTED["transformers"]
    assert upstream.in_tested_range("transformers", f"{low}.0")
    assert upstream.in_tested_range("transformers", f"{high}.3")
    major, minor = upstream.minor(high)
    assert not upstream.in_tested_range("transformers", f"{major}.{minor + 1}.0")
    assert upstream.in_tested_range("transformers"), upstream.versions_line()  # CI installs a tested release


def test_two_caches_are_both_written_and_refused_when_they_disagree() -> None:
    a, b = object(), object()
    assert upstream.cache_argument(None, {"cache_params": a}) == [a]
    assert upstream.cache_argument(a, {"cache": a}) == [a]
    assert upstream.cache_argument(a, {"past_key_values": b}) == [a, b]
    model = nnsight_rnn.install(mamba())
    ids = torch.randint(0, 64, (1, 6))
    fresh = upstream.new_linear_cache(model.config)
    full = model(ids, use_cache=True)
    # A caller's cache under an old name next to a fresh one: the state is read from the one that has it...
    one = upstream.output_cache(model(ids[:, :4], use_cache=True))
    kwargs = {
        **upstream.mamba_cache_kwargs(fresh),
        "past_key_values" if upstream.MAMBA_CACHE_NAME == "cache" else "cache": one,
    }
    with torch.no_grad():
        out = model.backbone.layers[0].mixer(model.backbone.embeddings(ids[:, 4:]), **kwargs)
    assert out.shape == (1, 2, 32)
    # ...and written into both.
    for cache in (one, fresh):
        assert upstream.read_linear_cache(cache, 0)[1] is not None
    # Two caches with different states: an error, not a guess.
    other = upstream.output_cache(full)
    with pytest.raises(upstream.UpstreamContractError, match="different states"):
        upstream.read_linear_cache([one, other], 1)
