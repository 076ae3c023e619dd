"""Telephone transcripts: is every turn heard, quiet or shouted, on 8 kHz lines, and how fast?

Two-party stereo calls are assembled from actors the emotion head never trained on (its card's
test split: 15 CREMA-D actors, 4 RAVDESS actors; `--split dev` uses its 10 validation actors,
on which the segmentation thresholds were chosen). The agent (left channel) reads neutral
sentences; the customer reads a neutral sentence, CREMA-D's low-intensity sad and high-intensity
angry takes of "It's eleven o'clock." (RAVDESS: normal-intensity sad, strong angry) and three
other emotional readings, in an order that varies per call. About 12 turns a call, 0.4-1.5 s apart,
each leg at its recorded level +-3 dB (shouted takes clip as they would on a line). Each call is
written in four conditions and analysed by the real `CallAnalyzer`, as `emotivoice analyze` does:

- 16k: 16 kHz 16-bit PCM;
- 8k_mulaw: 8 kHz G.711 mu-law;
- 8k_mulaw_noise15: pink noise on each leg 15 dB below that leg's median turn level, then mu-law;
- 8k_band: a 300-3400 Hz band-pass (G.729-like), 8 kHz 16-bit PCM.

Reported per condition: the share of turns heard (an utterance of the turn's speaker has words
timed within the turn), WER per role (numbers and punctuation normalised), hallucinated words
per call (words timed outside every turn of their leg, 0.25 s tolerance), and the real-time factor.

    python benchmarks/telephone_asr.py [--calls 24] [--split test|dev] [--model base] [--name telephone_asr]
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

CONDITIONS = ("16k", "8k_mulaw", "8k_mulaw_noise15", "8k_band")
CUSTOMER_TURNS = 6  # and as many agent turns, alternating, agent first
TOLERANCE_S = 0.25  # word timestamps are this loose at the edges of a turn
OTHER = ["anger", "disgust", "fear", "happiness", "sadness", "neutral"]


@dataclass(frozen=True)
class Placed:
    leg: int
    start: float
    end: float
    text: str
    label: str  # neutral, sad_lo, ang_hi, or the emotion of another reading


# ---- building calls --------------------------------------------------------------------------


def _by_actor(clips) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in clips:
        out.setdefault(c.speaker, []).append(c)
    return out


def _is_sad_lo(c) -> bool:
    return c.emotion == "sadness" and (c.intensity == "low" if c.corpus == "cremad" else c.intensity == "medium")


def _is_ang_hi(c) -> bool:
    return c.emotion == "anger" and c.intensity == "high"


def customer_turns(mine: list, rng: random.Random) -> list[tuple[object, str]]:
    """Six readings: neutral, sad (low), angry (high) and three others of varied sentences."""
    sad = rng.choice([c for c in mine if _is_sad_lo(c)])
    ang = rng.choice([c for c in mine if _is_ang_hi(c)])
    used = {sad.path, ang.path}
    texts = {sad.text, ang.text}

    def pick(emotion: str):
        """A reading of this emotion, of a sentence not yet said in the call where there is one."""
        pool = [c for c in mine if c.emotion == emotion and c.path not in used and c.intensity != "low"]
        fresh = [c for c in pool if c.text not in texts]
        chosen = rng.choice(fresh or pool)
        used.add(chosen.path)
        texts.add(chosen.text)
        return chosen

    neutral = pick("neutral")
    others = [(pick(emotion), emotion) for emotion in rng.sample(OTHER, 3)]
    middle = [(sad, "sad_lo"), (ang, "ang_hi")] + others
    rng.shuffle(middle)
    return [(neutral, "neutral")] + middle


def agent_turns(mine: list, rng: random.Random, n: int) -> list:
    """Neutral readings, sentences varied as far as the actor has them."""
    neutral = [c for c in mine if c.emotion == "neutral"]
    rng.shuffle(neutral)
    by_text: dict[str, list] = {}
    for c in neutral:
        by_text.setdefault(c.text, []).append(c)
    order = [v[r] for r in range(max(len(v) for v in by_text.values())) for v in by_text.values() if r < len(v)]
    return [order[i % len(order)] for i in range(n)]


def build_calls(actors: list[str], clips, n: int, seed: int) -> list[list[tuple[object, int, str, float]]]:
    """n calls as [(clip, leg, label, gap_s)]; a third have a RAVDESS customer, a sixth a RAVDESS agent."""
    rng = random.Random(seed)
    mine = _by_actor(clips)
    cremad = [a for a in actors if a.startswith("cremad")]
    ravdess = [a for a in actors if a.startswith("ravdess")]
    calls = []
    for i in range(n):
        customer = rng.choice(ravdess if i % 3 == 2 else cremad)
        agent = rng.choice([a for a in (ravdess if i % 6 == 1 else cremad) if a != customer])
        cust = customer_turns(mine[customer], rng)
        agen = agent_turns(mine[agent], rng, len(cust))
        turns = []
        for a, (c, label) in zip(agen, cust):
            turns.append((a, 0, "neutral", rng.uniform(0.4, 1.5)))
            turns.append((c, 1, label, rng.uniform(0.4, 1.5)))
        calls.append(turns)
    return calls


def assemble_call(turns, rng: random.Random) -> tuple[np.ndarray, list[Placed]]:
    from emotivoice.analysis.synth import Turn, assemble

    audio, placed = assemble([Turn(leg, c.path, label, c.text, gap) for c, leg, label, gap in turns])
    for leg in range(2):
        audio[leg] *= 10 ** (rng.uniform(-3, 3) / 20)
    return audio, [Placed(p.leg, p.start, p.end, p.text, p.emotion) for p in placed]


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise**2))


def turn_level(x: np.ndarray) -> float:
    """Active speech power of a turn: the mean of its 20 ms frames within 30 dB of its loudest."""
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    active = power[power >= power.max() * 1e-3]
    return float(np.mean(active))


def condition_audio(audio: np.ndarray, placed: list[Placed], condition: str, seed: int) -> tuple[np.ndarray, list[str]]:
    """The call's (2, n) 16 kHz audio as this condition passes it, and FFmpeg's output codec args."""
    from scipy.signal import butter, sosfiltfilt

    if condition == "16k":
        return audio, ["-c:a", "pcm_s16le"]
    if condition == "8k_mulaw":
        return audio, ["-ar", "8000", "-c:a", "pcm_mulaw"]
    if condition == "8k_mulaw_noise15":
        rng = np.random.default_rng(seed)
        noisy = audio.copy()
        for leg in range(2):
            levels = [turn_level(audio[leg, int(p.start * 16000):int(p.end * 16000)]) for p in placed if p.leg == leg]
            noisy[leg] += (pink_noise(audio.shape[1], rng) * np.sqrt(np.median(levels)) * 10 ** (-15 / 20)
                           ).astype(np.float32)
        return noisy, ["-ar", "8000", "-c:a", "pcm_mulaw"]
    if condition == "8k_band":
        sos = butter(6, [300, 3400], btype="bandpass", fs=16000, output="sos")
        return sosfiltfilt(sos, audio, axis=1).astype(np.float32), ["-ar", "8000", "-c:a", "pcm_s16le"]
    raise ValueError(condition)


# ---- scoring ---------------------------------------------------------------------------------

NUMBERS = {str(i): w for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def norm_words(text: str) -> list[str]:
    """Lower case, no punctuation or apostrophes, digits as words ("11:00" -> "eleven o'clock")."""
    text = re.sub(r"\b(\d{1,2}):00\b", r"\1 o'clock", text.lower())
    text = re.sub(r"\b(\d{1,2})\b", lambda m: NUMBERS.get(m.group(1), m.group(1)), text)
    text = text.replace("'", "").replace("’", "")
    return re.sub(r"[^a-z0-9 ]+", " ", text).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[:], i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return d[-1]


def word_errors(ref: list[str], hyp: list[str]) -> list[str]:
    """The edits of one alignment, as "ref>hyp", "ref>" (deleted) and ">hyp" (inserted)."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    out, i, j = [], n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] != hyp[j - 1]:
                out.append(f"{ref[i - 1]}>{hyp[j - 1]}")
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            out.append(f"{ref[i - 1]}>")
            i -= 1
        else:
            out.append(f">{hyp[j - 1]}")
            j -= 1
    return out[::-1]


