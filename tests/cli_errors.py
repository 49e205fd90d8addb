"""The CLI's contract for bad input, shared by the command tests: exit status 2 and one line on stderr."""

from __future__ import annotations

from renal_ldm.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run `renal-ldm ARGV`, assert it exits 2 with exactly one line on stderr, and return that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err
