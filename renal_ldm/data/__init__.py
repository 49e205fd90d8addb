"""Data the model learns from: mask formats, patch data sets, whole-slide tiling."""
