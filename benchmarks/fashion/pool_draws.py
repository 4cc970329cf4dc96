"""The held-out table pooled over draws of the judge's samples: saved runs of `run.py --table held_out` at different
`--sample-seed`s, each row's seeds on every draw summarised as one (mean and range over all of them), so that a share
near a goal's threshold is estimated on every sample drawn rather than on one draw's 32 per group.

A closed-form row is the same edit on every draw (one solve of the same rows; the kept words are a fixed draw of the
vocabulary), so its runs are more samples of one erasure; a training row's draw also redraws its anchor images. Only
the groups and rows every file holds are pooled. Besides the table's columns: the other class whose change, averaged
over every seed, is the worst. The table's own "worst change" is each seed's worst class averaged, which counts
every seed's sampling noise against the erasure.

    python benchmarks/fashion/pool_draws.py fashion_held_out_dit.json fashion_held_out_dit_selected_samples100.json \\
        fashion_held_out_dit_selected_samples200.json --name fashion_held_out_dit_pooled
"""
import argparse
import json

import run
from common import RESULTS, by_label, markdown_table


def pooled_runs(saved: list[dict]) -> list[dict]:
    """Every file's runs of the rows all files hold, each with the probes all files judged and its other classes'
    change against its own draw's original model."""
    labels = set.intersection(*({r["label"] for r in file["runs"]} for file in saved))
    texts = set.intersection(*(set(file["rows"][0]["probes"]) for file in saved))
    runs = []
    for file in saved:
        original = file["rows"][0]["other_accuracy"]
        for result in file["runs"]:
            if result["label"] in labels:
                runs.append({**judged_on(result, texts),
                             "other_change": {c: result["other_accuracy"][c] - original[c] for c in original}})
    return runs


def judged_on(row: dict, texts: set) -> dict:
    """The run or original row with only the probes in `texts`."""
    return {**row, "probes": {text: share for text, share in row["probes"].items() if text in texts}}


def worst_pooled_class(runs: list[dict]) -> tuple[str, float]:
    """(class, its change averaged over the runs) for the other class that lost most."""
    changes = {c: sum(r["other_change"][c] for r in runs) / len(runs) for c in runs[0]["other_change"]}
    worst = min(changes, key=changes.get)
    return worst, changes[worst]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="saved held-out tables (JSON) in benchmarks/results")
    parser.add_argument("--name", required=True, help="the pooled table's name in benchmarks/results (.json, .md)")
    args = parser.parse_args()
    saved = [json.loads((RESULTS / name).read_text()) for name in args.files]
    groups = [group for group in saved[0]["groups"] if all(group in file["groups"] for file in saved)]
    run.GROUPS.update({group: saved[0]["groups"][group] for group in groups})
    runs = pooled_runs(saved)
    original = run.original_row([judged_on(file["rows"][0], set(runs[0]["probes"])) for file in saved])
    rows, runs_of = run.summarise(runs), by_label(runs)
    for row in rows:
        row["worst_pooled_class"] = worst_pooled_class(runs_of[row["label"]])
    table = markdown_table([*run.header(False), "worst class, pooled"], [run.cells(original) + [""]] + [
        [*run.cells(row), f"{row['worst_pooled_class'][0]} {row['worst_pooled_class'][1] * 100:+.1f}"]
        for row in rows])
    (RESULTS / f"{args.name}.md").write_text(table + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps(
        {"files": args.files, "sample_seeds": [file["sample_seed"] for file in saved], "groups": run.GROUPS,
         "rows": [original, *rows]}, indent=1) + "\n")
    print(table)


if __name__ == "__main__":
    main()
