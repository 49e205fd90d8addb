"""Sampling a trained latent diffusion model: batched classifier-free guidance, per-image seeds, progress, cancel.

    model = load_model("models/demo")
    sampler = Sampler(model)                       # CUDA when present, else CPU
    results = sampler.sample(SampleRequest(caption=GENERATING_CAPTION, n=4, seed=7))
    write_samples(results, "out/")                 # PNG + JSON sidecar per image, manifest.csv

Guarantees:
- Image i of a request uses seed S + i through its own torch.Generator, for the initial latent and for the
  DDIM eta > 0 noise, so any one image can be regenerated alone (n=1, seed=S+i) whatever batch it was first
  drawn in: the same image to within one grey level. Seeds alone do not give identical bytes: CPU convolution
  and GEMM kernels (oneDNN, MKL) pick their blocking by batch size, so a row computed in a batch of 1 differs
  from the same row in a batch of 8 by ~1e-6, which flips a few 8-bit values after 50 steps. exact_batches=True
  pads every UNet and decoder call to a multiple of EXACT_BATCH_GRANULE rows (copies, dropped afterwards), a
  size class in which the x86 kernels are batch-independent, so the bytes match too (tests/renal_ldm/
  test_sample.py); it costs a lone image twice the UNet work (2 guidance rows padded to 4), so it is opt-in.
- precision "bf16" runs the UNet under bf16 autocast where the device has native bf16 (weights and the
  scheduler stay fp32; benchmarks/sampling_speed.py compares its images with fp32 ones of the same seed); "auto"
  is bf16 where the device has it, else fp32. The Sampler's precision is the default of its requests; a request
  may name its own (the app draws a Library sample again in the precision it was made in). Each result's params
  record the precision it was drawn in.
- Sizes up to WHOLE_LATENT_FACTOR times the training size denoise the whole latent in one UNet call per step;
  larger ones (and any size above the training size with windows="always") are denoised as overlapping
  training-size windows, blended every step (MultiDiffusion; renal_ldm/windows.py). Latents are decoded in
  tiles above decode_tile cells: memory is bounded by window_batch and decode_tile, not by the image size.
- margin > 0 denoises that many pixels more on every side and crops them off after decoding: a UNet can leave a
  faint frame along the border of what it denoises (the demo model's: models/demo/README.md), and the margin
  takes it away with it. With margin_late the margin is added only for the last steps (t below
  LATE_MARGIN_BELOW of the schedule, where the frame forms), mirrored from the latent itself: the same picture
  as without a margin, less its frame, in 1.04-1.08x the time of no margin (1.25x for a margin over every step;
  demo model at 128 and 256 px: benchmarks/margin_cost.py).
- Conditional and unconditional branches run through the UNet as one batch per step:
  eps = eps_u + g * (eps_c - eps_u). With g == 1 only the conditional half runs (g == 0: only the
  unconditional half). The text embeddings are computed once per request.
- The VQ decoder quantizes the latent before decoding, as the reference LDM did; [-1, 1] maps to uint8.
- Speed (measured with benchmarks/sampling_speed.py, kept because they pay): one fused CFG UNet call per
  step; the cross-attention key/value projections of the caption states computed once per request instead
  of every step (ContextKVCache, bit-identical results); inference_mode (no autograd graph: a fraction of
  the memory); diffusers' SDPA attention; channels_last for the convolutions.
- Everything runs under torch.inference_mode(); `progress(done, total)` is called after every denoising
  step (monotonic over the whole request); `cancel` (a threading.Event) is checked before every step and
  raises SamplingCancelled.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image

from renal_ldm import __version__
from renal_ldm.models.caption_inputs import UNetInputs, caption_inputs
from renal_ldm.models.checkpoint import LatentDiffusionModel, load_model
from renal_ldm.models.configs import (
    LATE_MARGIN_BELOW,
    MAX_SAMPLING_STEPS,
    SAMPLING,
    SAMPLING_PRECISIONS,
    WHOLE_LATENT_FACTOR,
    WINDOW_MODES,
    smallest_margin,
)
from renal_ldm.models.schedulers import build_sampling_scheduler, check_eta, get_scheduler, step_kwargs
from renal_ldm.sample_files import MANIFEST_CSV, read_manifest_csv, write_samples
from renal_ldm.text import UNCONDITIONAL_CAPTION, get_text_encoder
from renal_ldm.windows import Blender, Window, overlapping, taper

DEFAULT_STEPS = SAMPLING.steps
DEFAULT_GUIDANCE = SAMPLING.guidance
DEFAULT_SCHEDULER = SAMPLING.scheduler
DEFAULT_BATCH_SIZE = SAMPLING.batch_size
MAX_STEPS = MAX_SAMPLING_STEPS

ProgressCallback = Callable[[int, int], None]
__all__ = ["MANIFEST_CSV", "SampleRequest", "SampleResult", "Sampler", "read_manifest_csv", "write_samples"]


EXACT_BATCH_GRANULE = 4
"""Rows every UNet and decoder call is padded to with exact_batches (see the module docstring)."""
PRECISIONS = SAMPLING_PRECISIONS


def check_precision(precision: str, device: torch.device) -> str:
    """The precision the UNet runs in on this device: fp32, or bf16 autocast where the device runs bf16 natively
    (a CUDA GPU with bf16, a CPU with avx512_bf16 / AMX); "auto" is bf16 where it is native, else fp32. Anything
    else, or bf16 where it is not native, is a ValueError naming the value and what was expected."""
    value = _precision_name(precision)
    if value == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if value == "bf16" and not bf16_supported(device):
        raise ValueError(
            f"precision bf16 needs native bf16 on {device} (a CUDA GPU with bf16, or a CPU with avx512_bf16 or AMX); "
            "this one has none, use fp32"
        )
    return value


def _precision_name(precision: str | None) -> str:
    """One of PRECISIONS, case and spaces aside (None or empty: fp32); anything else is named in a ValueError."""
    if not precision:
        return "fp32"
    value = precision.strip().lower() if isinstance(precision, str) else precision
    if value not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return value


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (not emulated, which is slower than fp32) on this device."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class SamplingCancelled(Exception):
    """Raised by Sampler.sample when its cancel event was set; no partial results are returned."""


@dataclass(frozen=True)
class SampleRequest:
    """What to draw. size None means the size the model was trained at."""

    caption: str
    n: int = 1
    seed: int = SAMPLING.seed
    steps: int = DEFAULT_STEPS
    guidance: float | None = None  # None: the model's recommended guidance (its manifest), else DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    eta: float = SAMPLING.eta
    size: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    windows: str = "auto"  # see WINDOW_MODES
    margin: int = 0  # px denoised beyond every side and cropped off (see the module docstring)
    margin_late: bool = False  # the margin only for the last steps, mirrored from the latent (module docstring)
    precision: str | None = None  # None: the Sampler's; else one of SAMPLING_PRECISIONS (module docstring)

    def denoised_size(self, model: LatentDiffusionModel) -> int:
        """The side in pixels that is denoised: the image's plus its margin on both sides."""
        return (model.config.image_size if self.size is None else self.size) + 2 * self.margin

    def late_cells(self, model: LatentDiffusionModel) -> int:
        """Latent cells a late margin adds on every side once the timestep falls below LATE_MARGIN_BELOW (0: none)."""
        return self.margin // model.config.autoencoder.downsampling_factor if self.margin_late else 0

    def windowed(self, model: LatentDiffusionModel) -> bool:
        """Whether this request is denoised as overlapping windows rather than as one whole latent ("auto" goes by
        the image's own size, so a margin does not tip an image of twice the training size into windows)."""
        image = model.config.image_size if self.size is None else self.size
        trained = model.config.image_size
        above = self.denoised_size(model) > trained
        return above and (self.windows == "always" or image > WHOLE_LATENT_FACTOR * trained)

    def validated(self, model: LatentDiffusionModel) -> SampleRequest:
        """This request with size filled in; a ValueError names the first bad value and what was expected."""
        if not isinstance(self.caption, str):
            raise ValueError(f"caption must be a string; got {type(self.caption).__name__}")
        if int(self.n) != self.n or self.n < 1:
            raise ValueError(f"n (number of images) must be an integer >= 1; got {self.n}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch size must be an integer >= 1; got {self.batch_size}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {self.seed}")
        if int(self.steps) != self.steps or not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer in 1..{MAX_STEPS}; got {self.steps}")
        guidance = default_guidance(model) if self.guidance is None else self.guidance
        if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance scale must be a finite number >= 0; got {guidance}")
        get_scheduler(self.scheduler)  # a ValueError lists the registered names
        if not math.isfinite(self.eta) or not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1]; got {self.eta}")
        check_eta(self.scheduler, self.eta)
        if self.windows not in WINDOW_MODES:
            raise ValueError(f"windows must be one of {', '.join(WINDOW_MODES)}; got {self.windows!r}")
        config = model.config
        size = config.image_size if self.size is None else self.size
        multiple = config.size_multiple
        if int(size) != size or size < multiple or size % multiple:
            raise ValueError(
                f"image size {size} is not a positive multiple of {multiple} (the autoencoder's factor "
                f"{config.autoencoder.downsampling_factor} x 2^{config.unet.downsamplings} UNet downsamplings)"
            )
        if int(self.margin) != self.margin or self.margin < 0 or (2 * self.margin) % multiple or self.margin > size:
            raise ValueError(
                f"margin {self.margin} px: expected a whole multiple of {multiple // 2} px (so the denoised size stays "
                f"a multiple of {multiple}) from 0 to the image size {size}"
            )
        if not isinstance(self.margin_late, bool) or (self.margin_late and not self.margin):
            raise ValueError(
                f"margin_late must be True or False, and True only with a margin > 0; got {self.margin_late!r} "
                f"with margin {self.margin}"
            )
        precision = None if self.precision is None else _precision_name(self.precision)
        return SampleRequest(
            caption=self.caption,
            n=int(self.n),
            seed=int(self.seed),
            steps=int(self.steps),
            guidance=float(guidance),
            scheduler=self.scheduler,
            eta=float(self.eta),
            size=int(size),
            batch_size=int(self.batch_size),
            windows=self.windows,
            margin=int(self.margin),
            margin_late=self.margin_late,
            precision=precision,
        )


