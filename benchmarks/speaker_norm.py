"""Issue 14 lever: normalise each utterance's features against the speaker's own earlier speech.

In a call the emotion step has heard the speaker before; subtracting that speaker's running
feature mean (and dividing by their spread) could remove voice, microphone and channel offsets,
which is what goes wrong on corpora the head never saw. Earlier speech is simulated as k other
clips of the same speaker, drawn three ways, because a call's history is not class-balanced:

- random: k random other clips of the speaker (whatever they felt);
- neutral: k neutral clips (a calm call so far; fewer where the speaker has fewer);
- one_emotion: k clips of one emotion drawn at random per utterance (an angry call throughout;
  it may be the utterance's own emotion, the worst case for a normaliser).

The per-speaker statistics shrink toward the global (training) statistics per feature, with the
empirical-Bayes weight n / (n + k0_d), k0_d = within-speaker / between-speaker variance of that
feature on the training speakers; no history gives the global statistics, i.e. the raw features.
Heads are the default recipe (logistic regression, C and temperature chosen on validation
speakers, clean + telephone copies) trained on features normalised the same way, each training
clip with its own sampled history (kinds mixed, or random only).

    flock /tmp/heavy.lock timeout 3000 python benchmarks/speaker_norm.py   # ~15 min of one core

Reads the feature caches of benchmarks/emotion_midlayers.py (<data dir>/features, 40% of the clips).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from benchmarks.emotion_midlayers import CORPORA, LINEAR_GRID, corpus_clips, features  # noqa: E402

NAMES = ("whisper-base-l234", "egemaps")  # the default head's inputs, in its order
KINDS = ("random", "neutral", "one_emotion")
VARIANTS = ("clean", "phone")


class Data:
    """Features per variant and the labels, corpus, speaker and split part of every clip."""

    def __init__(self, settings, fraction: float):
        from emotivoice.analysis.emotion.corpus import speaker_split

        clips = corpus_clips(settings, fraction)
        f = features(settings, clips, list(NAMES))
        self.x = {v: np.hstack([f[n][v] for n in NAMES]).astype(np.float64) for v in VARIANTS}
        self.y = np.array([c.emotion for c in clips])
        self.corpus = np.array([c.corpus for c in clips])
        self.speaker = np.array([c.speaker for c in clips])
        split = speaker_split(list(self.speaker))
        self.part = np.array([split[s] for s in self.speaker])
        self.by_speaker = {s: np.flatnonzero(self.speaker == s) for s in sorted(set(self.speaker))}


def histories(d: Data, idx: np.ndarray, kind: str, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per clip in idx, the indices of its simulated earlier speech (never the clip itself)."""
    out = []
    for i in idx:
        pool = d.by_speaker[d.speaker[i]]
        pool = pool[pool != i]
        if kind == "neutral":
            pool = pool[d.y[pool] == "neutral"]
        elif kind == "one_emotion":
            emotions = sorted(set(d.y[pool]))
            pool = pool[d.y[pool] == emotions[rng.integers(len(emotions))]]
        out.append(rng.choice(pool, min(k, len(pool)), replace=False) if len(pool) else pool)
    return out


class Prior:
    """Global statistics and the per-feature shrinkage strength k0, from the training clips."""

    def __init__(self, x: np.ndarray, speaker: np.ndarray):
        self.mean, self.var = x.mean(axis=0), x.var(axis=0) + 1e-8
        groups = [x[speaker == s] for s in sorted(set(speaker))]
        within = np.mean([g.var(axis=0) for g in groups], axis=0)
        sizes = np.array([len(g) for g in groups])
        means = np.stack([g.mean(axis=0) for g in groups])
        between = np.maximum(means.var(axis=0) - np.mean(within[None] / sizes[:, None], axis=0), 1e-3 * within)
        self.k0 = within / between  # clips of history worth as much as the global mean

    def normalise(self, x: np.ndarray, history: list[np.ndarray], pool: np.ndarray, with_std: bool) -> np.ndarray:
        """x (rows of clips) re-expressed relative to each row's history (rows of `pool`),
        mapped back onto the global scale so that an empty history leaves the row as it is."""
        out = np.empty_like(x)
        for r, h in enumerate(history):
            w = len(h) / (len(h) + self.k0)
            if len(h):
                mean = w * pool[h].mean(axis=0) + (1 - w) * self.mean
                var = w * pool[h].var(axis=0) + (1 - w) * self.var
            else:
                mean, var = self.mean, self.var
            z = x[r] - mean
            out[r] = (z * np.sqrt(self.var / var) if with_std else z) + self.mean
        return out


