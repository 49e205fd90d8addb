"""Construction of the diffusers modules from a ModelConfig: VQ autoencoder, UNet, training noise schedule.

Only diffusers' own classes are used; this module translates the reference's vocabulary (channel
multipliers, attention at downsampling factors, one head) into diffusers' constructor arguments. The samplers
over the training schedule are registered in renal_ldm.models.schedulers (build_sampling_scheduler is
re-exported here for existing callers).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

from renal_ldm.models.configs import ModelConfig
from renal_ldm.models.schedulers import build_sampling_scheduler

__all__ = [
    "build_noise_scheduler",
    "build_sampling_scheduler",
    "build_unet",
    "build_vae",
    "count_parameters",
    "set_padding_mode",
    "uses_caption_embedding",
]


def build_vae(config: ModelConfig) -> VQModel:
    """VQ-f4 first stage (f = 2 ** (levels - 1)), randomly initialised."""
    ae = config.autoencoder
    levels = len(ae.block_out_channels)
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=ae.block_out_channels,
        layers_per_block=ae.layers_per_block,
        latent_channels=ae.latent_channels,
        num_vq_embeddings=ae.num_vq_embeddings,
        norm_num_groups=ae.norm_num_groups,
        vq_embed_dim=ae.latent_channels,
        scaling_factor=ae.scaling_factor,
        mid_block_add_attention=ae.mid_block_add_attention,
        sample_size=config.image_size,
    )


def build_unet(config: ModelConfig, context_dim: int) -> UNet2DConditionModel:
    """Noise-predicting UNet with cross-attention to the caption at config.unet.attention_levels (and, with
    config.unet.caption_embedding, the pooled caption added to the timestep embedding)."""
    u = config.unet
    levels = len(u.channel_mult)
    bad = [level for level in u.attention_levels if not 0 <= level < levels]
    if bad:
        raise ValueError(f"attention levels {bad} outside 0..{levels - 1} for channel multipliers {u.channel_mult}")
    down = tuple("CrossAttnDownBlock2D" if i in u.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("CrossAttnUpBlock2D" if i in u.attention_levels else "UpBlock2D" for i in reversed(range(levels)))
    unet = UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.autoencoder.latent_channels,
        out_channels=config.autoencoder.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=u.block_out_channels,
        layers_per_block=u.layers_per_block,
        norm_num_groups=u.norm_num_groups,
        cross_attention_dim=context_dim,
        # diffusers' historical naming: `attention_head_dim` is read as the number of heads here.
        attention_head_dim=u.num_attention_heads,
        transformer_layers_per_block=u.transformer_depth,
        class_embed_type="projection" if u.caption_embedding else None,
        projection_class_embeddings_input_dim=context_dim if u.caption_embedding else None,
    )
    return set_padding_mode(unet, u.padding_mode)


def set_padding_mode(unet, mode: str):
    """Make every padded convolution of the UNet pad the border so (config.unet.padding_mode). diffusers builds
    them with zeros and has no option for it; torch's padding_mode switches a built Conv2d, weights unchanged, so
    weights trained with one mode can be fine-tuned with another."""
    for module in unet.modules():
        if isinstance(module, torch.nn.Conv2d) and any(module.padding):
            module.padding_mode = mode
    return unet


def uses_caption_embedding(unet) -> bool:
    """Whether a UNet takes the pooled caption through diffusers' class-embedding path (build_unet with
    caption_embedding); imported reference UNets have none and get cross-attention states only."""
    return getattr(unet.config, "class_embed_type", None) == "projection"


def build_noise_scheduler(config: ModelConfig) -> DDPMScheduler:
    """Training schedule: T = 1000, scaled-linear betas, epsilon prediction, no clipping (latents)."""
    n = config.noise
    return DDPMScheduler(
        num_train_timesteps=n.num_train_timesteps,
        beta_start=n.beta_start,
        beta_end=n.beta_end,
        beta_schedule=n.beta_schedule,
        prediction_type=n.prediction_type,
        clip_sample=False,
    )


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
