"""The disentanglement tables (``disentanglement.md`` and ``.tex``) of one model, from the JSON-ready
result of ``robust_vae.evaluation.disentanglement.measure_disentanglement``.

One row per score: metric, score, value, and the sample it was computed on (from the metric's
recorded settings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from robust_vae.report.tables import latex_escape, latex_table, markdown_table

# (metric, metric label, score key, score label), in the tables' order; MIG's per-factor gaps follow "mig"
SCORES: tuple[tuple[str, str, str, str], ...] = (
    ("betavae_score", "β-VAE score", "betavae_score", "eval accuracy"),
    ("betavae_score", "β-VAE score", "betavae_score_train", "train accuracy"),
    ("factorvae_score", "FactorVAE score", "factorvae_score", "eval accuracy"),
    ("factorvae_score", "FactorVAE score", "factorvae_score_train", "train accuracy"),
    ("factorvae_score", "FactorVAE score", "factorvae_active_dims", "active dimensions"),
    ("mig", "MIG", "mig", "mean over factors"),
    ("sap", "SAP", "sap", "mean over factors"),
    ("dci", "DCI", "dci_disentanglement", "disentanglement"),
    ("dci", "DCI", "dci_completeness", "completeness"),
    ("dci", "DCI", "dci_informativeness_train", "informativeness (train accuracy)"),
    ("dci", "DCI", "dci_informativeness_test", "informativeness (test accuracy)"),
    ("modularity", "modularity", "modularity", "mean over code dimensions"),
    ("explicitness", "explicitness", "explicitness_train", "train ROC-AUC"),
    ("explicitness", "explicitness", "explicitness_test", "test ROC-AUC"),
)
HEADER = ("metric", "score", "value", "sample")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def sample_text(settings: Mapping[str, Any]) -> str:
    """The sample a metric used, in a few words, from its settings."""
    if "num_points" in settings:
        text = f"{_count(settings['num_points'])} points"
    elif "num_eval" in settings:
        text = f"{_count(settings['num_train'])} train / {_count(settings['num_eval'])} eval points"
    else:
        text = f"{_count(settings.get('num_train', '?'))} train / {_count(settings.get('num_test', '?'))} test points"
    if "batch_size" in settings:
        text += f" of {settings['batch_size']} factor vectors"
    if "num_bins" in settings:
        text += f", {settings['num_bins']} bins"
    if "regressor" in settings:
        text += f", {str(settings['regressor']).replace('_', ' ')}"
    return text + f", seed {settings.get('seed', '?')}"


def _value(key: str, value: float) -> str:
    return f"{value:.0f}" if key == "factorvae_active_dims" else f"{value:.4f}"


def score_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, score, value, sample) for every score of ``result`` (unknown scores last, by key)."""
    metrics: Mapping[str, Any] = result["metrics"]
    names: Sequence[str] = result.get("factor_names", ())
    rows: list[tuple[str, str, str, str]] = []
    shown: set[str] = set()
    for metric, label, key, score_label in SCORES:
        if metric not in metrics or key not in metrics[metric]["scores"]:
            continue
        sample = sample_text(metrics[metric]["settings"])
        rows.append((label, score_label, _value(key, metrics[metric]["scores"][key]), sample))
        shown.add(key)
        if key == "mig":
            for factor_key, value in metrics[metric]["scores"].items():
                if factor_key.startswith("mig_factor_"):
                    k = int(factor_key.removeprefix("mig_factor_"))
                    rows.append((label, f"factor {names[k] if k < len(names) else k}", _value(factor_key, value),
                                 sample))
                    shown.add(factor_key)
    for metric, entry in metrics.items():
        for key, value in entry["scores"].items():
            if key not in shown:
                rows.append((metric, key, _value(key, value), sample_text(entry["settings"])))
    return rows


def describe(result: Mapping[str, Any]) -> str:
    """One line: which model, which code, which seed and sample."""
    model = result["model"]
    seed = "" if model.get("seed") is None else f" seed {model['seed']}"
    sha = f", weights sha256 {str(model['sha256'])[:12]}…" if model.get("sha256") else ""
    code = result["code"]
    sample = result["sample"]
    head = (f"`{model['name']}`{seed} on {result['dataset']}{sha}. Code: {code['description']} "
            f"({code['dims']} dimensions). Metric seed {result['seed']}; ")
    if result.get("factors") == "class":
        left_out = ", ".join(result.get("not_applicable", {}))
        return head + (f"the class is the only factor: MIG, SAP, DCI completeness and informativeness and "
                       f"explicitness on {sample['distribution']}. Left out (constant or undefined with one "
                       f"factor): {left_out}.")
    return head + (f"MIG, SAP, DCI, modularity and explicitness on one sample of {_count(sample['points'])} codes "
                   "of uniformly drawn factors, the β-VAE and FactorVAE scores on their own interventions.")


def disentanglement_markdown(result: Mapping[str, Any], command: str | None = None) -> str:
    """``disentanglement.md``: a heading, the description and the score table."""
    model = result["model"]
    seed = "" if model.get("seed") is None else f" (seed {model['seed']})"
    lines = [f"# Disentanglement of `{model['name']}`{seed} on {result['dataset']}", "", describe(result), "",
             markdown_table(HEADER, score_rows(result), align="llrl")]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def disentanglement_latex(result: Mapping[str, Any]) -> str:
    """``disentanglement.tex``: the score table as a booktabs ``table``."""
    model = result["model"]
    stem = str(model["name"]) + ("" if model.get("seed") is None else f"-seed{model['seed']}")
    seed = "" if model.get("seed") is None else f" (seed {model['seed']})"
    rows = [[latex_escape(cell).replace("β", r"$\beta$") for cell in row] for row in score_rows(result)]
    caption = (f"Disentanglement of \\texttt{{{latex_escape(model['name'])}}}{seed} on "
               f"{latex_escape(result['dataset'])}: {latex_escape(result['code']['description'])}; "
               f"metric seed {result['seed']}.")
    return latex_table("llrl", [f"\\textbf{{{h.capitalize()}}}" for h in HEADER], rows, caption=caption,
                       label=f"tab:disentanglement-{latex_escape(stem)}")
