"""Named model configurations: frozen dataclasses, saved as JSON beside the weights.

`pathldm` is the reference architecture (VQ-f4 with 3 latent channels, UNet 192 x (1, 2, 3, 5), attention at
downsampling factors 2, 4, 8, one head); `demo` keeps that structure small enough to train and sample on a
2-core CPU; `tiny` exists so tests run in seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReferenceSampling:
    """Sampling settings of the reference study (DDIM, 50 steps, eta 0, guidance 1.5 with "" unconditional),
    the defaults of SampleRequest, the CLI and the Generate page. The samplers are registered in
    renal_ldm.models.schedulers."""

    scheduler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    guidance: float = 1.5
    batch_size: int = 4
    seed: int = 0  # image i of a request uses seed + i
    images: int = 4  # images one run draws unless told (`renal-ldm sample --n`, the Generate page)


@dataclass(frozen=True)
class ReferenceTraining:
    """LDM training settings of the reference study (fp32 only; see renal_ldm.training)."""

    lr: float = 2.5e-5
    warmup_steps: int = 1000
    caption_dropout: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.9999


SAMPLING = ReferenceSampling()
SAMPLING_PRECISIONS = ("fp32", "bf16", "auto")
"""What the UNet may sample in: fp32 (the reference), bf16 autocast where the device runs bf16 natively, or auto:
bf16 where the device runs it natively, else fp32 (the app's default: on the AMX CPU a batch of 4 in about half
the time, images within 43 dB PSNR of fp32's for the same seed; models/demo/README.md)."""
WINDOW_MODES = ("auto", "always")
"""How sizes above the training size are denoised: "auto" denoises the whole latent of images up to
WHOLE_LATENT_FACTOR times the training size (plus any margin) and overlapping windows above it; "always" uses
windows for every size above it."""


def smallest_margin(size_multiple: int) -> int:
    """The smallest margin (px) a request may take (see renal_ldm.sample): half the model's size multiple, so the
    denoised size stays a multiple of it; 16 px for the demo model, several times the frame it takes away."""
    return size_multiple // 2


LATE_MARGIN_BELOW = 0.2
"""A late margin (SampleRequest.margin_late) is added once the timestep falls below this fraction of the training
schedule (the last 10 of 50 DDIM steps, 4 of 20 DPM-Solver++ steps): the demo model's frame forms there. Measured
at 256 px on 32 samples of "a lot of Glomeruli" (seeds 0-31): frame 1.080 without a margin, 1.036 / 1.007 / 0.990 /
0.986 with it for the last 2 / 5 / 10 / 20 steps, and 1.038 with a margin for the first 30 steps only, cropped
then (models/demo/README.md)."""

WHOLE_LATENT_FACTOR = 2
"""Largest side, in training sizes, that "auto" denoises whole. Measured with the demo model at 256 px (16 samples,
"a lot of Glomeruli", models/demo/README.md): whole-latent samples show no latent grid and are sharper than
windowed ones (blending averages the windows' predictions), and one whole call costs 1/2.25 of the windows' UNet
work; far above the training size a UNet's field no longer matches what it learnt, so windows take over there."""
TRAINING = ReferenceTraining()


@dataclass(frozen=True)
class LDMTrainSettings:
    """One run of `train` (renal_ldm.training.ldm); the CLI's defaults are these fields' defaults."""

    max_steps: int = 10000
    batch_size: int = 8
    lr: float = TRAINING.lr
    warmup_steps: int = TRAINING.warmup_steps
    weight_decay: float = 0.01  # torch AdamW's default, as the reference used it
    caption_dropout: float = TRAINING.caption_dropout
    grad_clip: float = TRAINING.grad_clip
    flip: bool = True
    ema: bool = False
    ema_decay: float = TRAINING.ema_decay
    checkpoint_every: int = 500
    latent_cache_mb: int = 1024  # frozen-VQ latents kept per distinct (flipped) image; 0 encodes every batch
    mixed_precision: str = "no"
    snr_gamma: float | None = None  # min-SNR loss weighting (Hang et al. 2023), e.g. 5.0; None: plain epsilon MSE
    snr_floor: float | None = None  # truncated SNR (Salimans & Ho 2022): clean-image weight >= this at high noise
    scale_latents: bool = False  # measure the latents' std on the data and train on latents / std (LDM paper)
    prediction: str | None = None  # a PREDICTION_TYPES name for a new run; None: the config's (or the run's)
    caption_mask: bool | None = None  # set unet.caption_mask (also on --init-from weights); None: keep the config's
    padding_mode: str | None = None  # set unet.padding_mode (also on --init-from weights); None: keep the config's
    encode_margin: int = 0  # px mirrored around each image before encoding, latent cropped back (encode_interior)
    guidance: float | None = None  # recommended guidance scale written into the model's manifest
    seed: int = 0
    num_workers: int = 0
    progress: bool = True


@dataclass(frozen=True)
class AutoencoderTrainSettings:
    """One run of `train-vae` (renal_ldm.training.autoencoder); the CLI's defaults are these fields' defaults."""

    max_steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    flip: bool = True
    held_out: float = 0.1  # fraction of patches held out for the reconstruction PSNR
    eval_every: int = 0  # 0: evaluate only at the end
    eval_batch_size: int = 8
    mixed_precision: str = "no"
    num_workers: int = 0
    progress: bool = True


@dataclass(frozen=True)
class AutoencoderConfig:
    """VQ first stage. Downsampling factor = 2 ** (len(block_out_channels) - 1): three levels give f = 4."""

    block_out_channels: tuple[int, ...] = (128, 256, 512)
    layers_per_block: int = 2
    latent_channels: int = 3
    num_vq_embeddings: int = 8192
    norm_num_groups: int = 32
    scaling_factor: float = 1.0
    mid_block_add_attention: bool = True

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


UNET_PADDING_MODES = ("zeros", "replicate")
"""Border padding the UNet's convolutions may use. Not "reflect": it needs more cells than the padding on every
side, and a small latent's coarsest level has a single one."""


@dataclass(frozen=True)
class UNetConfig:
    """Cross-attention denoiser. attention_levels are indices into the channel multipliers (0 = full res)."""

    base_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 5)
    layers_per_block: int = 2
    attention_levels: tuple[int, ...] = (1, 2, 3)
    num_attention_heads: int = 1
    transformer_depth: int = 1
    norm_num_groups: int = 32
    caption_embedding: bool = False
    """Also add a pooled caption embedding to the timestep embedding (diffusers' class_embed_type "projection"):
    a global path that reaches every resolution block, besides cross-attention at attention_levels."""
    caption_mask: bool = False
    """Cross-attention skips the caption's padding tokens (the tokenizer's attention mask reaches the UNet as
    encoder_attention_mask): the demo data's captions have 31-95 real tokens among MiniLM's 128, and the padding
    states differ little between captions, so unmasked they dilute what the words say (models/demo/README.md:
    tried on the demo model, not shipped there)."""
    padding_mode: str = "zeros"
    """How the UNet's convolutions pad the latent's border (torch's padding_mode): "zeros", as diffusers and the
    reference build it, lets every layer see where the image ends; "replicate" gives the border no value of its
    own, so a uniform latent stays uniform to the edge. Tried against the demo model's frame (its outermost 4 px
    band busier than the interior): fine-tuned with replicate, and trained from scratch with it, the UNet drew the
    frame again (models/demo/README.md)."""

    def __post_init__(self) -> None:
        if self.padding_mode not in UNET_PADDING_MODES:
            raise ValueError(f"unet padding_mode {self.padding_mode!r} is not one of {UNET_PADDING_MODES}")

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_mult)

    @property
    def downsamplings(self) -> int:
        """How often the UNet halves the latent: once between consecutive levels."""
        return len(self.channel_mult) - 1


