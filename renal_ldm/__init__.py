"""renal-ldm: synthetic renal histopathology on demand, and the measurements of how good it is."""

__version__ = "0.1.0"
