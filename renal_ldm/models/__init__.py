"""Model configurations, construction from diffusers classes, and checkpoint directories."""

from renal_ldm.models.configs import MODEL_CONFIGS, ModelConfig, get_config

__all__ = ["MODEL_CONFIGS", "ModelConfig", "get_config"]
