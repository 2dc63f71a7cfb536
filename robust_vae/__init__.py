"""robust-vae: measure how robust variational autoencoders are to adversarial examples."""

from robust_vae.data import load_dataset
from robust_vae.errors import RobustVAEError
from robust_vae.zoo import load_classifier, load_model

__version__ = "0.1.0"
__all__ = ["load_dataset", "load_classifier", "load_model", "RobustVAEError", "__version__"]
