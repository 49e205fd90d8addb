"""LDM training loop and autoencoder training, resumable: the public names of renal_ldm.training.

See renal_ldm/training/ldm.py for the run-directory layout and the method, and
renal_ldm/training/autoencoder.py for the first stage.
"""

from renal_ldm.training import *  # noqa: F401,F403
from renal_ldm.training import __all__  # noqa: F401