def score_call(result, placed: list[Placed]) -> dict:
    """Turns heard, WER counts per role, and words outside every turn of their leg."""
    leg_of = {s.label: s.leg for s in result.speakers}
    words = [(leg_of[u.speaker], w) for u in result.utterances for w in u.words]
    alone = {id(w): len(u.words) for u in result.utterances for w in u.words}  # words in its utterance
    heard = []
    for p in placed:
        heard.append(any(leg == p.leg and w.end > p.start - TOLERANCE_S and w.start < p.end + TOLERANCE_S
                         for leg, w in words))
    outside = [f"{w.word.strip()} (p {w.probability:.2f}, 1 of {alone[id(w)]})" for leg, w in words
               if not any(p.leg == leg and w.end > p.start - TOLERANCE_S and w.start < p.end + TOLERANCE_S
                          for p in placed)]
    wer, edits = {}, {}
    for leg, role in ((0, "agent"), (1, "customer")):
        ref = [x for p in placed if p.leg == leg for x in norm_words(p.text)]
        # the words joined as Whisper wrote them (" It" "'s" is one word), then normalised like the reference
        hyp = norm_words("".join(w.word for lg, w in sorted(words, key=lambda lw: lw[1].start) if lg == leg))
        wer[role] = (edit_distance(ref, hyp), len(ref))
        edits[role] = word_errors(ref, hyp)
    empty = sum(1 for u in result.utterances if not u.words)
    return {"heard": heard, "outside": outside, "wer": wer, "edits": edits, "empty_utterances": empty,
            "asr": result.metrics.get("asr", {})}


