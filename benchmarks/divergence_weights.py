"""Does the divergence matter? The Mahalanobis term m and each divergence's gradient weight vs MSE.

Every closed-form divergence trains like MSE with a per-sample weight g'(m) / g'(0) (docs/divergences.md),
so the choice only matters where m is not small. This prints m for SD1.5-sized latents
(4 x 64 x 64) for a range of per-element RMS differences between the target's and the anchor's
epsilon predictions, under each reduction and temperature, and the weight each divergence then gives.

    python benchmarks/divergence_weights.py [--json benchmarks/results/divergence_weights.json]
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from pack_import import import_pack  # noqa: E402

import_pack()
from comfyui_unlearn.divergences import DIVERGENCES, mahalanobis  # noqa: E402
from comfyui_unlearn.unlearning import DiscreteVPSchedule  # noqa: E402

LATENT = (4, 64, 64)            # SD1.5 at 512 px
RMS = [0.01, 0.03, 0.1, 0.3]    # per-element RMS of eps(target) - eps(anchor)
SETTINGS = [                    # (reduction, temperature, timestep for "step")
    ("mean", 1.0, None), ("mean", 0.01, None), ("mean", 0.001, None),
    ("fdmu_reference", 1.0, None), ("sum", 1.0, None), ("step", 1.0, 500), ("step", 1.0, 50),
]
SHOWN = ["hellinger", "pearson_chi2", "jensen_shannon", "total_variation", "alpha"]


def rows():
    schedule = DiscreteVPSchedule()
    for reduction, temperature, t in SETTINGS:
        for rms in RMS:
            delta = torch.full((1, *LATENT), rms)
            weight = None
            if reduction == "step":
                weight = schedule.step_weight(torch.tensor([1 - t / 999], dtype=torch.float64))
            m = mahalanobis(delta, torch.zeros_like(delta), reduction, temperature, weight)
            weights = {name: DIVERGENCES[name].gradient_weight(m.double(), alpha=2.0).item() for name in SHOWN}
            yield {"reduction": reduction + (f" (t={t})" if t else ""), "temperature": temperature,
                   "rms": rms, "m": m.item(), "weights": weights}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "divergence_weights.json")
    args = parser.parse_args()
    table = list(rows())
    header = ["reduction", "temperature", "RMS diff", "m"] + [f"w_{n}" for n in SHOWN]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in table:
        cells = [r["reduction"], f"{r['temperature']:g}", f"{r['rms']:g}", f"{r['m']:.3g}"]
        cells += [f"{r['weights'][n]:.3g}" for n in SHOWN]
        print("| " + " | ".join(cells) + " |")
    print("\nw = g'(m) / g'(0): the sample's pull relative to MSE (kl = 1 always); alpha at alpha = 2;"
          " total variation relative to its own loss scale.")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"latent_shape": LATENT, "rows": table}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