def fit(x: dict, y: np.ndarray, train: np.ndarray, val: np.ndarray):
    from emotivoice.analysis.emotion.training import select_head

    labels = tuple(sorted(set(y[train])))
    return select_head(np.concatenate([x[v][train] for v in VARIANTS]), np.concatenate([y[train]] * 2),
                       np.concatenate([x[v][val] for v in VARIANTS]), np.concatenate([y[val]] * 2), labels,
                       grid=LINEAR_GRID)


def normalised(d: Data, prior: Prior, idx: np.ndarray, kinds: tuple[str, ...], k: int, with_std: bool,
               seed: int) -> tuple[dict, float]:
    """variant -> rows of idx normalised by sampled histories (kind drawn per clip from kinds),
    and the mean history length."""
    rng = np.random.default_rng(seed)
    out, lengths = {}, []
    for v in VARIANTS:
        hist = []
        for i in idx:  # per clip its own kind, then its history
            hist += histories(d, np.array([i]), kinds[rng.integers(len(kinds))], k, rng)
        lengths += [len(h) for h in hist]
        out[v] = prior.normalise(d.x[v][idx], hist, d.x[v], with_std)
    return out, float(np.mean(lengths))


def predict(head, x: np.ndarray) -> np.ndarray:
    return np.array(head.labels)[head.logits(x).argmax(axis=1)]


def ua(y: np.ndarray, pred: np.ndarray) -> float:
    labels = sorted(set(y))
    return round(float(np.mean([np.mean(pred[y == lab] == lab) for lab in labels])), 4)


def bootstrap(y, speakers, old, new, rounds: int = 1000) -> dict:
    """New minus old UA, resampling speakers (paired, same clips), from per-speaker class counts."""
    labels, ids = sorted(set(y)), sorted(set(speakers))
    hits = np.zeros((2, len(ids), len(labels)))
    total = np.zeros((len(ids), len(labels)))
    for a, s in enumerate(ids):
        for b, lab in enumerate(labels):
            m = (speakers == s) & (y == lab)
            total[a, b] = m.sum()
            hits[0, a, b], hits[1, a, b] = (old[m] == lab).sum(), (new[m] == lab).sum()
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(rounds):
        pick = rng.integers(len(ids), size=len(ids))
        n = total[pick].sum(axis=0)
        ok = n > 0
        r = hits[:, pick].sum(axis=1)[:, ok] / n[ok]
        gains.append(r[1].mean() - r[0].mean())
    low, high = np.percentile(gains, [2.5, 97.5])
    return {"mean": round(float(np.mean(gains)), 4), "ci95": [round(float(low), 4), round(float(high), 4)]}


