"""The offline erasure benchmark's quick mode, on the committed base model (no data, no text encoder needed)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "fashion"))
import run  # noqa: E402


def test_quick_mode_erases_the_sneaker_with_kl_at_the_defaults_and_keeps_the_rest(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["run.py", "--quick"])
    original, erased = run.main()[:2]      # raises SystemExit if the quick check fails
    assert erased["label"] == "kl" and erased["steps"] == 200
    assert erased["target_accuracy"]["canonical"] < original["target_accuracy"]["canonical"]
    assert erased["other_accuracy_drop"] <= 0.10
    assert (tmp_path / "fashion_erasure_quick.md").read_text().count("\n") >= 3
    assert (tmp_path / "fashion_erasure_quick.png").stat().st_size > 0