def summarise(scored: list[dict], placed_calls: list[list[Placed]], audio_s: float, wall_s: float) -> dict:
    labels: dict[str, list[bool]] = {}
    misses = []
    for i, (s, placed) in enumerate(zip(scored, placed_calls)):
        for h, p in zip(s["heard"], placed):
            labels.setdefault(p.label if p.leg == 1 else "agent", []).append(h)
            if not h:
                misses.append({"call": i, "leg": p.leg, "label": p.label, "start": round(p.start, 2),
                               "text": p.text})
    turns = sum(len(s["heard"]) for s in scored)
    heard = sum(sum(s["heard"]) for s in scored)
    wer = {role: round(sum(s["wer"][role][0] for s in scored) / max(1, sum(s["wer"][role][1] for s in scored)), 4)
           for role in ("agent", "customer")}
    asr: dict[str, int] = {}
    for s in scored:
        for k, v in s["asr"].items():
            if isinstance(v, (int, float)):
                asr[k] = asr.get(k, 0) + v
    return {
        "turns": turns, "turns_heard": heard, "share_heard": round(heard / max(1, turns), 4),
        "heard_by_label": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(labels.items())},
        "wer": wer,
        "hallucinated_words_per_call": round(sum(len(s["outside"]) for s in scored) / max(1, len(scored)), 3),
        "hallucinated_words": [w for s in scored for w in s["outside"]][:40],
        "empty_utterances": sum(s["empty_utterances"] for s in scored),
        "asr_counts": asr,
        "audio_s": round(audio_s, 1), "analysis_s": round(wall_s, 1),
        "real_time_factor": round(wall_s / audio_s, 4) if audio_s else None,
        "missed_turns": misses[:30],
        # what the errors are, most frequent first: a misheard word, a dropped one (w>), an extra one (>w)
        "word_errors": {role: dict(Counter(e for s in scored for e in s["edits"][role]).most_common(25))
                        for role in ("agent", "customer")},
        "per_call": [{"heard": f"{sum(s['heard'])}/{len(s['heard'])}",
                      "wer": {r: round(e / max(1, n), 3) for r, (e, n) in s["wer"].items()}} for s in scored],
    }