@dataclass(frozen=True)
class NoiseScheduleConfig:
    """DDPM schedule of the reference: 1000 steps, betas = linspace(sqrt(0.0015), sqrt(0.0195)) ** 2."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"


PREDICTION_TYPES = ("epsilon", "v_prediction")
"""What the UNet predicts (diffusers' names): the noise, or v = sqrt(a) noise - sqrt(1 - a) x0 (Salimans & Ho 2022).
With epsilon, the loss at high noise barely depends on the clean image, so the caption has little to teach there;
v asks for the clean image's layout at high noise, where a composition is decided."""

MAX_SAMPLING_STEPS = NoiseScheduleConfig().num_train_timesteps - 1
"""Most denoising steps a request may ask for: DDIM's reference spacing ("leading", steps_offset 1) reaches
timestep T at T steps, one past a T-step training schedule ("index 1000 is out of bounds")."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a latent diffusion model's modules before loading weights."""

    name: str
    image_size: int
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    noise: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)
    text_encoder: str = "minilm"

    @property
    def latent_size(self) -> int:
        return self.image_size // self.autoencoder.downsampling_factor

    @property
    def size_multiple(self) -> int:
        """Every image size this model trains on or samples must be a multiple of this: the autoencoder's factor
        x 2 ** (UNet downsamplings), so the latent halves evenly down to the UNet's coarsest level."""
        return self.autoencoder.downsampling_factor * 2**self.unet.downsamplings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of to_dict; unknown keys are an error so a newer checkpoint is not silently misread."""
        data = dict(data)
        missing = [k for k in ("name", "image_size") if k not in data]
        if missing:
            raise ValueError(f"model config is missing the keys {missing}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"model config has unknown keys {unknown}")
        return cls(
            name=data["name"],
            image_size=int(data["image_size"]),
            autoencoder=_build(AutoencoderConfig, data.get("autoencoder", {})),
            unet=_build(UNetConfig, data.get("unet", {})),
            noise=_build(NoiseScheduleConfig, data.get("noise", {})),
            text_encoder=data.get("text_encoder", "minilm"),
        )


def _build(kind, values: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{kind.__name__} has no fields {unknown}; known: {sorted(names)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return kind(**converted)


MODEL_CONFIGS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        name="tiny",
        image_size=32,
        autoencoder=AutoencoderConfig(
            block_out_channels=(16, 32, 32),
            layers_per_block=1,
            num_vq_embeddings=64,
            norm_num_groups=8,
            mid_block_add_attention=False,
        ),
        unet=UNetConfig(
            base_channels=16,
            channel_mult=(1, 2),
            layers_per_block=1,
            attention_levels=(1,),
            norm_num_groups=8,
        ),
    ),
    "demo": ModelConfig(
        name="demo",
        image_size=128,
        autoencoder=AutoencoderConfig(
            block_out_channels=(32, 64, 128),
            layers_per_block=1,
            num_vq_embeddings=1024,
            norm_num_groups=16,
            mid_block_add_attention=False,
        ),
        unet=UNetConfig(
            base_channels=32,
            channel_mult=(1, 2, 4, 4),
            layers_per_block=1,
            attention_levels=(1, 2, 3),
            norm_num_groups=32,
            caption_embedding=True,
        ),
    ),
    "pathldm": ModelConfig(name="pathldm", image_size=256, text_encoder="plip"),
}


def get_config(name: str) -> ModelConfig:
    """A named configuration; a ValueError lists the known names."""
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; expected one of {', '.join(MODEL_CONFIGS)}") from None
