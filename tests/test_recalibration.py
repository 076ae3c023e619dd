"""Coaches' corrections -> the deployment's emotion calibration, through the real store and CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from emotivoice.analysis.emotion.recalibration import (Calibration, Correction, RecalibrationRefused, Recalibrator,
                                                       fit_calibration, write_profile)
from emotivoice.analysis.results import CallResult, Speaker, Utterance
from emotivoice.analysis.sink import to_record
from emotivoice.storage.db import connect, save_call
from emotivoice.storage.store import FileStore
from tests.conftest import DEMO, run_cli

LABELS = ("anger", "neutral", "sadness")


def head_output(true: str, rng: np.random.Generator) -> dict[str, float]:
    """A head that hears this deployment's sad customers as mostly neutral (a flat line, a quiet
    voice): sadness gets some of the evidence, neutral more."""
    z = rng.normal(0, 0.5, len(LABELS))
    if true == "sadness":
        z[LABELS.index("neutral")] += 1.6
        z[LABELS.index("sadness")] += 1.0
    else:
        z[LABELS.index(true)] += 2.0
    p = np.exp(z) / np.exp(z).sum()
    return dict(zip(LABELS, map(float, p)))


def corrections(n: int, seed: int = 0, per_call: int = 10) -> list[Correction]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        true = LABELS[i % 3]
        out.append(Correction(head_output(true, rng), true, f"call-{i // per_call}"))
    return out


def recall(cal: Calibration, items: list[Correction]) -> float:
    """Unweighted average recall: every emotion counts alike, as the benchmarks report."""
    hits = {k: [] for k in LABELS}
    for c in items:
        p = cal.apply(c.probabilities)
        hits[c.label].append(max(p, key=p.get) == c.label)
    return float(np.mean([np.mean(v) for v in hits.values()]))


def test_a_fit_learns_the_deployments_bias_and_helps_unseen_utterances():
    fitted = fit_calibration(corrections(200))
    unseen = corrections(600, seed=1)
    assert fitted.bias["sadness"] > fitted.bias["neutral"]
    assert fitted.heldout["log_loss_after"] <= fitted.heldout["log_loss_before"]
    assert recall(fitted, unseen) > recall(Calibration(), unseen) + 0.05
    for c in unseen[:20]:  # undo recovers what the head said, so a refit never compounds
        back = fitted.undo(fitted.apply(c.probabilities))
        assert all(abs(back[k] - c.probabilities[k]) < 1e-6 for k in LABELS)


def test_a_few_corrections_cannot_wreck_the_model():
    with pytest.raises(RecalibrationRefused, match="at least 20"):
        fit_calibration(corrections(12))
    # twenty clicks on one call, all "anger" on what the head hears as clearly neutral
    confident = {"anger": 0.03, "neutral": 0.94, "sadness": 0.03}
    one_call = [Correction(confident, "anger", "call-x") for _ in range(20)]
    try:
        fitted = fit_calibration(one_call)
    except RecalibrationRefused:
        return
    after = fitted.apply(confident)
    assert max(after, key=after.get) == "neutral"


def test_profiles_are_owner_only_and_reread_when_refitted(tmp_path):
    path = tmp_path / "calibration.json"
    recal = Recalibrator(path, {"uk-sales": "uk"})
    probs = [{"anger": 0.2, "neutral": 0.5, "sadness": 0.3}]
    assert recal.apply(probs, "default") == probs  # no file: the head as it is
    write_profile(path, "default", Calibration(1.0, {"sadness": 2.0}))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    first = recal.apply(probs, "default")[0]
    assert max(first, key=first.get) == "sadness"
    write_profile(path, "uk", Calibration(1.0, {"anger": 3.0}))
    assert recal.profile_for("uk-sales", "en") == "uk" and recal.profile_for("other", "en") == "default"
    uk = recal.apply(probs, recal.profile_for("uk-sales"))[0]
    assert max(uk, key=uk.get) == "anger"
    path.write_text("{ not json")  # a broken file keeps the last good profiles
    assert recal.apply(probs, "uk")[0] == uk


def stored_call(call_id: str, rng: np.random.Generator) -> tuple:
    speakers = [Speaker("agent", "agent", 0), Speaker("customer", "customer", 1)]
    truths = [LABELS[(i + len(call_id)) % 3] for i in range(8)]
    utts = [Utterance(call_id, 1, "customer", i * 3.0, i * 3.0 + 2.0, -20.0, text=f"turn {i}",
                      emotions=head_output(t, rng)) for i, t in enumerate(truths)]
    result = CallResult(call_id, "test", 30.0, 2, "legs", "whisper", "head", False, speakers, utts)
    return to_record(result, metadata={"team": "sales"}), truths


@pytest.mark.slow
def test_recalibrate_fits_stored_corrections_saves_and_audits(tmp_path):
    db, cal_file = tmp_path / "calls.duckdb", tmp_path / "cal" / "calibration.json"
    rng = np.random.default_rng(3)
    con = connect(db)
    truths = {}
    for k in range(6):
        record, truths[f"call-{k}"] = stored_call(f"call-{k}", rng)
        save_call(con, record)
    con.close()
    store = FileStore(db)
    for call_id, labels in truths.items():
        for i, label in enumerate(labels):
            if call_id == "call-0" and i == 0:  # a coach changed their mind: the latest label counts
                store.write("add_feedback", call_id=call_id, kind="emotion", author="c", utterance_idx=i,
                            value="anger")
            store.write("add_feedback", call_id=call_id, kind="emotion", author="c", utterance_idx=i, value=label)
    rows = store.read("emotion_corrections")
    assert len(rows) == 48 * 3
    env = {"EMOTIVOICE_EMOTION_CALIBRATION_FILE": str(cal_file)}

    proc = run_cli("recalibrate", "--db", str(db), "--dry-run", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "48 corrections" in proc.stdout and not cal_file.exists()

    proc = run_cli("recalibrate", "--db", str(db), "--profile", "sales", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(cal_file.read_text())["profiles"]["sales"]
    assert saved["corrections"] == 48 and saved["bias"]["sadness"] > saved["bias"]["neutral"]
    assert oct(os.stat(cal_file).st_mode & 0o777) == "0o600"
    audit = FileStore(db).read("audit_log", action="recalibrate")
    assert len(audit) == 1 and "profile sales" in audit.detail[0]

    proc = run_cli("recalibrate", "--db", str(db), "--team", "nobody", env=env, timeout=120)
    assert proc.returncode == 3 and "at least 20" in proc.stderr


@pytest.mark.slow
def test_batch_analysis_scores_the_call_under_its_teams_profile(tmp_path, demo_analysis):
    """The real demo call, with a profile for its team that says everyone here sounds surprised."""
    _, plain = demo_analysis
    cal_file = tmp_path / "calibration.json"
    write_profile(cal_file, "loud-team", Calibration(1.0, {"surprise": 30.0}))  # beyond any log-probability
    out = tmp_path / "call.json"
    proc = run_cli("analyze", str(DEMO), "--db", str(tmp_path / "c.duckdb"), "--json", str(out), "--quiet",
                   "--team", "floor-2", env={"EMOTIVOICE_EMOTION_CALIBRATION_FILE": str(cal_file),
                                             "EMOTIVOICE_EMOTION_CALIBRATION_BY_TEAM": "floor-2=loud-team"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    doc, plain = doc["calls"][0], plain["calls"][0]
    assert doc["calibration"]["profile"] == "loud-team"
    top = [max(u["emotions"], key=u["emotions"].get) for u in doc["utterances"]]
    before = [max(u["emotions"], key=u["emotions"].get) for u in plain["utterances"]]
    assert top.count("surprise") == len(top) > before.count("surprise")
    con = connect(tmp_path / "c.duckdb")
    (stored,) = con.execute("SELECT calibration FROM calls").fetchone()
    con.close()
    assert json.loads(stored) == doc["calibration"]


def test_the_review_says_which_calibration_a_call_was_scored_under():
    from emotivoice.dashboard.analytics import calibration_note

    assert "no calibration" in calibration_note(None)
    assert "no calibration" in calibration_note(json.dumps({"profile": None}))
    note = calibration_note(json.dumps({"profile": "uk", "temperature": 1.1, "bias": {},
                                        "fitted_at": "2026-12-03T07:00"}))
    assert '"uk"' in note and "2026-12-03" in note
