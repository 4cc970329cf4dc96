"""The offline erasure benchmark's quick mode, on the committed base model (no data, no text encoder needed), and what
the template thumbnails drawn from it show."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "fashion"))
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
