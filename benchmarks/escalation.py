"""Escalation risk: does the score separate calls where the customer escalates, and how fast?

Calls are assembled from CREMA-D actors the emotion head never trained on (agent and customer on
their own channels, 8 kHz G.711 mu-law as on a phone line): in escalating calls the customer
starts calm and turns angry or disgusted part-way; in calm calls the customer stays neutral,
happy, sad or afraid (sad and afraid are the hard negatives). Every call goes through the full
batch analysis. Reported: the AUC of the customer's peak risk, alert recall and false-alarm
rate, and the median time from the first escalating utterance's start to the alert. The alert
threshold is chosen on calls of the head's validation actors and reported on its test actors.

    python benchmarks/escalation.py [--calls 24]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

TURNS = 10  # alternating, agent first
CALM = ["neutral", "happiness", "sadness", "fear"]
HOT = ["anger", "disgust"]


def build_calls(actors: list[str], clips, n: int, seed: int):
    """(turns, escalates, escalation turn index) for n calls, half of them escalating."""
    from emotivoice.analysis.synth import Turn

    rng = random.Random(seed)
    by = {}
    for c in clips:
        if "_IEO_" not in c.path.name or c.emotion in HOT:
            by.setdefault((c.speaker, c.emotion), []).append(c)
    calls = []
    for i in range(n):
        agent, customer = rng.sample(actors, 2)
        escalates = i % 2 == 0
        onset = rng.choice([2, 3]) if escalates else None  # customer's turn where it turns hot
        turns = []
        for k in range(TURNS):
            if k % 2 == 0:
                emotion, speaker, leg = rng.choice(["neutral", "neutral", "happiness"]), agent, 0
            else:
                j = k // 2
                emotion = rng.choice(HOT) if escalates and j >= onset else (
                    "neutral" if escalates or j == 0 else rng.choice(CALM))
                speaker, leg = customer, 1
            clip = rng.choice(by[(speaker, emotion)])
            turns.append(Turn(leg, clip.path, emotion, clip.text, gap_s=rng.uniform(0.3, 1.0)))
        calls.append((turns, escalates, 2 * onset + 1 if escalates else None))
    return calls


def run(analyzer, calls, workdir: Path, label: str):
    from emotivoice.analysis.synth import assemble, write_audio

    out = []
    for i, (turns, escalates, onset_turn) in enumerate(tqdm(calls, desc=f"{label} calls", unit="call")):
        audio, placed = assemble(turns)
        path = write_audio(audio, workdir / f"{label}-{i}.wav", ["-ar", "8000", "-c:a", "pcm_mulaw"])
        result = analyzer.analyze(path, call_id=f"{label}-{i}")
        out.append((result, escalates, placed[onset_turn].start if escalates else None))
    return out


def evaluate(analyzed, risk_config) -> dict:
    from emotivoice.analysis.insight.stage import InsightState, enrich
    from emotivoice.config import load_settings

    peaks, truth, delays, caught, false_alarms = [], [], [], 0, 0
    for result, escalates, onset in analyzed:
        alerts = enrich(result.utterances, InsightState(load_settings().sarcasm, risk_config))
        customer = [u.risk.score for u in result.utterances if u.speaker == "customer"]
        peaks.append(max(customer))
        truth.append(escalates)
        mine = [a for a in alerts if a.speaker == "customer"]
        if escalates:
            after = [a for a in mine if a.t_s >= onset]
            if after:
                caught += 1
                delays.append(after[0].t_s - onset)
        elif mine:
            false_alarms += 1
    peaks, truth = np.array(peaks), np.array(truth)
    pos, neg = peaks[truth], peaks[~truth]
    auc = float(np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg]))
    return {"calls": len(truth), "escalating": int(truth.sum()), "auc_peak_customer_risk": round(auc, 3),
            "alert_recall": round(caught / max(1, truth.sum()), 3),
            "false_alarm_rate": round(false_alarms / max(1, (~truth).sum()), 3),
            "median_s_from_escalation_to_alert": round(float(np.median(delays)), 2) if delays else None,
            "peak_risk_escalating_median": round(float(np.median(pos)), 3),
            "peak_risk_calm_median": round(float(np.median(neg)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=24, help="test calls (dev gets half as many)")
    args = parser.parse_args()
    from emotivoice.analysis.emotion.corpus import read_manifest
    from emotivoice.analysis.pipeline import CallAnalyzer
    from emotivoice.config import load_settings

    settings = load_settings()
    analyzer = CallAnalyzer(settings)
    card = analyzer.emotion.head.card
    clips = read_manifest(settings.emotion_data_dir / "manifest.csv", {"cremad"})
    dev_actors = sorted(s for s in card["splits"]["val"] if s.startswith("cremad"))
    test_actors = sorted(s for s in card["splits"]["test"] if s.startswith("cremad"))
    with tempfile.TemporaryDirectory() as tmp:
        dev = run(analyzer, build_calls(dev_actors, clips, args.calls // 2, seed=1), Path(tmp), "dev")
        test = run(analyzer, build_calls(test_actors, clips, args.calls, seed=2), Path(tmp), "test")
    configured = settings.risk
    grid = {}
    for t in np.round(np.arange(0.4, 0.81, 0.025), 3):
        r = evaluate(dev, replace(configured, alert_threshold=float(t), rearm_below=float(t) - 0.15))
        grid[float(t)] = r
    best = max(grid, key=lambda t: (grid[t]["alert_recall"] - grid[t]["false_alarm_rate"],
                                    -abs(t - configured.alert_threshold)))
    write_result("escalation", {
        "calls": "10 turns, agent and customer on their own channels, 8 kHz mu-law; half escalate (customer turns "
                 "angry or disgusted from its 3rd or 4th turn), half stay calm (neutral, happy, sad, afraid)",
        "dev_actors": len(dev_actors), "test_actors": len(test_actors),
        "configured_threshold": configured.alert_threshold, "best_dev_threshold": best, "dev_at_best": grid[best],
        "test_at_configured": evaluate(test, configured),
        "test_at_best_dev": evaluate(test, replace(configured, alert_threshold=best, rearm_below=best - 0.15)),
    })


if __name__ == "__main__":
    main()
