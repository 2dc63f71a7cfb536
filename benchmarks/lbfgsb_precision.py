"""The cost of the L-BFGS-B objective in float32 and float64, batched and row by row.

Run from the repository root::

    python -m benchmarks.lbfgsb_precision            # 64 MNIST test images, the shipped vae

Times one evaluation of the ``tabacof`` objective (KL(q(z|x) ‖ q(z|x_t)) + C‖d‖² and its
gradient with respect to the image) per example, on the shipped ``vae`` seed 0, the way
:func:`robust_vae.attacks.latent.lbfgsb_on_images` evaluates it: the whole batch at once or
``row_by_row`` (one image at a time), with the model in float32 or as a float64 copy
(``precision``). These are the costs of the options ``precision`` and ``row_by_row`` of
``latent-lbfgsb``. Writes ``benchmarks/results/lbfgsb_precision.json`` (or ``--out``) and
prints the README table (``--render``: the table of the committed results).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import machine, rendered, results_parser, write_report
from robust_vae import load_dataset, load_model
from robust_vae.attacks.base import as_attackable
from robust_vae.attacks.objectives import posterior_kl, squared_distortion
from robust_vae.attacks.optim.gradients import loss_and_gradient
from robust_vae.report.tables import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"


def seconds_per_example(model: torch.nn.Module, xs: torch.Tensor, xt: torch.Tensor, row_by_row: bool,
                        repeats: int) -> float:
    attackable = as_attackable(model)
    with torch.no_grad():
        target = attackable.encode(xt)

    def loss(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        params = type(target)(target.mean[rows], target.logvar[rows],
                              None if target.logits is None else target.logits[rows])
        return posterior_kl(model, x, params) + squared_distortion(x, xs[rows])

    rows = torch.arange(xs.shape[0])

    def once() -> None:
        if row_by_row:
            for i in range(xs.shape[0]):
                loss_and_gradient(loss, xs[i:i + 1], rows[i:i + 1])
        else:
            loss_and_gradient(loss, xs, rows)

    once()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - start) / repeats / xs.shape[0]


def table(report: dict[str, Any]) -> str:
    """The README table of a report."""
    rows = [[r["precision"], str(r["row_by_row"]).lower(), f"{r['ms_per_example']:.2f}",
             f"{r['relative_to_float32_batched']:.1f}×"] for r in report["results"]]
    return markdown_table(["precision", "row_by_row", "ms per example", "× float32 batched"], rows, align="llrr")


def main() -> None:
    parser = results_parser(__doc__, RESULTS / "lbfgsb_precision.json")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if rendered(args, table):
        return
    torch.set_num_threads(args.threads)
    test = load_dataset("mnist", "test")
    xs, xt = test.images[:args.examples], test.images[5000:5000 + args.examples]
    model32 = load_model("vae", "mnist", seed=0)
    model64 = copy.deepcopy(model32).to(torch.float64)
    rows: list[dict[str, Any]] = []
    for precision, model in (("float32", model32), ("float64", model64)):
        dtype = next(model.parameters()).dtype
        for row_by_row in (False, True):
            rows.append({"precision": precision, "row_by_row": row_by_row,
                         "ms_per_example": 1e3 * seconds_per_example(model, xs.to(dtype), xt.to(dtype), row_by_row,
                                                                      args.repeats)})
    base = rows[0]["ms_per_example"]
    for row in rows:
        row["relative_to_float32_batched"] = row["ms_per_example"] / base
    report = {"command": f"python -m benchmarks.lbfgsb_precision --examples {args.examples}",
              "examples": args.examples, "repeats": args.repeats, "threads": args.threads, **machine(),
              "results": rows}
    write_report(report, args.out, table(report))


if __name__ == "__main__":
    main()
