"""Real-time factor and peak memory of batch analysis on a 2-minute stereo call.

The call is assembled from CREMA-D clips of held-out actors in ../shared (agent left, customer
right), written as 8 kHz mu-law like a telephony recording, and analysed in a fresh process per
model so peak memory is the analysis's own. Accuracy is measured in the same run (turns heard and
WER per role, scored as benchmarks/telephone_asr.py scores them), so a speed-up that costs words
shows here too.

    python benchmarks/analyze_rtf.py [--minutes 2] [--models base,tiny.en]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402


def build_call(minutes: float, out: Path) -> Path:
    from emotivoice.analysis.emotion.corpus import read_manifest
    from emotivoice.analysis.synth import Turn, assemble, write_audio
    from emotivoice.config import load_settings

    clips = read_manifest(load_settings().emotion_data_dir / "manifest.csv", {"cremad"})
    def varied(speaker: str) -> list:
        """The actor's clips ordered so consecutive turns differ in sentence and emotion, as in a
        real call (a run of one repeated sentence sends Whisper into its temperature fallback)."""
        mine = sorted((c for c in clips if c.speaker == speaker), key=lambda c: c.path.name)
        by_sentence: dict[str, list] = {}
        for c in mine:
            by_sentence.setdefault(c.path.name.split("_")[1], []).append(c)
        rounds = max(len(v) for v in by_sentence.values())
        return [v[r] for r in range(rounds) for v in by_sentence.values() if r < len(v)]

    agent, customer = varied("cremad-1016"), varied("cremad-1021")
    turns, total, i = [], 0.0, 0
    while total < minutes * 60:
        pool = agent if i % 2 == 0 else customer
        clip = pool[(i // 2) % len(pool)]
        turns.append(Turn(i % 2, clip.path, clip.emotion, clip.text, 0.7))
        total += 3.2  # clips average about 2.5 s plus the gap
        i += 1
    audio, placed = assemble(turns)
    out.with_suffix(".truth.json").write_text(json.dumps([p.__dict__ for p in placed]))
    return write_audio(audio, out, ["-ar", "8000", "-c:a", "pcm_mulaw"])


def measure(call: Path, model: str) -> dict:
    """Run one analysis in this process (the child side) and report timings."""
    from dataclasses import replace

    from emotivoice.analysis.audio import probe
    from emotivoice.analysis.pipeline import CallAnalyzer
    from emotivoice.config import load_settings

    settings = load_settings()
    settings = replace(settings, transcription=replace(settings.transcription, model=model))
    t0 = time.perf_counter()
    analyzer = CallAnalyzer(settings)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = analyzer.analyze(call)
    wall = time.perf_counter() - t0
    duration = probe(call).duration_s
    from benchmarks.telephone_asr import Placed, score_call

    placed = [Placed(p["leg"], p["start"], p["end"], p["text"], p["emotion"])
              for p in json.loads(call.with_suffix(".truth.json").read_text())]
    scored = score_call(result, placed)
    accuracy = {"turns_heard": f"{sum(scored['heard'])}/{len(placed)}",
                "wer": {role: round(e / max(1, n), 4) for role, (e, n) in scored["wer"].items()},
                "hallucinated_words": len(scored["outside"])}
    return {"model": model, "accuracy": accuracy, "audio_s": round(duration, 1), "model_load_s": round(load_s, 2),
            "analysis_s": round(wall, 2), "real_time_factor": round(wall / duration, 3),
            "stages_s": {k: round(v, 2) for k, v in analyzer.timings.seconds.items()},
            "utterances": len(result.utterances),
            "asr": result.metrics.get("asr", {}),  # the retries and dropped words behind the transcription time
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--models", default="base,tiny.en")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        call = build_call(args.minutes, Path(tmp) / "call.wav")
        runs = []
        for model in args.models.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", str(call), model], capture_output=True,
                                 text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    call = f"{args.minutes:g} min stereo, 8 kHz mu-law, CREMA-D held-out actors"
    write_result(f"analyze_rtf_{args.minutes:g}min", {"call": call, "runs": runs})


if __name__ == "__main__":
    main()
