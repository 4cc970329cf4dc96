"""The offline erasure benchmark's quick mode, on the committed base model (no data, no text encoder needed), and what
the template thumbnails drawn from it show."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "fashion"))
import pool_draws  # noqa: E402
import run  # noqa: E402
import thumbnails  # noqa: E402
from thumbnails import Setting  # noqa: E402


def test_quick_mode_erases_the_sneaker_with_kl_at_the_defaults_and_keeps_the_rest(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["run.py", "--quick"])
    original, erased = run.main()[:2]      # raises SystemExit if the quick check fails
    assert erased["label"] == "kl" and erased["steps"] == 200
    assert erased["target_accuracy"]["canonical"] < original["target_accuracy"]["canonical"]
    assert erased["other_accuracy_drop"] <= 0.10
    assert (tmp_path / "fashion_erasure_quick.md").read_text().count("\n") >= 3
    assert (tmp_path / "fashion_erasure_quick.png").stat().st_size > 0


def test_a_templates_graph_says_what_its_thumbnail_shows():
    """Model, erasure (None: UCE) and picture of each thumbnail, read from its API graph by thumbnails.setting_of."""
    settings = {stem: thumbnails.setting_of(json.loads((thumbnails.WORKFLOWS / "api" / f"{stem}.json").read_text()))
                for stem in thumbnails.TEMPLATE_TITLES}
    assert settings["erase_concept"] == settings["erase_concept_sdxl"] == Setting("unet", "hellinger", "compare")
    assert settings["erase_concept_wan"] == settings["erase_concept_flux"] == Setting("dit", "hellinger", "compare")
    assert settings["erase_and_save"] == Setting("unet", None, "compare")
    assert settings["erase_and_report"] == Setting("unet", "kl", "report")
    assert settings["load_erasure"] == Setting("unet", "kl", "strengths")
    assert settings["strength_sweep"] == Setting("unet", "kl", "curve")
    assert settings["suggest_erase_attack"] == Setting("unet", None, "attack", (200, 0.05))


def test_pooling_draws_summarises_every_seed_of_every_draw(monkeypatch, tmp_path):
    """On the committed DiT tables of three sample draws: each row pools every draw's seeds, a group's pooled share is
    the draws' mean (each draw has as many seeds), and the class that lost most on average never lost more than the
    seeds' own worst classes did on average (a mean of minima is at most the minimum of the means)."""
    names = ["fashion_held_out_dit.json", *(f"fashion_held_out_dit_selected_samples{s}.json" for s in (100, 200))]
    for name in names:
        (tmp_path / name).write_text((run.RESULTS / name).read_text())
    monkeypatch.setattr(pool_draws, "RESULTS", tmp_path)
    monkeypatch.setattr(run, "GROUPS", {})
    monkeypatch.setattr(sys, "argv", ["pool_draws.py", *names, "--name", "pooled"])
    pool_draws.main()
    saved = [json.loads((tmp_path / name).read_text()) for name in names]
    pooled = json.loads((tmp_path / "pooled.json").read_text())
    assert pooled["sample_seeds"] == [0, 100, 200] and "probe file" not in pooled["groups"]
    assert pooled["rows"][0]["label"] == "original model" and len(pooled["rows"]) == 5
    for row in pooled["rows"][1:]:
        draws = [[r for r in file["runs"] if r["label"] == row["label"]] for file in saved]
        assert len(row["seeds"]) == sum(len(runs) for runs in draws) == 9
        for group, texts in pooled["groups"].items():
            per_draw = [sum(r["probes"][t] for r in runs for t in texts) / len(runs) / len(texts) for runs in draws]
            assert abs(row["target_accuracy"][group] - sum(per_draw) / len(per_draw)) < 1e-9
        assert -row["worst_pooled_class"][1] <= row["other_accuracy_worst_drop"] + 1e-9
    assert (tmp_path / "pooled.md").read_text().count("\n") == 7
