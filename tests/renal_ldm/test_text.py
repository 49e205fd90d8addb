"""Text encoders: offline MiniLM, PLIP-layout CLIP from a local directory (tiny one built here), errors."""

from __future__ import annotations

import pytest
import torch
from tiny_models import write_tiny_plip

from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.text import (
    CLIP_CHUNK_TOKENS,
    MINILM_MAX_TOKENS,
    PLIPTextEncoder,
    TextEncoder,
    get_text_encoder,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def minilm():
    return get_text_encoder("minilm")


def test_minilm_shape_and_empty_caption(minilm):
    out = minilm.encode([GENERATING_CAPTION, "", "The image shows a low amount of Tubuli."])
    assert out.shape == (3, MINILM_MAX_TOKENS, 384) == (3, 128, 384)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert minilm.dim == 384
    assert not torch.equal(out[0], out[1])
    assert get_text_encoder("minilm") is minilm  # loaded once per process


def test_minilm_cache_hit_skips_the_model(minilm, monkeypatch):
    calls: list[list[str]] = []
    real = minilm._encode_batch

    def counting(captions):
        calls.append(list(captions))
        return real(captions)

    monkeypatch.setattr(minilm, "_encode_batch", counting)
    caption = "There is a lot of Arteries visible in the image. (cache test)"
    first = minilm.encode([caption, caption])
    assert calls == [[caption]]  # duplicates encoded once
    second = minilm.encode([caption])
    assert calls == [[caption]]  # cache hit: the model did not run again
    assert torch.equal(first[0], second[0])


@pytest.fixture(scope="module")
def tiny_plip(tmp_path_factory):
    """A CLIP tokenizer with a byte-level vocabulary (no merges: one token per character) and a 32-d model."""
    folder = tmp_path_factory.mktemp("plip")
    write_tiny_plip(folder)
    return folder


def test_plip_two_chunks_with_positions_restarting(tiny_plip):
    encoder = get_text_encoder(f"plip:{tiny_plip}")
    assert isinstance(encoder, PLIPTextEncoder) and encoder.dim == 32
    long_caption = GENERATING_CAPTION  # ~170 characters: one token each, so it spills into the second chunk
    out = encoder.encode([long_caption, ""])
    assert out.shape == (2, 2 * CLIP_CHUNK_TOKENS, 32) == (2, 154, 32)

    ids = encoder.tokenizer(
        [long_caption], padding="max_length", truncation=True, max_length=154, return_tensors="pt"
    ).input_ids
    assert (ids[0, 77:] != encoder.tokenizer.pad_token_id).any()  # the second chunk holds caption tokens
    with torch.inference_mode():
        first = encoder.model(input_ids=ids[:, :77]).last_hidden_state
        second = encoder.model(input_ids=ids[:, 77:]).last_hidden_state  # positions 0..76 by default
    torch.testing.assert_close(out[0, :77], first[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0, 77:], second[0], atol=1e-5, rtol=1e-5)


def test_plip_errors_name_what_is_missing(tiny_plip, tmp_path):
    with pytest.raises(FileNotFoundError, match="PLIP directory not found"):
        get_text_encoder(f"plip:{tmp_path / 'absent'}")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((tiny_plip / "config.json").read_text())
    with pytest.raises(FileNotFoundError) as err:
        get_text_encoder(f"plip:{partial}")
    assert "vocab.json" in str(err.value) and "merges.txt" in str(err.value) and "model.safetensors" in str(err.value)
    with pytest.raises(ValueError, match="needs a local directory"):
        get_text_encoder("plip")
    with pytest.raises(ValueError, match="unknown text encoder 'bert'"):
        get_text_encoder("bert")


def test_an_encoder_without_encode_batch_fails_at_construction():
    class Incomplete(TextEncoder):
        dim = 4
        max_tokens = 2

    with pytest.raises(TypeError, match="_encode_batch"):
        Incomplete()

    class Complete(Incomplete):
        def _encode_batch(self, captions):
            return torch.ones(len(captions), self.max_tokens, self.dim)

    encoded = Complete().encode(["a", "b", "a"])
    assert encoded.shape == (3, 2, 4)
