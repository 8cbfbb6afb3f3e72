"""Remote traces (NDIF) on every card: model keys, nnsight's ``remote="local"`` and an in-process server.

Each card's tiny model is saved to a folder (``save_pretrained`` + the byte tokenizer) and loaded
with ``nnsight_rnn.load(folder)``; in-memory models have no key. Every trace runs three ways and
the results must be **identical** (``torch.equal``, no tolerance):

- ``local``: an ordinary trace;
- ``remote="local"``: nnsight's own dry run of the remote path (serialise, deserialise with the
  client's modules hidden, run on the client's model);
- ``server``: :class:`nnsight_rnn.remote.LocalServer`, an in-process ndif 0.1.2 model actor that
  rebuilds the model **from its key** (a separate model object), deserialises against it, runs the
  block on a worker thread and returns ``torch.save``\\ d saves, or a ``RemoteError``.

The hub is never called (``HfApi.model_info`` raises in every test). Payload sizes are recorded
by wrapping ``RequestModel.serialize`` and printed at the end of the module (``-s``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from nnsight.intervention.backends.remote import RemoteError
from nnsight.modeling.mixins.remotable import Remotable
from nnsight.schema.request import RequestModel

import nnsight_rnn
from nnsight_rnn import remote
from nnsight_rnn.mixers import HookableMixer
from nnsight_rnn.tokenizer import byte_tokenizer

from .families import FAMILIES, RECURRENT, STATE_HOOKS

LAYER = 1
HOWS = ("local", "remote_local", "server")
PAYLOAD_LIMIT = 100_000
"""Bytes. A 3-layer tiny model's request is ~9-15 KB raw; its weights alone are 140-200 KB (fp32)."""

PAYLOADS: list[tuple[str, str, int]] = []
"""(family, test, raw payload bytes) of every serialised request, reported at the end."""


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders and zoo models must be keyed, sized and rebuilt without the hub."""
    import huggingface_hub

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"the hub was called: model_info{args}")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", refuse)


@pytest.fixture(autouse=True)
def _record_payloads(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    original = RequestModel.serialize.__func__  # type: ignore[attr-defined]

    def serialize(cls: type, tracer: Any, compress: bool = False) -> bytes:
        blob = original(cls, tracer, compress)
        raw = remote._decompress(blob) if compress else blob
        family = request.node.callspec.params.get("family", "-") if hasattr(request.node, "callspec") else "-"
        PAYLOADS.append((family, request.node.originalname, len(raw)))
        return blob

    monkeypatch.setattr(RequestModel, "serialize", classmethod(serialize))


class Setup:
    """One card's saved folder, its client model and an in-process server."""

    def __init__(self, family: str, folder: Path) -> None:
        self.family = family
        self.folder = folder
        FAMILIES[family]().save_pretrained(folder)
        byte_tokenizer().save_pretrained(folder)
        self.model = nnsight_rnn.load(str(folder))
        self.server = remote.LocalServer()
        self.recurrent = family in RECURRENT

    def how(self, how: str) -> dict[str, Any]:
        """Trace kwargs that route a trace ``how``."""
        if how == "local":
            return {}
        if how == "remote_local":
            return {"remote": "local"}
        return {"backend": self.server.backend(self.model)}


_SETUPS: dict[str, Setup] = {}


