"""Rebuild the bundled demo call from CREMA-D clips in ../shared (run once; the output is committed).

A stereo conversation: agent (CREMA-D actor 1006) on the left, customer (actor 1011) on the right,
the customer going from neutral through sadness and disgust to anger. Both actors are in the
emotion model's held-out test split, so the demo shows unseen speakers.

    python assets/demo/make_demo_call.py [--data ../shared/data/emotion]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from emotivoice.analysis.synth import Turn, assemble, write_audio

HERE = Path(__file__).resolve().parent
SCRIPT = [  # (leg, clip stem, gap before the turn in seconds)
    (0, "1006_TIE_NEU_XX", 0.0), (1, "1011_IWW_NEU_XX", 0.7), (0, "1006_IWL_HAP_XX", 0.6),
    (1, "1011_TAI_SAD_XX", 0.8), (0, "1006_ITH_NEU_XX", 0.5), (1, "1011_DFA_DIS_XX", 0.6),
    (0, "1006_MTI_NEU_XX", 0.7), (1, "1011_IEO_ANG_HI", 0.4), (0, "1006_ITS_FEA_XX", 0.6),
    (1, "1011_TSI_ANG_XX", 0.3), (0, "1006_WSI_SAD_XX", 0.9), (1, "1011_TIE_ANG_XX", 0.5),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parents[2] / "shared" / "data" / "emotion"))
    data = Path(parser.parse_args().data)
    rows = {Path(r["path"]).stem: r for r in csv.DictReader((data / "manifest.csv").open())}
    turns = [Turn(leg, data / rows[stem]["path"], rows[stem]["emotion"], rows[stem]["text"], gap)
             for leg, stem, gap in SCRIPT]
    audio, placed = assemble(turns)
    write_audio(audio, HERE / "demo_call.opus", ["-c:a", "libopus", "-b:a", "48k"])
    truth = {"channels": ["agent", "customer"], "source": "CREMA-D (ODbL 1.0)",
             "turns": [{"speaker": ["agent", "customer"][p.leg], "start": round(p.start, 3), "end": round(p.end, 3),
                        "emotion": p.emotion, "text": p.text, "clip": stem}
                       for p, (_, stem, _) in zip(placed, SCRIPT)]}
    (HERE / "demo_call.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(f"demo call: {audio.shape[1] / 16000:.1f} s, {len(placed)} turns")


if __name__ == "__main__":
    main()