def protocol(d: Data, train: np.ndarray, val: np.ndarray, tests: dict[str, np.ndarray], configs: list[dict],
             boot: set[str]) -> dict:
    """Baseline and every config on one train/val/test protocol: UA per test scope, variant and
    history kind, and the bootstrap gain over the baseline for the scopes in boot."""
    t0 = time.perf_counter()
    val_ua, choice, base, _ = fit(d.x, d.y, train, val)
    out = {"baseline": {"head": f"C={choice[1]:g}", "val_ua": round(val_ua, 4),
                        **{s: {v: ua(d.y[m], predict(base, d.x[v][m])) for v in VARIANTS} for s, m in tests.items()}}}
    base_pred = {(s, v): predict(base, d.x[v][m]) for s, m in tests.items() for v in VARIANTS}
    print("baseline", out["baseline"], f"{time.perf_counter() - t0:.0f} s", flush=True)
    tr = np.flatnonzero(train | val)
    prior = Prior(np.concatenate([d.x[v][train] for v in VARIANTS]),
                  np.concatenate([np.char.add(d.speaker[train], "|" + v) for v in VARIANTS]))
    for cfg in configs:
        t0 = time.perf_counter()
        name = f"{cfg['stats']} k={cfg['k']} train={cfg['train']}"
        kinds = KINDS if cfg["train"] == "mixed" else ("random",)
        with_std = cfg["stats"] == "mean+std"
        xn, _ = normalised(d, prior, tr, kinds, cfg["k"], with_std, seed=1)
        full = {v: np.zeros_like(d.x[v]) for v in VARIANTS}
        for v in VARIANTS:
            full[v][tr] = xn[v]
        val_ua, choice, head, _ = fit(full, d.y, train, val)
        res = {"head": f"C={choice[1]:g}", "val_ua": round(val_ua, 4),
               "k0_median": round(float(np.median(prior.k0)), 2)}
        for s, m in tests.items():
            idx = np.flatnonzero(m)
            res[s] = {}
            for kind in KINDS:
                xt, length = normalised(d, prior, idx, (kind,), cfg["k"], with_std, seed=2)
                res[s][kind] = {"mean_history": round(length, 2)}
                for v in VARIANTS:
                    pred = predict(head, xt[v])
                    res[s][kind][v] = ua(d.y[idx], pred)
                    if s in boot:
                        res[s][kind][f"gain_{v}"] = bootstrap(d.y[idx], d.speaker[idx], base_pred[(s, v)], pred)
        res["fit_seconds"] = round(time.perf_counter() - t0, 1)
        out[name] = res
        print(name, res, flush=True)
    return out


def configs_for(ks: tuple[int, ...], extra_random: bool) -> list[dict]:
    out = [{"stats": s, "k": k, "train": "mixed"} for s in ("mean", "mean+std") for k in ks]
    if extra_random:
        out += [{"stats": s, "k": max(ks), "train": "random"} for s in ("mean", "mean+std")]
    return out


def main() -> None:
    from emotivoice.config import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--fraction", type=float, default=0.4, help="the share the feature caches hold")
    parser.add_argument("--k", default="3,5,10", help="history lengths")
    parser.add_argument("--no-loco", action="store_true", help="held-out CREMA-D only")
    parser.add_argument("--name", default="speaker_norm")
    args = parser.parse_args()
    ks = tuple(int(k) for k in args.k.split(","))
    d = Data(load_settings(), args.fraction)
    started = time.perf_counter()
    result: dict = {
        "fraction": args.fraction, "clips": int(len(d.y)), "history_kinds": list(KINDS), "k": list(ks),
        "protocol": "default head recipe (logistic regression on Whisper base layers 2-4 mean+std + eGeMAPS, "
                    "C and temperature on validation speakers, clean + telephone copies); normalised heads "
                    "train on features normalised by histories sampled from the train speakers (train=mixed: "
                    "kind drawn per clip; train=random: random histories only); test histories from the test "
                    "speaker's other clips, same audio variant; UA; gains: normalised minus baseline, "
                    "bootstrap over speakers (1000 rounds, paired)"}
    configs = configs_for(ks, extra_random=True)
    test = d.part == "test"
    result["held_out"] = protocol(d, d.part == "train", d.part == "val",
                                  {"cremad": test & (d.corpus == "cremad"), "overall": test}, configs, {"cremad"})
    if not args.no_loco:
        result["leave_one_corpus_out"] = {}
        for held in CORPORA:
            rest = d.corpus != held
            result["leave_one_corpus_out"][held] = protocol(
                d, rest & (d.part == "train"), rest & (d.part == "val"), {held: d.corpus == held},
                configs_for(ks, extra_random=True), {held} if held != "tess" else set())
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_result(args.name, result)


if __name__ == "__main__":
    main()