@pytest.fixture(params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def setup(family: str, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    if family not in _SETUPS:
        _SETUPS[family] = Setup(family, tmp_path_factory.mktemp(family))
    return _SETUPS[family]


def _all_equal(results: dict[str, Any]) -> None:
    """Every route gave bit-identical values (tensors, lists/tuples/dicts of tensors)."""
    base = results["local"]
    for how, value in results.items():
        _assert_identical(value, base, how)


def _assert_identical(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where}: max diff {(a.float() - b.float()).abs().max().item()}"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for x, y in zip(a, b, strict=True):
            _assert_identical(x, y, where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_identical(a[k], b[k], f"{where}[{k}]")
    else:
        assert a == b, where


# ---------------------------------------------------------------------------------------------
# model keys
# ---------------------------------------------------------------------------------------------


def test_key_round_trips_to_identical_hooked_tree(setup: Setup) -> None:
    """Key -> meta tree (ndif's sandbox runner) and dispatched tree (its actor) == the client's tree."""
    model = setup.model
    key = model.to_model_key()
    path, data = remote.split_key(key)
    assert path == "nnsight_rnn.model.HookedLanguageModel"
    assert data == {"repo_id": str(setup.folder), "revision": None, "task": "text-generation", "card": setup.family}

    meta = remote.rebuild(key)  # what an ndif sandbox runner builds: structure, no weights
    real = remote.rebuild(key, dispatch=True, dtype="float32", device="cpu")  # an ndif actor's arguments
    assert isinstance(real, nnsight_rnn.HookedLanguageModel) and real is not model
    tree = remote.module_tree(model)
    assert remote.module_tree(meta) == tree
    assert remote.module_tree(real) == tree
    assert set(real._remoteable_persistent_objects()) == set(model._remoteable_persistent_objects())
    assert list(real.hook_points()) == list(model.hook_points())
    if setup.recurrent:
        assert len(model.hook_points()) > 0
        assert all(isinstance(layer.mixer._module, HookableMixer) for layer in real.layers)
    assert next(meta._module.parameters()).device.type == "meta"
    state, got = model._module.state_dict(), real._module.state_dict()
    assert state.keys() == got.keys()
    assert all(torch.equal(state[k], got[k]) for k in state)
    assert real.to_model_key() == meta.to_model_key() == key
    assert remote.model_key(str(setup.folder)) == key  # minted without loading the model


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dispatch": True, "dtype": "float32", "device": "cpu"},  # ndif 0.1.2, one device
        {"dispatch": True, "dtype": "float32", "device_map": {"": "cpu"}, "max_memory": {"cpu": 2**30}},  # several
        {"dispatch": True, "torch_dtype": torch.float32, "device_map": "auto"},  # older servers
        {"dispatch": True, "dtype": "bfloat16", "trust_remote_code": False},
    ],
    ids=["device", "device_map", "torch_dtype", "bfloat16"],
)
def test_rebuild_accepts_server_loader_arguments(kwargs: dict[str, Any], tmp_path: Path) -> None:
    setup = Setup("mamba", tmp_path)
    model = remote.rebuild(setup.model.to_model_key(), **kwargs)
    ids = torch.randint(0, 257, (2, 8))
    with torch.no_grad(), model.trace(ids):
        state = model.layers[LAYER].mixer.hook_ssm_state.output.save()
        logits = model.output.logits.save()
    want = torch.bfloat16 if kwargs.get("dtype") == "bfloat16" else torch.float32
    assert next(model._module.parameters()).dtype == want
    assert state.shape[:2] == (2, 8) and torch.isfinite(logits).all()
    if want == torch.float32:
        with torch.no_grad(), setup.model.trace(ids):
            ref = setup.model.output.logits.save()
        assert torch.equal(logits, ref)


def test_zoo_name_key_needs_neither_hub_nor_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``zoo/<name>`` keys name the zoo model; the server resolves the name with ``zoo_path``."""
    import nnsight_rnn.zoo as zoo

    spec = zoo.get_spec("zoo/mamba-tiny")
    key = remote.model_key("zoo/mamba-tiny")  # no folder, no training
    assert remote.weights_bytes("zoo/mamba-tiny", "bfloat16") > 0  # sized from the registry: nothing trained
    assert remote.split_key(key)[1] == {
        "repo_id": "zoo/mamba-tiny",
        "revision": None,
        "task": "text-generation",
        "card": spec.family,
    }
    folder = Setup("mamba", tmp_path).folder  # stands in for the trained, cached zoo folder
    calls: list[str] = []

    def fake_zoo_path(name: str, *, build: bool = True, progress: bool = True) -> str:
        calls.append(name)
        return str(folder)

    monkeypatch.setattr(zoo, "zoo_path", fake_zoo_path)
    client = nnsight_rnn.load("zoo/mamba-tiny")
    assert client.to_model_key() == key
    server = remote.LocalServer()
    ids = torch.randint(0, 257, (1, 6))
    with torch.no_grad(), client.trace(ids):
        want = client.output.logits.save()
    with torch.no_grad(), client.trace(ids, backend=server.backend(client)):
        got = client.output.logits.save()
    assert torch.equal(got, want)
    assert set(calls) == {"zoo/mamba-tiny"} and len(calls) >= 2  # client load(s), server rebuild
    assert remote.module_tree(server.model(key)) == remote.module_tree(client)


def test_in_memory_model_has_no_key_but_runs_remote_local() -> None:
    model = nnsight_rnn.load(FAMILIES["mamba"]())
    with pytest.raises(remote.RemoteKeyError, match=r"save_pretrained\(folder\)"):
        model.to_model_key()
    ids = torch.randint(0, 257, (1, 6))
    with torch.no_grad(), model.trace(ids):
        want = model.output.logits.save()
    with torch.no_grad(), model.trace(ids, remote="local"):
        got = model.output.logits.save()
    assert torch.equal(got, want)


def test_folder_without_hf_config_has_no_key(tmp_path: Path) -> None:
    """A model converted in memory from an original-format folder names that folder; it cannot be rebuilt."""
    model = Setup("mamba", tmp_path / "hf").model
    original = tmp_path / "original"
    original.mkdir()
    model.model_source = model.repo_id = str(original)  # what a converted original-format folder looks like
    with pytest.raises(remote.RemoteKeyError, match=r"no config\.json"):
        model.to_model_key()


def test_checkpoint_description_without_hub(tmp_path: Path) -> None:
    """What an NDIF controller asks before placing a model, answered from the folder."""
    setup = Setup("mamba", tmp_path)
    key = setup.model.to_model_key()
    n_params = sum(p.nelement() for p in setup.model._module.parameters())
    elements = n_params + sum(b.nelement() for b in setup.model._module.buffers())
    info = Remotable.describe_checkpoint(key, "float32")
    assert info.n_params == n_params and info.size_bytes == 4 * elements
    assert info.config.model_type == "mamba"
    assert Remotable.estimate_bytes(key, "bfloat16") == 2 * elements
    assert Remotable.max_tp_size(key) is None


def test_cli_commands(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands docs/remote.md gives: key, check, deploy-config."""
    folder = str(setup.folder)
    key = setup.model.to_model_key()
    assert remote.main(["key", folder]) == 0
    assert capsys.readouterr().out.strip() == key
    assert remote.main(["check", folder]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["key"] == key and report["family"] == setup.family
    assert report["hook_points"] == len(setup.model.hook_points())
    assert remote.main(["check", key, "--dtype", "bfloat16"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "torch.bfloat16"
    assert remote.main(["deploy-config", folder]) == 0
    config = capsys.readouterr().out
    assert f"    model_key: '{key}'\n" in config
    assert "    envoy_class: nnsight_rnn.model.HookedLanguageModel\n" in config
    assert f"  - checkpoint: {folder}\n" in config
    assert f"    size_bytes: {Remotable.describe_checkpoint(key, 'float32').size_bytes}\n" in config


def test_guide_commands_exist_and_run(tmp_path: Path) -> None:
    """Every ``python -m nnsight_rnn.remote`` command in docs/remote.md is one the CLI has; ``key`` runs as written."""
    import re
    import subprocess
    import sys

    guide = (Path(__file__).resolve().parents[1] / "docs" / "remote.md").read_text()
    used = set(re.findall(r"python -m nnsight_rnn\.remote (\S+)", guide))
    assert used == {"key", "check", "deploy-config"}, used
    setup = Setup("gpt2", tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "nnsight_rnn.remote", "key", str(setup.folder)],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.stdout.strip() == setup.model.to_model_key()


# ---------------------------------------------------------------------------------------------
# traces through the remote path, every card
# ---------------------------------------------------------------------------------------------


def test_residual_read_and_write(setup: Setup) -> None:
    model = setup.model
    ids = torch.randint(0, 257, (2, 8))
    results = {}
    for how in HOWS:
        with torch.no_grad(), model.trace(ids, **setup.how(how)):
            resid = model.layers[0].output.save()
            model.layers[LAYER].output[:, 3] = model.layers[LAYER].output[:, 3] * 2.0 + 0.5
            after = model.layers[LAYER + 1].output.save()
            logits = model.output.logits.save()
        results[how] = (resid, after, logits)
    _all_equal(results)
    with torch.no_grad(), model.trace(ids):
        clean = model.output.logits.save()
    diff = (results["server"][2] - clean).abs().amax(dim=(0, 2))
    assert torch.all(diff[:3] == 0) and torch.all(diff[3:] > 0)  # the write took effect, from position 3 on


@pytest.mark.parametrize("family", RECURRENT)
def test_state_read_and_write(setup: Setup) -> None:
    """Per-position readout states read, the per-position write zeroed at t (propagating)."""
    family = setup.family
    model = setup.model
    write, readout, carried_in = STATE_HOOKS[family]
    carried_out = carried_in.replace("_in", "_out")
    ids = torch.randint(0, 257, (2, 8))
    results = {}
    for how in HOWS:
        with torch.no_grad(), model.trace(ids, **setup.how(how)):
            mixer = model.layers[LAYER].mixer
            state_in = mixer.get(carried_in).output.save()
            mixer.get(write).output[:, 4] = 0
            states = mixer.get(readout).output.save()
            state_out = mixer.get(carried_out).output.save()
            logits = model.output.logits.save()
        results[how] = (state_in, states, state_out, logits)
    _all_equal(results)
    states, logits = results["server"][1], results["server"][3]
    assert states.shape[:2] == (2, 8)
    with torch.no_grad(), model.trace(ids):
        clean = model.output.logits.save()
    diff = (logits - clean).abs().amax(dim=(0, 2))
    assert torch.all(diff[:4] == 0) and torch.all(diff[4:] > 0)


@pytest.mark.parametrize("family", RECURRENT)
def test_carried_state_in_via_state_and_out_via_cache(setup: Setup) -> None:
    """``state=RecurrentState`` travels in the request; the carried state comes back in the output.

    Also edits the carried-in state inside the trace (``hook_*_state_in``), which needs no
    client-side state at all.
    """
    family = setup.family
    model = setup.model
    _, _, carried_in = STATE_HOOKS[family]
    ids = torch.randint(0, 257, (2, 12))
    state = model.run_state(ids[:, :7])
    results = {}
    for how in HOWS:
        with torch.no_grad(), model.trace(ids[:, :7], use_cache=True, **setup.how(how)):
            prefix_out = model.output.save()
        with torch.no_grad(), model.trace(ids[:, 7:], state=state, **setup.how(how)):
            suffix = model.output.logits.save()
        with torch.no_grad(), model.trace(ids[:, 7:], state=state, **setup.how(how)):
            hook = model.layers[LAYER].mixer.get(carried_in)
            hook.output[:] = hook.output * 0.5
            edited = model.output.logits.save()
        carried = model.state_from_output(prefix_out)
        results[how] = (carried.layers, suffix, edited)
    _all_equal(results)
    for layer, want in zip(results["server"][0], state.layers, strict=True):  # state out == run_state's
        _assert_identical(layer, want, "carried out")
    with torch.no_grad(), model.trace(ids):
        full = model.output.logits.save()
    torch.testing.assert_close(results["server"][1], full[:, 7:], atol=1e-5, rtol=0)
    assert (results["server"][2] - results["server"][1]).abs().max() > 1e-4


def test_generate_with_per_step_state_hooks(setup: Setup) -> None:
    """Per decode step: read the carried-in state, edit the readout at step k, read the logits."""
    model = setup.model
    steps, k = 4, 2
    ids = torch.randint(0, 257, (1, 5))
    gen = {"max_new_tokens": steps, "min_new_tokens": steps, "do_sample": False}
    _, readout, carried_in = STATE_HOOKS.get(setup.family, (None, None, None))
    results = {}
    for how in HOWS:
        if setup.recurrent:
            with torch.no_grad(), model.generate(ids, **gen, **setup.how(how)) as tracer:
                carried = list().save()
                logits = list().save()
                for step in tracer.iter[:steps]:
                    mixer = model.layers[LAYER].mixer
                    carried.append(mixer.get(carried_in).output.clone())
                    if step == k:
                        mixer.get(readout).output[:, -1] = mixer.get(readout).output[:, -1] * -50.0
                    logits.append(model.output.logits[:, -1].clone())
                tokens = tracer.result.save()
        else:
            with torch.no_grad(), model.generate(ids, **gen, **setup.how(how)) as tracer:
                carried = list().save()
                logits = list().save()
                for step in tracer.iter[:steps]:
                    carried.append(model.layers[LAYER].output[:, -1].clone())
                    if step == k:
                        model.layers[LAYER].output[:, -1] = model.layers[LAYER].output[:, -1] * -50.0
                    logits.append(model.output.logits[:, -1].clone())
                tokens = tracer.result.save()
        results[how] = (carried, logits, tokens)
    _all_equal(results)
    carried, logits, tokens = results["server"]
    assert len(carried) == len(logits) == steps and tokens.shape == (1, 5 + steps)
    with torch.no_grad(), model.generate(ids, **gen) as tracer:
        clean = list().save()
        for _ in tracer.iter[:steps]:
            clean.append(model.output.logits[:, -1].clone())
    for step in range(steps):  # the edit at step k changed step k on, never before
        same = torch.equal(logits[step], clean[step])
        assert same == (step < k), step


def test_intervention_error_comes_back_as_remote_error(setup: Setup) -> None:
    """A failing block raises ``RemoteError`` carrying the server's traceback; the server keeps serving."""
    model = setup.model
    ids = torch.randint(0, 257, (1, 6))
    with pytest.raises(RemoteError) as info, torch.no_grad(), model.trace(ids, **setup.how("server")):
        model.layers[LAYER].output[:, 99] = 0
    message = str(info.value)
    assert "IndexError" in message and "index 99 is out of bounds" in message
    assert "model.layers[LAYER].output[:, 99] = 0" in message  # the user's line, shown from the shipped source
    assert "test_remote.py" in message
    with pytest.raises(IndexError, match="index 99 is out of bounds"), torch.no_grad():  # remote="local": as local
        with model.trace(ids, remote="local"):
            model.layers[LAYER].output[:, 99] = 0
    with torch.no_grad(), model.trace(ids):
        want = model.output.logits.save()
    with torch.no_grad(), model.trace(ids, **setup.how("server")):
        got = model.output.logits.save()
    assert torch.equal(got, want)
    assert [r["ok"] for r in setup.server.requests[-2:]] == [False, True]


@pytest.mark.parametrize("family", RECURRENT)
def test_state_error_comes_back_as_remote_error(setup: Setup) -> None:
    """nnsight-rnn's own checks run on the server and keep their message (and fix) in the RemoteError."""
    model = setup.model
    ids = torch.randint(0, 257, (2, 6))
    state = model.run_state(ids[:1, :3])  # batch 1 for a batch-2 trace
    with pytest.raises(RemoteError, match=r"StateShapeError(.|\n)*use state\.expand\(batch\)"), torch.no_grad():
        with model.trace(ids, state=state, **setup.how("server")):
            model.output.logits.save()


def test_meta_client_without_weights(setup: Setup) -> None:
    """A client that never loads weights (NDIF's usual case) gets the local results from the server."""
    meta = nnsight_rnn.HookedLanguageModel(str(setup.folder))
    assert next(meta._module.parameters()).device.type == "meta"
    ids = torch.randint(0, 257, (2, 7))
    with torch.no_grad(), setup.model.trace(ids):
        want = setup.model.output.logits.save()
    with torch.no_grad(), meta.trace(ids, backend=setup.server.backend(meta)):
        got = meta.output.logits.save()
    assert torch.equal(got, want)
    assert next(meta._module.parameters()).device.type == "meta"  # still no weights on the client


@pytest.mark.parametrize("family", RECURRENT)
def test_state_stays_on_the_server_within_a_session(setup: Setup) -> None:
    """Prefix -> carried state -> suffix in one remote session: the state never travels."""
    model = setup.model
    ids = torch.randint(0, 257, (1, 10))
    results, sizes = {}, {}
    for how in HOWS:
        with model.session(**setup.how(how)):
            with model.trace(ids[:, :6], use_cache=True):
                out = model.output
            state = model.state_from_output(out)
            with model.trace(ids[:, 6:], state=state):
                suffix = model.output.logits.save()
        results[how] = suffix
    _all_equal(results)
    with torch.no_grad(), model.trace(ids):
        full = model.output.logits.save()
    torch.testing.assert_close(results["server"], full[:, 6:], atol=1e-5, rtol=0)
    sizes["session"] = setup.server.requests[-1]["raw_payload_bytes"]
    with torch.no_grad(), model.trace(ids[:, 6:], state=model.run_state(ids[:, :6]), **setup.how("server")):
        model.output.logits.save()
    sizes["state="] = setup.server.requests[-1]["raw_payload_bytes"]
    state_bytes = sum(
        t.nelement() * t.element_size() for layer in model.run_state(ids[:, :6]).layers for t in layer.values()
    )
    assert sizes["state="] - sizes["session"] > state_bytes / 2, (sizes, state_bytes)


@pytest.mark.parametrize("family", RECURRENT)
def test_hook_position_selection_travels_in_the_request_env(setup: Setup) -> None:
    """``capture_states(positions=...)`` sets client-side hook attributes; the request env carries them.

    Without the env the server would compute (and return) every position. The next request,
    which selects nothing, gets every position again: settings do not leak between requests.
    """
    from nnsight_rnn.capture import capture_states, positions_selected, readout_hooks

    model = setup.model
    ids = torch.randint(0, 257, (2, 8))
    results = {how: capture_states(model, ids, [LAYER], positions=[3, -1], **setup.how(how)) for how in HOWS}
    _all_equal(results)
    for states in results["server"][LAYER].values():
        assert states.shape[:2] == (2, 2)
    hooks = readout_hooks(model, LAYER)
    name = next(iter(hooks))
    with positions_selected(list(hooks.values()), [3]):
        env = model._remoteable_get_env()
    assert env["nnsight_rnn"]["hooks"][f"layers.{LAYER}.mixer.{name}"] == {"positions": [3]}
    assert "attn_implementation" in env  # nnsight's own part of the env is kept
    assert "nnsight_rnn" not in model._remoteable_get_env()
    with torch.no_grad(), model.trace(ids, **setup.how("server")):
        full = model.layers[LAYER].mixer.get(name).output.save()
    assert full.shape[:2] == (2, 8)
    server_model = setup.server.model(model.to_model_key())
    with pytest.raises(remote.RemoteKeyError, match="does not have"):
        server_model._remoteable_set_env({"nnsight_rnn": {"hooks": {"layers.99.mixer.hook_x": {"force": True}}}})


def test_hub_id_key_keeps_nnsight_canonical_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id is canonicalised by the hub, as nnsight does, and gets the card family."""
    import types

    import huggingface_hub

    model = Setup("mamba", tmp_path).model
    model.model_source = model.repo_id = "State-Spaces/Mamba-Tiny-HF"  # as if loaded by hub id
    monkeypatch.setattr(
        huggingface_hub.HfApi, "model_info", lambda self, repo_id, **kw: types.SimpleNamespace(id=repo_id.lower())
    )
    path, data = remote.split_key(model.to_model_key())
    assert path == "nnsight_rnn.model.HookedLanguageModel"
    assert data == {
        "repo_id": "state-spaces/mamba-tiny-hf",
        "revision": None,
        "task": "text-generation",
        "card": "mamba",
    }


# ---------------------------------------------------------------------------------------------
# payload size
# ---------------------------------------------------------------------------------------------


def test_payload_is_small_and_carries_no_weights(setup: Setup) -> None:
    """The request is the block + tracer (envoy tree by path); the weights never travel.

    A weightless (meta) client's request is as large as a loaded client's, and both are far
    below the size of the weights.
    """
    ids = torch.randint(0, 257, (2, 8))
    meta = nnsight_rnn.HookedLanguageModel(str(setup.folder))
    sizes = {}
    for name, model in (("loaded", setup.model), ("meta", meta)):
        backend = setup.server.backend(model)
        with torch.no_grad(), model.trace(ids, backend=backend):
            model.layers[LAYER].output[:, 2] = 0
            logits = model.output.logits.save()
        assert logits.shape == (2, 8, setup.model._module.config.vocab_size)
        record = setup.server.requests[-1]
        sizes[name] = record["raw_payload_bytes"]
        assert record["payload_bytes"] <= record["raw_payload_bytes"]  # zstd, as remote=True sends it
    weights = sum(p.nelement() * p.element_size() for p in setup.model._module.parameters())
    assert sizes["loaded"] < PAYLOAD_LIMIT
    assert abs(sizes["loaded"] - sizes["meta"]) < 256, sizes
    assert sizes["loaded"] < weights / 5, (sizes, weights)


def test_payload_of_a_130m_mamba_stays_small(tmp_path: Path) -> None:
    """Full-size architecture (mamba-130m config, no weight file anywhere): the request stays ~90 KB raw."""
    from transformers import MambaConfig

    MambaConfig(
        vocab_size=50280,
        hidden_size=768,
        num_hidden_layers=24,
        state_size=16,
        intermediate_size=1536,
        time_step_rank=48,
    ).save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    meta = nnsight_rnn.HookedLanguageModel(str(tmp_path))
    sent: list[tuple[int, int]] = []

    def capture(tracer: Any) -> None:  # serialise as remote=True would, send nothing
        remote.prepare_client()
        blob = RequestModel.serialize(tracer, compress=True)
        sent.append((len(remote._decompress(blob)), len(blob)))

    with meta.trace(torch.randint(0, 257, (1, 32)), backend=capture):
        meta.layers[5].mixer.hook_ssm_state.output[:, 3] = 0
        meta.output.logits.save()
    (raw, compressed) = sent[0]
    weights = sum(p.nelement() * 4 for p in meta._module.parameters())
    assert weights > 500e6 and raw < 150_000 and compressed < 20_000, (raw, compressed)
    PAYLOADS.append(("mamba-130m (meta)", "payload_130m", raw))
    PAYLOADS.append(("mamba-130m (meta)", "payload_130m zstd", compressed))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if PAYLOADS:
        print("\nremote payloads (raw bytes):")
        by: dict[tuple[str, str], list[int]] = {}
        for family, test, size in PAYLOADS:
            by.setdefault((family, test), []).append(size)
        for (family, test), sizes in sorted(by.items()):
            print(f"  {family:22s} {test:55s} max {max(sizes):7,d}  n={len(sizes)}")
