"""robust-vae: measure how robust variational autoencoders are to adversarial examples.

The Python API mirrors the command line::

    model = load_model("jointvae", "mnist", seed=0)
    result = success_matrix(model, load_classifier("mnist"), load_dataset("mnist"),
                            load_attack("thesis"), per_pair=20)
"""

from robust_vae.attacks import load_attack
from robust_vae.data.mnist import load_dataset
from robust_vae.core.errors import RobustVAEError
from robust_vae.evaluation.success_matrix import SuccessMatrix, success_matrix
from robust_vae.zoo import load_classifier, load_model

__version__ = "0.1.0"
__all__ = [
    "load_dataset", "load_classifier", "load_model", "load_attack", "success_matrix",
    "SuccessMatrix", "RobustVAEError", "__version__",
]
