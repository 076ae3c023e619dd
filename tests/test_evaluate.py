"""`emotivoice evaluate emotion MANIFEST`: per-corpus metrics, telephone scores, unknown labels apart."""

import csv
import json

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_reports_per_corpus_and_keeps_unknown_labels_out_of_ua(manifest, emotion_data, tmp_path):
    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.model import DEFAULT_HEAD

    test_actors = set(EmotionHead.load(DEFAULT_HEAD).card["splits"]["test"][:2])
    rows = [c for c in manifest if c.speaker in test_actors and "_IEO_" not in c.path.name][:24]
    rows += [c for c in manifest if c.emotion == "calm"][:3]
    small = tmp_path / "m.csv"
    with small.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "corpus", "speaker", "emotion"])
        for c in rows:
            w.writerow([c.path, c.corpus, c.speaker, c.emotion])  # absolute paths work as well as relative
    proc = run_cli("evaluate", "emotion", str(small), "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["not_in_model"] == {"calm": 3}
    for variant in ("clean", "phone"):
        assert report[variant]["overall"]["n"] == 24
        assert set(report[variant]) == {"overall", "cremad"}
        assert 0.3 < report[variant]["overall"]["unweighted_average_recall"] <= 1.0
    assert "left out of UA" in proc.stdout
