"""``run_attack(config, out_dir)``: the one way to make a success-matrix run folder.

The CLI's ``attack`` command, the study and the benchmarks call it. It checks every input
before anything is written, runs the resumable success matrix and writes every report file.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from robust_vae.core.paths import writable_folder
from robust_vae.data import load_dataset_at
from robust_vae.evaluation.run_config import RunConfig
from robust_vae.evaluation.run_store import RunStore, run_lock
from robust_vae.evaluation.success_matrix import SuccessMatrix, success_matrix
from robust_vae.zoo import find_card, load_classifier, load_model


def resource_usage() -> dict[str, Any]:
    """Peak resident memory and CPU time of this process (and the machine's load), for run.json."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_bytes = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # KiB on Linux
    info: dict[str, Any] = {"peak_rss_mb": round(peak_bytes / 2**20, 1),
                            "cpu_seconds_process": round(usage.ru_utime + usage.ru_stime, 2)}
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return info


def run_attack(config: RunConfig, out_dir: str | Path | None = None, *, restart: bool = False,
               progress: bool = True, html: bool = False) -> SuccessMatrix:
    """Make (or resume) the run ``config`` describes in ``out_dir`` (default
    :meth:`RunConfig.default_out`) and write its tables, figures and ``run.json`` (``html``: and
    its static page)."""
    # every check happens before anything is written
    model = load_model(config.model, config.dataset, seed=config.model_seed, device=config.device)
    test = load_dataset_at(config.dataset, "test", model.image_shape, config.data_dir,
                           what=f"{config.model} (seed {config.model_seed})")
    card = find_card(config.model, config.dataset, config.model_seed)
    classifier = load_classifier(config.dataset, device=config.device, image_shape=model.image_shape)
    recipe = config.recipe_spec()
    attack = config.attack()
    fingerprint = config.fingerprint()
    out = writable_folder(Path(out_dir) if out_dir is not None else config.default_out())
    metadata = {
        "label": config.display_label(), "model": config.model, "model_seed": config.model_seed,
        "model_family": card.data.get("family"), "weights_sha256": fingerprint["weights_sha256"],
        "classifier_sha256": fingerprint["classifier_sha256"], "recipe": recipe["name"],
        "recipe_description": recipe.get("description", ""), "command": config.command(out_dir),
    }
    RunStore(out).check(fingerprint, restart=restart)  # refuse another configuration before writing
    started, cpu_started = time.perf_counter(), time.process_time()
    with run_lock(out):
        result = success_matrix(model, classifier, test, attack, per_pair=config.per_pair, seed=config.seed,
                                batch_size=config.batch_size, out_dir=out, metadata=metadata,
                                fingerprint=fingerprint, restart=restart, progress=progress,
                                label_source=config.label_source)
        result.metadata["wall_seconds_this_call"] = round(time.perf_counter() - started, 2)
        # this call's CPU; cpu_seconds_process and peak_rss_mb cover the whole process, which in
        # `robust-vae study` holds every run made so far
        result.metadata["cpu_seconds_this_call"] = round(time.process_time() - cpu_started, 2)
        result.metadata.update(resource_usage())
        result.save(out, html=html)
    return result
