"""Model sources: every bad input is one clear error naming the input and the fix (nnsight_rnn.sources)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnsight_rnn
from nnsight_rnn.cli import main as cli_main
from nnsight_rnn.errors import NnsightRnnError, SourceError
from nnsight_rnn.sources import resolve

from .families import mamba

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("source", "names", "fix"),
    [
        ("mamba-tiny", "'mamba-tiny'", "zoo/mamba-tiny"),  # the zoo name without its prefix
        ("zoo/mamba-tinny", "'zoo/mamba-tinny'", "zoo/mamba-tiny"),  # a typo in a zoo name
        ("/no/such/folder", "'/no/such/folder'", "zoo/mamba-tiny"),  # a missing folder
        ("./out/missing", "'./out/missing'", "zoo models"),
        ("nosuch", "'nosuch'", "HF_HUB_OFFLINE=1"),  # a hub id, offline, not cached
        ("", "empty", "zoo models"),
        (42, "int 42", "an HF model instance, a folder"),
        (None, "NoneType", "a zoo name"),
    ],
)
def test_bad_sources_name_the_input_and_the_fix(source: object, names: str, fix: str) -> None:
    with pytest.raises(SourceError) as error:
        nnsight_rnn.load(source)
    message = str(error.value)
    assert names in message and fix in message, message
    assert "\n" not in message


def test_a_file_or_an_empty_folder_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(SourceError, match="is a file, not a model: pass the folder"):
        resolve(str(tmp_path / "weights.bin"))
    with pytest.raises(SourceError, match=r"holds no model: no config\.json .*save_pretrained"):
        resolve(str(tmp_path))


def test_good_sources_resolve(tmp_path: Path) -> None:
    model = mamba()
    assert resolve(model).kind == "module"
    assert resolve("zoo/mamba-tiny").kind == "zoo"
    model.save_pretrained(tmp_path)
    assert resolve(str(tmp_path)).kind == "folder"
    assert resolve(tmp_path).kind == "folder"  # a Path works as well as a str
    assert isinstance(SourceError("x"), ValueError) and isinstance(SourceError("x"), NnsightRnnError)


def test_cli_bad_model_is_one_line_and_a_nonzero_exit(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--model", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnsight-rnn: error: 'nosuch'") and "zoo/mamba-tiny" in err
    assert len(err.splitlines()) == 1


def test_recipe_bad_model_is_one_line_and_a_nonzero_exit() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "caa_steering.py"), "--model", "nosuch"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and "falling back" not in line]
    assert len(lines) == 1 and lines[0].startswith("caa_steering.py: error: 'nosuch'"), result.stderr


def test_the_transformer_lens_and_tuned_lens_loaders_resolve_sources_the_same_way() -> None:
    from nnsight_rnn import tl
    from nnsight_rnn.integrations.tuned_lens_cli import load_model

    with pytest.raises(SourceError, match="an HF model instance, a folder"):
        tl.load(42)
    with pytest.raises(SourceError, match="did you mean the zoo model 'zoo/mamba-tiny'"):
        tl.load("mamba-tiny")
    with pytest.raises(SourceError, match="did you mean the zoo model 'zoo/mamba-tiny'"):
        load_model("mamba-tiny")


def test_model_keys_classify_sources_with_the_same_resolver(tmp_path: Path) -> None:
    """Remote keys ask ``sources.kind_of`` (shape only: a key may name a folder on the server)."""
    from nnsight_rnn.remote import keys
    from nnsight_rnn.sources import kind_of

    checkpoint = tmp_path / "RWKV-x070-tiny.pth"
    checkpoint.write_bytes(b"not read")
    cases = {"zoo/mamba-tiny": "zoo", str(tmp_path): "folder", str(checkpoint): "pth", "owner/repo": "hub"}
    for source, kind in cases.items():
        assert kind_of(source) == keys.source_kind(source) == kind, source
    assert keys.source_kind("") == keys.source_kind(None) == "memory"
    assert kind_of(42) is None
    with pytest.raises(keys.RemoteKeyError, match=r"\.pth checkpoint.*save_pretrained\(folder\)"):
        keys.key_data(str(checkpoint), "rwkv7")


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["nosuch"], "invalid choice: 'nosuch'"),
        (["demo", "--nosuch"], "unrecognized arguments: --nosuch"),
        (["bench", "--families", "nosuch"], "invalid choice: 'nosuch'"),
        (["zoo", "nosuch"], "invalid choice: 'nosuch'"),
        (["zoo", "build", "zoo/nosuch"], "no zoo model named 'zoo/nosuch'. Available: zoo/mamba-tiny"),
        (["remote", "key"], "the following arguments are required: source"),
        (["info", "mamab"], "'mamab'"),
    ],
)
def test_cli_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = cli_main(argv)
    except SystemExit as exit_:  # argparse's own exit
        code = exit_.code
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and names in err[0] and err[0].startswith("nnsight-rnn"), err
