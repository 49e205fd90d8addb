"""Fixtures for the library's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP barriers make 2 threads
    many times slower than 1; restored afterwards so other test modules are unaffected."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield previous
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    """An autoencoder-only checkpoint of the tiny config, the first stage of LDM training tests."""
    from tiny_models import build_tiny_autoencoder_checkpoint

    return build_tiny_autoencoder_checkpoint(tmp_path_factory.mktemp("vae") / "vae")


@pytest.fixture(scope="module")
def four_phantoms(tmp_path_factory):
    """Four 32 px phantoms (a patch data set folder): captions of several lengths, as training sees them."""
    from renal_ldm.phantom import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("phantoms") / "data", n=4, size=32, seed=0)
