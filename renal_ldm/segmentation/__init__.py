"""Segmenter parts that must stay torch-free (configs, settings); the model and training are renal_ldm.segment."""
