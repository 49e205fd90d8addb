"""Argument helpers the command modules share: a positive-integer type and the --threads setting."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1, with a message naming what was given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text}")
    return value


def apply_threads(threads: int | None) -> None:
    """--threads N: torch's intra-op threads for this command (None: torch's default). Imports torch."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    import torch

    torch.set_num_threads(threads)
