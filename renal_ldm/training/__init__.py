"""Training: the VQ autoencoder (first stage) and the latent diffusion UNet, both through accelerate."""

from renal_ldm.training.autoencoder import (
    AutoencoderTrainResult,
    AutoencoderTrainSettings,
    evaluate_reconstruction,
    train_autoencoder,
)
from renal_ldm.training.common import FP16_REFUSED, TrainingDiverged, check_mixed_precision
from renal_ldm.training.ldm import LDMTrainResult, LDMTrainSettings, train_ldm

__all__ = [
    "FP16_REFUSED",
    "AutoencoderTrainResult",
    "AutoencoderTrainSettings",
    "LDMTrainResult",
    "LDMTrainSettings",
    "TrainingDiverged",
    "check_mixed_precision",
    "evaluate_reconstruction",
    "train_autoencoder",
    "train_ldm",
]
