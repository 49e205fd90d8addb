"""Construction of the diffusers modules from a ModelConfig: VQ autoencoder, UNet, noise schedulers.

Only diffusers' own classes are used; this module translates the reference's vocabulary (channel
multipliers, attention at downsampling factors, one head) into diffusers' constructor arguments.
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    VQModel,
)

from renal_ldm.models.configs import SCHEDULERS, ModelConfig


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
    """Noise-predicting UNet with cross-attention to the caption at config.unet.attention_levels."""
    u = config.unet
    levels = len(u.channel_mult)
    bad = [level for level in u.attention_levels if not 0 <= level < levels]
    if bad:
        raise ValueError(f"attention levels {bad} outside 0..{levels - 1} for channel multipliers {u.channel_mult}")
    down = tuple("CrossAttnDownBlock2D" if i in u.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("CrossAttnUpBlock2D" if i in u.attention_levels else "UpBlock2D" for i in reversed(range(levels)))
    return UNet2DConditionModel(
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
    )


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


def build_sampling_scheduler(name: str, train_scheduler_config) -> DDIMScheduler | DPMSolverMultistepScheduler:
    """A sampler over the training schedule.

    "ddim" matches the reference's DDIM (uniform timesteps 1, 21, ..., 981 for 50 steps; the first step's
    previous alpha is alpha_0, not 1). "dpmpp" is DPM-Solver++ (2nd order), good in about 20 steps.
    """
    if name == "ddim":
        return DDIMScheduler.from_config(
            train_scheduler_config,
            timestep_spacing="leading",
            steps_offset=1,
            set_alpha_to_one=False,
            clip_sample=False,
        )
    if name == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(
            train_scheduler_config,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="linspace",
            final_sigmas_type="zero",
        )
    raise ValueError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}")


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