def tune_vad(built, conditions: list[str], workdir: Path, cfg) -> dict:
    """Turn recall and speech found outside turns by silero per threshold, on these (dev) calls,
    judged as the batch segmenter judges them: at the recording's rate, the leg peak-normalised."""
    from dataclasses import replace

    from emotivoice.analysis.audio import load_audio, probe
    from emotivoice.analysis.segmentation import silero_probabilities, vad_params
    from emotivoice.analysis.synth import write_audio
    from emotivoice.analysis.vad import regions_from_probabilities, vad_rate

    grid = [round(t, 2) for t in np.arange(0.3, 0.651, 0.05)]
    windows = {"whole leg": (1e6, 0.0), "1 s (0.5 s warm-up)": (1.0, 0.5), "2 s (1 s warm-up)": (2.0, 1.0),
               "4 s (2 s warm-up)": (4.0, 2.0)}
    keys = [(w, t) for w in windows for t in grid]
    out: dict = {}
    for condition in conditions:
        rows = {k: {"turns": 0, "found": 0, "outside_s": 0.0, "sad_lo_missed": 0, "ang_hi_missed": 0} for k in keys}
        for i, (audio, placed) in enumerate(built):
            signal, codec = condition_audio(audio, placed, condition, seed=i)
            path = write_audio(signal, workdir / f"tune-{condition}-{i:02d}.wav", codec)
            rate = vad_rate(probe(path).sample_rate)
            decoded = load_audio(path)
            for leg in range(2):
                x = decoded[leg]
                peak = float(np.max(np.abs(x)))
                mine = [p for p in placed if p.leg == leg]
                for w, (window_s, warmup_s) in windows.items():
                    probs = silero_probabilities(x * (0.95 / peak) if peak > 1e-4 else x, rate,
                                                 replace(cfg, vad_window_s=window_s, vad_warmup_s=warmup_s))
                    for t in grid:
                        params = vad_params(replace(cfg, vad_threshold=t, vad_neg_threshold=max(0.05, t - 0.15)))
                        regions = regions_from_probabilities(probs, rate, params)
                        r = rows[(w, t)]
                        for p in mine:
                            hit = any(b > p.start and a < p.end for a, b in regions)
                            r["turns"] += 1
                            r["found"] += hit
                            r["sad_lo_missed"] += (not hit) and p.label == "sad_lo"
                            r["ang_hi_missed"] += (not hit) and p.label == "ang_hi"
                        for a, b in regions:
                            inside = sum(max(0.0, min(b, p.end + TOLERANCE_S) - max(a, p.start - TOLERANCE_S))
                                         for p in mine)
                            r["outside_s"] += max(0.0, (b - a) - inside)
        out[condition] = {f"{w} @ {t}": {**r, "outside_s": round(r["outside_s"], 1)} for (w, t), r in rows.items()}
    # every dev turn found in every condition; then the least speech found outside turns
    complete = [k for k in keys if all(out[c][f"{k[0]} @ {k[1]}"]["found"] == out[c][f"{k[0]} @ {k[1]}"]["turns"]
                                       for c in conditions)]
    best = min(complete, key=lambda k: (sum(out[c][f"{k[0]} @ {k[1]}"]["outside_s"] for c in conditions), -k[1]),
               default=None)
    out["chosen"] = {"window": best[0], "window_s": windows[best[0]][0], "warmup_s": windows[best[0]][1],
                     "threshold": best[1]} if best else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=24)
    parser.add_argument("--split", choices=("test", "dev"), default="test",
                        help="test: the head's held-out actors (reported); dev: its validation actors (tuning)")
    parser.add_argument("--model", default="base")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--name", default="", help="results file name (default telephone_asr[_dev])")
    parser.add_argument("--batch-size", type=int, help="transcription.batch_size (default: the configured one)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", type=Path, help="keep the assembled audio in this directory")
    parser.add_argument("--tune-vad", action="store_true",
                        help="VAD only: turn recall and false speech per silero threshold (use with --split dev)")
    args = parser.parse_args()

    from dataclasses import asdict, replace

    from emotivoice.analysis.emotion.corpus import read_manifest
    from emotivoice.analysis.pipeline import CallAnalyzer
    from emotivoice.analysis.synth import write_audio
    from emotivoice.config import load_settings

    settings = load_settings()
    tc = replace(settings.transcription, model=args.model)
    if args.batch_size is not None:
        tc = replace(tc, batch_size=args.batch_size)
    settings = replace(settings, transcription=tc)
    analyzer = CallAnalyzer(settings)
    card = analyzer.emotion.head.card
    actors = sorted(s for s in card["splits"]["val" if args.split == "dev" else "test"]
                    if s.startswith(("cremad", "ravdess")))
    clips = [c for c in read_manifest(settings.emotion_data_dir / "manifest.csv", {"cremad", "ravdess"})
             if c.speaker in set(actors)]
    calls = build_calls(actors, clips, args.calls, args.seed + (1000 if args.split == "dev" else 0))
    rng = random.Random(args.seed)
    built = [assemble_call(turns, rng) for turns in calls]
    conditions = args.conditions.split(",")
    if args.tune_vad:
        with tempfile.TemporaryDirectory() as tmp:
            tuned = tune_vad(built, conditions, args.keep or Path(tmp), settings.segmentation)
        write_result(args.name or f"telephone_vad_{args.split}", {
            "calls": len(built), "split": args.split, "actors": actors, "neg_threshold": "threshold - 0.15",
            "by_condition": tuned})
        return
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        for condition in conditions:
            scored, audio_s, wall_s = [], 0.0, 0.0
            for i, (audio, placed) in enumerate(built):
                signal, codec = condition_audio(audio, placed, condition, seed=i)
                path = write_audio(signal, workdir / f"{condition}-{i:02d}.wav", codec)
                t0 = time.perf_counter()
                result = analyzer.analyze(path, call_id=f"{condition}-{i}")
                wall_s += time.perf_counter() - t0
                audio_s += result.duration_s
                scored.append(score_call(result, placed))
                wer = {role: round(e / max(1, n), 3) for role, (e, n) in scored[-1]["wer"].items()}
                print(f"{condition} call {i}: heard {sum(scored[-1]['heard'])}/{len(placed)}, wer {wer}, "
                      f"outside {scored[-1]['outside']}, asr {scored[-1]['asr']}", file=sys.stderr, flush=True)
            report[condition] = summarise(scored, [p for _, p in built], audio_s, wall_s)
    name = args.name or ("telephone_asr" if args.split == "test" else "telephone_asr_dev")
    write_result(name, {
        "calls": len(built), "split": args.split, "actors": actors, "model": args.model,
        "set": "two-party stereo calls, ~12 turns (agent neutral; customer neutral, sad low, angry high and three "
               "other readings), 0.4-1.5 s pauses, legs at their recorded level +-3 dB",
        "settings": {"segmentation": asdict(settings.segmentation), "transcription": asdict(settings.transcription)},
        "conditions": report,
    })


if __name__ == "__main__":
    main()
