"""robust-vae: measure how robust variational autoencoders are to adversarial examples.

The Python API mirrors the command line::

    model = load_model("jointvae", "mnist", seed=0)
    result = success_matrix(model, load_classifier("mnist"), load_dataset("mnist"),
                            load_attack("thesis"), per_pair=20)
    run_attack(RunConfig("jointvae", per_pair=20), "out/")   # the same run, with every report file
"""

from robust_vae.attacks import load_attack
from robust_vae.core.errors import RobustVAEError
from robust_vae.core.version import __version__
from robust_vae.data import load_dataset
from robust_vae.evaluation import SuccessMatrix, success_matrix
from robust_vae.evaluation.run_config import RunConfig
from robust_vae.evaluation.runner import run_attack
from robust_vae.zoo import load_classifier, load_model

__all__ = [
    "load_dataset", "load_classifier", "load_model", "load_attack", "success_matrix",
    "SuccessMatrix", "RunConfig", "run_attack", "RobustVAEError", "__version__",
]
