"""docs/hooks.md is the generated hook reference, up to date with the cards and mixers."""

from __future__ import annotations

from pathlib import Path

from nnsight_rnn.reference import reference_markdown


def test_hooks_md_is_current() -> None:
    path = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"
    assert path.read_text() == reference_markdown(), "regenerate with: nnsight-rnn docs -o docs/hooks.md"