@dataclass
class SampleResult:
    """One generated image with everything needed to regenerate it."""

    image: Image.Image
    array: np.ndarray  # (H, W, 3) uint8
    seed: int
    caption: str
    index: int  # position in its request
    params: dict[str, Any] = field(default_factory=dict)


def frameless_margin(model: LatentDiffusionModel) -> int:
    """The smallest margin (px) a request of this model may take (configs.smallest_margin)."""
    return smallest_margin(model.config.size_multiple)


def default_guidance(model: LatentDiffusionModel) -> float:
    """The guidance scale a request without one gets: the model's recommended one, else the reference's 1.5."""
    return DEFAULT_GUIDANCE if model.recommended_guidance is None else float(model.recommended_guidance)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ContextKVCache(AttnProcessor2_0):
    """diffusers' SDPA attention, plus: while active, a cross-attention layer's key and value projections of the
    text context are computed once per request instead of once per denoising step.

    The context (caption states) is the same tensor at every step, so to_k/to_v of it are too; the cached path
    runs the very same operations on the same tensor, so results are bit-identical. A caption token mask (the
    (B, 1, T) bias diffusers makes of encoder_attention_mask) is applied as the stock processor does. Self-attention
    and attention variants this model family does not use go through the stock processor.
    """

    def __init__(self) -> None:
        super().__init__()
        self._store: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    @contextlib.contextmanager
    def active(self, enabled: bool = True):
        self._store = {} if enabled else None
        try:
            yield self
        finally:
            self._store = None

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        if (
            self._store is None
            or encoder_hidden_states is None
            or (attention_mask is not None and attention_mask.ndim != 3)
            or args
            or kwargs
            or hidden_states.ndim != 3
            or attn.spatial_norm is not None
            or attn.group_norm is not None
            or attn.norm_cross
            or attn.norm_q is not None
            or attn.norm_k is not None
        ):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        batch_size = encoder_hidden_states.shape[0]
        slot = (id(attn), id(encoder_hidden_states))  # windowed sampling alternates a few context tensors
        entry = self._store.get(slot)
        if entry is None or entry[0] is not encoder_hidden_states:
            key = attn.to_k(encoder_hidden_states)
            value = attn.to_v(encoder_hidden_states)
            head_dim = key.shape[-1] // attn.heads
            key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            entry = (encoder_hidden_states, key, value)  # holding the tensor keeps its identity unique
            self._store[slot] = entry
        _, key, value = entry
        head_dim = key.shape[-1]
        query = attn.to_q(hidden_states).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attention_mask is not None:  # (B, 1, T) bias, broadcast over heads and queries
            attention_mask = attention_mask.view(batch_size, 1, 1, -1).to(query.dtype)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class Sampler:
    """Holds a loaded model on one device and draws images from it; one request at a time (thread-safe).

    The Sampler owns the model object from then on: it sets eval mode, channels_last and its attention
    processor (ContextKVCache) on it; use one Sampler per loaded model.
    """

    def __init__(
        self,
        model: LatentDiffusionModel,
        device: str | torch.device | None = None,
        *,
        channels_last: bool = True,
        exact_batches: bool = False,
        precision: str = "fp32",
        cache_context: bool = True,
        window_batch: int = 8,
        decode_tile: int = 128,
    ) -> None:
        if model.unet is None:
            raise ValueError(
                f"{model.path or 'this model'} is an autoencoder-only checkpoint; sampling needs a latent diffusion "
                "model written by `renal-ldm train`"
            )
        self.model = model
        self.device = torch.device(device) if device is not None else default_device()
        self.channels_last = channels_last
        self.batch_granule = EXACT_BATCH_GRANULE if exact_batches else 1
        self.precision = check_precision(precision, self.device)
        if window_batch < 1:
            raise ValueError(f"window_batch must be >= 1; got {window_batch}")
        self.window_batch = window_batch  # UNet rows per call when denoising above the training size
        if decode_tile < 1:
            raise ValueError(f"decode_tile must be >= 1; got {decode_tile}")
        # Latent cells per decoded tile side (128: 512 px for VQ-f4, so 256 and 512 px images decode whole).
        # Each tile normalises with its own GroupNorm statistics: on a 512 px phantom, 256 px tiles reconstruct
        # at 25.0 dB against 25.3 dB decoded whole, 128 px tiles at 23.8 dB (tests/renal_ldm/test_windows.py).
        self.decode_tile = decode_tile
        self.cache_context = cache_context
        self._context_cache = ContextKVCache()
        model.unet.set_attn_processor(self._context_cache)
        model.to(self.device)
        model.unet.eval().requires_grad_(False)
        model.vae.eval().requires_grad_(False)
        if channels_last:
            # Measured on the 2-core CPU (benchmarks/sampling_speed.py): oneDNN convolutions run faster in NHWC.
            model.unet.to(memory_format=torch.channels_last)
            model.vae.to(memory_format=torch.channels_last)
        self.text_encoder = get_text_encoder(model.text_encoder, device=self.device)
        if self.text_encoder.dim != model.context_dim:
            raise ValueError(
                f"text encoder {model.text_encoder!r} gives {self.text_encoder.dim}-d states but the UNet expects "
                f"{model.context_dim}-d"
            )
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, model_dir: str | Path, device: str | torch.device | None = None, **kwargs) -> Sampler:
        device = torch.device(device) if device is not None else default_device()
        return cls(load_model(model_dir, device=device, require_unet=True), device=device, **kwargs)

    def _resolved(self, request: SampleRequest) -> SampleRequest:
        """The request validated, with the precision it is drawn in (its own, else this Sampler's) resolved for
        this device: a bf16 request where bf16 is not native fails here, before any work."""
        request = request.validated(self.model)
        return replace(request, precision=self._precision_of(request))

    def _precision_of(self, request: SampleRequest) -> str:
        """The precision a request is drawn in here: its own, else this Sampler's, resolved for this device."""
        return check_precision(request.precision or self.precision, self.device)

    def _installed_processor(self):
        return next(iter(self.model.unet.attn_processors.values()), None)

    def encode_captions(self, caption: str) -> tuple[UNetInputs, UNetInputs]:
        """Conditional and unconditional one-row UNet inputs, each caption encoded alone, as in training."""

        def inputs(text: str) -> UNetInputs:
            made = caption_inputs(self.text_encoder, [text], self.model.unet, self.model.config.unet.caption_mask)
            return made.map(lambda x: x.to(self.device))

        return inputs(caption), inputs(UNCONDITIONAL_CAPTION)

    def sample(
        self,
        request: SampleRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[SampleResult]:
        """Draw request.n images in batches of request.batch_size; see the module docstring for guarantees."""
        request = self._resolved(request)
        with self._lock, torch.inference_mode():
            if self.cache_context and self._installed_processor() is not self._context_cache:
                self.model.unet.set_attn_processor(self._context_cache)  # another Sampler took this model over
            cond, uncond = self.encode_captions(request.caption)
            total = request.steps * math.ceil(request.n / request.batch_size)
            done = 0
            results: list[SampleResult] = []
            for start in range(0, request.n, request.batch_size):
                indices = list(range(start, min(start + request.batch_size, request.n)))

                def step_done(_k: int, _done_before: int = done) -> None:
                    if progress is not None:
                        progress(_done_before + _k, total)

                latents = self.denoise(request, indices, cond, uncond, step_done, cancel)
                done += request.steps
                arrays = self.decode(latents)
                if request.margin and not request.margin_late:  # a late margin is cropped off the latent
                    m = request.margin
                    arrays = np.ascontiguousarray(arrays[:, m:-m, m:-m])
                for i, array in zip(indices, arrays, strict=True):
                    results.append(
                        SampleResult(
                            image=Image.fromarray(array, mode="RGB"),
                            array=array,
                            seed=request.seed + i,
                            caption=request.caption,
                            index=i,
                            params=self._params(request, request.seed + i),
                        )
                    )
            return results

    def sample_canvas(
        self,
        request: SampleRequest,
        height: int,
        width: int,
        captions: list[str],
        window_caption: Callable[[Window], int] | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> torch.Tensor:
        """The final latent of one height x width px canvas (a synthetic slide; decode it with decode_strips),
        every latent window conditioned on captions[window_caption(window)]; request gives seed, steps,
        guidance, scheduler and eta (its caption and size are not used). progress(done, total) counts UNet
        calls over all steps (see denoise_canvas)."""
        request = self._resolved(request)
        multiple = self.model.config.size_multiple
        for name, value in (("height", height), ("width", width)):
            if int(value) != value or value < multiple or value % multiple:
                raise ValueError(f"canvas {name} {value} px is not a positive multiple of {multiple} px")
        if not captions or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"a canvas needs at least one caption (text); got {captions!r}")
        f = self.model.config.autoencoder.downsampling_factor
        with self._lock, torch.inference_mode():
            if self.cache_context and self._installed_processor() is not self._context_cache:
                self.model.unet.set_attn_processor(self._context_cache)
            encoded = [self.encode_captions(c) for c in captions]
            conds, uncond = [c for c, _ in encoded], encoded[0][1]
            return self.denoise_canvas(
                request, height // f, width // f, conds, uncond, window_caption, progress, cancel
            ).cpu()

    def denoise(
        self,
        request: SampleRequest,
        indices: list[int],
        cond: UNetInputs,
        uncond: UNetInputs,
        step_done: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> torch.Tensor:
        """Final latents for the images `indices` of a validated request (call under inference_mode): the denoised
        size's (the image's plus a margin) or, with a late margin, the image's."""
        model = self.model
        channels = model.config.autoencoder.latent_channels
        late = request.late_cells(model)
        side = request.denoised_size(model) // model.config.autoencoder.downsampling_factor - 2 * late
        generators = [torch.Generator("cpu").manual_seed(request.seed + i) for i in indices]
        # Each image's noise comes from its own generator, so it does not depend on the batch it is drawn in.
        latents = torch.cat([torch.randn((1, channels, side, side), generator=g) for g in generators])
        branches = self._branches(cond, uncond, request.guidance)

        def predictor(side: int):
            if request.windowed(model):
                return WindowedPredictor(self, [branches], request.guidance, len(indices), side, side, cancel=cancel)
            return self._whole_predictor(branches, request.guidance, len(indices))

        grow = None
        if late:
            below = LATE_MARGIN_BELOW * model.noise_scheduler.config.num_train_timesteps
            grow = LateMargin(late, below, lambda: predictor(side + 2 * late))
        latents = self._run_schedule(latents, generators, request, predictor(side), step_done, cancel, grow)
        # A late margin leaves the latent, not the image: decoding it would mirror the picture about its border,
        # a calm band where the mirror axis runs (frame 0.81); the image's own cells decode as without a margin.
        return latents[..., late:-late, late:-late] if late else latents

    def denoise_canvas(
        self,
        request: SampleRequest,
        height: int,
        width: int,
        captions: list[UNetInputs],
        uncond: UNetInputs,
        window_caption: Callable[[Window], int] | None = None,
        call_done: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> torch.Tensor:
        """The final (1, C, height, width) latent of one canvas of any size (a synthetic slide), every window
        conditioned on captions[window_caption(window)] (all on captions[0] without it). The noise comes from one
        generator seeded request.seed. call_done(done, total) counts UNet calls over all steps; cancel is checked
        before every call. Memory: the latent plus one window batch."""
        if height < 1 or width < 1:
            raise ValueError(f"canvas must be at least 1x1 latent cells; got {width}x{height}")
        channels = self.model.config.autoencoder.latent_channels
        generator = torch.Generator("cpu").manual_seed(request.seed)
        latents = torch.randn((1, channels, height, width), generator=generator)
        sets = [self._branches(c, uncond, request.guidance) for c in captions]
        predict = WindowedPredictor(self, sets, request.guidance, 1, height, width, window_caption, cancel)
        total = predict.calls_per_step * request.steps

        def tick(step: int, call: int) -> None:
            if call_done is not None:
                call_done((step - 1) * predict.calls_per_step + call, total)

        predict.call_done = tick
        return self._run_schedule(latents, [generator], request, predict, None, cancel)

    @staticmethod
    def _branches(cond: UNetInputs, uncond: UNetInputs, g: float) -> list[UNetInputs]:
        """The guidance branches a step runs: both for 0 < g != 1, else the one that counts."""
        return [cond] if g == 1.0 else [uncond] if g == 0.0 else [uncond, cond]

    def _run_schedule(
        self, latents, generators, request: SampleRequest, predict, step_done, cancel, grow: LateMargin | None = None
    ) -> torch.Tensor:
        """The scheduler loop shared by images and canvases: predict(x, t) is eps for the whole latent; grow adds
        a late margin (and its predictor) once the timestep falls below grow.below."""
        latents = latents.to(self.device)
        scheduler = build_sampling_scheduler(request.scheduler, self.model.noise_scheduler.config)
        scheduler.set_timesteps(request.steps, device=self.device)
        latents = latents * scheduler.init_noise_sigma
        extra = {"generator": generators, **step_kwargs(request.scheduler, request.eta)}
        precision = self._precision_of(request)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with self._context_cache.active(self.cache_context):
            for k, t in enumerate(scheduler.timesteps, start=1):
                if cancel is not None and cancel.is_set():
                    raise SamplingCancelled(f"sampling cancelled at step {k} of {request.steps}")
                if grow is not None and t < grow.below:
                    latents, predict = grow.apply(latents, scheduler), grow.predictor()
                    grow = None
                if isinstance(predict, WindowedPredictor):
                    predict.step = k
                with autocast:
                    eps = predict(scheduler.scale_model_input(latents, t), t).float()
                latents = scheduler.step(eps, t, latents, **extra).prev_sample
                if step_done is not None:
                    step_done(k)
        return latents

    def _whole_predictor(self, branches: list[UNetInputs], g: float, b: int):
        """eps(x, t) for latents the UNet takes whole: one fused call over the guidance branches per step."""
        inputs = UNetInputs.stack(branches, b)
        rows = inputs.context.shape[0]
        inputs = inputs.map(lambda x: self._pad(x).contiguous())  # padded once: the K/V cache keys on the context
        memory_format = self._memory_format()

        def predict(x: torch.Tensor, t) -> torch.Tensor:
            x = self._pad(torch.cat([x] * len(branches))).contiguous(memory_format=memory_format)
            eps = self.model.unet(x, t, **inputs.kwargs()).sample[:rows]
            return _guided(eps, len(branches), g)

        return predict

    def _memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, H, W, 3) uint8 images; the VQ decoder quantizes first, as in the reference (see decode_strips)."""
        return np.concatenate(list(self.decode_strips(latents)), axis=1)

    def decode_strips(self, latents: torch.Tensor) -> Iterator[np.ndarray]:
        """The decoded images as (B, h, W, 3) uint8 strips, top to bottom. Latents larger than decode_tile cells
        are decoded in overlapping tiles of that size, blended with tapered weights (quantization is per latent
        cell, so tiling it changes nothing; each tile's own GroupNorm statistics and edge padding are outweighed
        by the overlap), one row of tiles at a time: a strip is given out as soon as no later tile covers it, so
        memory is bounded by a row of tiles, not by the image (a synthetic slide streams into its TIFF)."""
        config = self.model.config
        z = latents / config.autoencoder.scaling_factor
        size = max(config.latent_size, self.decode_tile)
        height, width = z.shape[-2:]
        if height <= size and width <= size:
            yield to_uint8(self._decode(z))
            return
        f = config.autoencoder.downsampling_factor
        windows, overlap = overlapping(height, width, size)
        side = windows[0].size
        weights = taper(side * f, overlap * f, dtype=torch.float32, device=z.device)
        rows_of_tiles = [list(row) for _, row in itertools.groupby(windows, key=lambda w: w.top)]
        band = torch.zeros((z.shape[0], 3, 0, width * f), dtype=torch.float32, device=z.device)
        norm = torch.zeros((0, width * f), dtype=torch.float32, device=z.device)
        given = 0  # pixel rows already given out
        for r, row in enumerate(rows_of_tiles):
            top = row[0].top
            grow = (top + side) * f - given - band.shape[-2]
            if grow > 0:
                band = torch.cat([band, band.new_zeros((*band.shape[:2], grow, band.shape[-1]))], dim=-2)
                norm = torch.cat([norm, norm.new_zeros((grow, norm.shape[-1]))])
            rows = slice(top * f - given, (top + side) * f - given)
            for w in row:
                cols = slice(w.left * f, (w.left + side) * f)
                band[..., rows, cols] += self._decode(z[..., w.rows, w.cols]).float() * weights
                norm[rows, cols] += weights
            done = (rows_of_tiles[r + 1][0].top if r + 1 < len(rows_of_tiles) else height) * f - given
            yield to_uint8(band[..., :done, :] / norm[:done])
            band, norm, given = band[..., done:, :], norm[done:], given + done

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        memory_format = self._memory_format()
        with torch.inference_mode():  # decode_strips is a generator: its caller's mode does not reach in
            return self.model.vae.decode(self._pad(z).contiguous(memory_format=memory_format)).sample[: z.shape[0]]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """x with copies of its last row appended up to a multiple of batch_granule rows (see module docstring)."""
        pad = -x.shape[0] % self.batch_granule
        return torch.cat([x, x[-1:].expand(pad, *x.shape[1:])]) if pad else x

    def _params(self, request: SampleRequest, seed: int) -> dict[str, Any]:
        return {
            "caption": request.caption,
            "seed": seed,
            "steps": request.steps,
            "guidance": request.guidance,
            "scheduler": request.scheduler,
            "eta": request.eta,
            "size": request.size,
            "windows": request.windows,
            "windowed": request.windowed(self.model),
            "margin": request.margin,
            "margin_late": request.margin_late,
            "precision": self._precision_of(request),
            "model": str(self.model.path) if self.model.path is not None else None,
            "model_fingerprint": self.model.fingerprint,
            "text_encoder": self.model.text_encoder,
            "renal_ldm_version": __version__,
        }


@dataclass
class LateMargin:
    """A margin of `cells` latent cells on every side, added once the timestep falls below `below`: mirrored from
    the latent (and from a multistep scheduler's remembered predictions), then denoised by predictor()'s UNet."""

    cells: int
    below: float
    predictor: Callable[[], Callable[[torch.Tensor, Any], torch.Tensor]]

    def apply(self, latents: torch.Tensor, scheduler) -> torch.Tensor:
        pad = (self.cells,) * 4
        remembered = getattr(scheduler, "model_outputs", None)  # DPM-Solver++'s earlier x0 predictions
        if remembered is not None:
            scheduler.model_outputs = [None if x is None else F.pad(x, pad, mode="reflect") for x in remembered]
        return F.pad(latents, pad, mode="reflect")


class WindowedPredictor:
    """eps(x, t) for latents larger than the training size (MultiDiffusion): overlapping windows of the training
    size every half window, each window's guidance branches for every image batched into UNet calls of at most
    window_batch rows, the guided predictions blended with tapered weights (renal_ldm.windows).

    branch_sets[k] are the guidance branches of caption k (see Sampler._branches); window_caption(window) picks a
    window's caption (all caption 0 without it), so one canvas can ask for different tissue in different regions,
    blended where their windows overlap. Rows are window-major (within a window branch-major, then image) and
    grouped by caption, so every call holds one caption and its inputs are built once per request (the K/V
    cache serves them). Memory is bounded by window_batch, not by the canvas: a window's rows are guided and
    blended as soon as they are all computed. `step` (set by the scheduler loop) and `call_done(step, call)`
    report progress; cancel is checked before every call.
    """

    def __init__(
        self,
        sampler: Sampler,
        branch_sets: list[list[UNetInputs]],
        g: float,
        b: int,
        height: int,
        width: int,
        window_caption: Callable[[Window], int] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.sampler, self.g, self.b, self.cancel = sampler, g, b, cancel
        self.windows, overlap = overlapping(height, width, sampler.model.config.latent_size)
        self.weights = taper(self.windows[0].size, overlap)
        self.branches = len(branch_sets[0])
        per_window = self.branches * b
        captions = [0 if window_caption is None else int(window_caption(w)) for w in self.windows]
        if any(not 0 <= c < len(branch_sets) for c in captions):
            raise ValueError(f"window captions must index the {len(branch_sets)} captions given; got {set(captions)}")
        chunk = max(1, sampler.window_batch)
        inputs: dict[tuple[int, int, int], UNetInputs] = {}
        self.calls: list[tuple[list[tuple[int, int]], UNetInputs]] = []
        for caption in sorted(set(captions)):
            stacked = UNetInputs.stack(branch_sets[caption], b)  # per_window rows
            rows = [(i, r) for i, c in enumerate(captions) if c == caption for r in range(per_window)]
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                key = (caption, part[0][1], len(part))  # rows cycle through 0..per_window-1
                if key not in inputs:
                    index = torch.tensor([r for _, r in part])
                    inputs[key] = stacked.map(lambda x, index=index: sampler._pad(x[index]).contiguous())
                self.calls.append((part, inputs[key]))
        self.calls_per_step = len(self.calls)
        self.step = 0
        self.call_done: Callable[[int, int], None] | None = None

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        sampler, b, per_window = self.sampler, self.b, self.branches * self.b
        unet, memory_format = sampler.model.unet, sampler._memory_format()
        blend = Blender(x.shape, self.weights, dtype=x.dtype, device=x.device)
        pending: list[torch.Tensor] = []  # rows of the window being completed
        for n, (part, inputs) in enumerate(self.calls, start=1):
            if self.cancel is not None and self.cancel.is_set():
                raise SamplingCancelled(
                    f"sampling cancelled at step {self.step}, window batch {n} of {self.calls_per_step}"
                )
            windows = [self.windows[i] for i, _ in part]
            tiles = torch.stack([x[r % b, :, w.rows, w.cols] for w, (_, r) in zip(windows, part, strict=True)])
            tiles = sampler._pad(tiles).contiguous(memory_format=memory_format)
            eps = unet(tiles, t, **inputs.kwargs()).sample[: len(part)]
            for w, (_, r), row in zip(windows, part, eps, strict=True):
                pending.append(row)
                if r == per_window - 1:
                    blend.add(w, _guided(torch.stack(pending), self.branches, self.g))
                    pending = []
            if self.call_done is not None:
                self.call_done(self.step, n)
        return blend.result()


def _guided(eps: torch.Tensor, branches: int, g: float) -> torch.Tensor:
    """Classifier-free guidance over branch-major rows: eps_u + g * (eps_c - eps_u) for two branches."""
    if branches == 1:
        return eps
    eps_u, eps_c = eps.chunk(2)
    return eps_u + g * (eps_c - eps_u)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 (rounded, clipped)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def resolve_model_dir(model: str | Path | None, note: Callable[[str], None] | None = None) -> Path:
    """The --model directory (a checkpoint, or a training run: its model/, see locate_checkpoint), or the shipped
    demo model; a clear error when neither exists. note(message) hears which model of a run was taken."""
    from renal_ldm.models.manifest import is_checkpoint, locate_checkpoint
    from renal_ldm.paths import demo_model_dir

    if model is not None:
        path, message = locate_checkpoint(model)
        if message and note is not None:
            note(message)
        return path
    demo = demo_model_dir()
    if is_checkpoint(demo):
        return demo
    raise FileNotFoundError(
        f"no --model given and the shipped demo model is missing at {demo}; train one with "
        "`renal-ldm train-vae --data DIR --out VAE` then `renal-ldm train --data DIR --vae VAE --out RUN`, "
        "and pass --model RUN"
    )
