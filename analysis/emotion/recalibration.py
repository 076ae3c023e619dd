"""Per-deployment correction of the emotion head, learnt from coaches' corrections.

A deployment's voices, lines and culture shift the head's outputs in ways a corpus cannot foresee:
one team's customers sound angrier than they are, another's never sound sad. The correction is
small on purpose, a temperature and one bias per emotion on the head's log-probabilities
(`softmax(log p / T + b)`), so a few hundred labelled utterances can fit it and it cannot forget
what the head learnt. Three guards keep a handful of corrections from wrecking it:

- a prior that pulls T to 1 and b to 0 with the weight of `prior_weight` corrections, so 25
  corrections move it a little and 400 move it as far as they agree;
- weights that balance the emotions coaches corrected (a coach who only fixes "anger" does not
  teach the model that everything is anger) and cap any one call's share;
- a held-back check: the correction is fitted on three quarters of the calls and must lower the
  log-loss on the other quarter, or it is refused.

Named profiles (the seed's cultural calibration) live in one owner-only JSON file, chosen per call
by team or language (`emotion.calibration_by_team`, `emotion.calibration_by_language`), and are
re-read when the file changes, so the live and batch paths use a new fit from the next utterance on.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_PROFILE = "default"
_EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    """softmax(log p / temperature + bias): identity at temperature 1 and zero bias."""

    temperature: float = 1.0
    bias: dict[str, float] = field(default_factory=dict)
    corrections: int = 0
    fitted_at: str = ""
    heldout: dict = field(default_factory=dict)  # log-loss and accuracy before/after on held-back calls

    def apply(self, probs: dict[str, float]) -> dict[str, float]:
        if not probs or (self.temperature == 1.0 and not any(self.bias.values())):
            return dict(probs)
        labels = list(probs)
        z = np.log(np.clip([probs[k] for k in labels], _EPS, 1.0)) / self.temperature
        z += np.array([self.bias.get(k, 0.0) for k in labels])
        e = np.exp(z - z.max())
        return dict(zip(labels, map(float, e / e.sum())))

    def undo(self, probs: dict[str, float]) -> dict[str, float]:
        """The head's own probabilities behind ones this correction produced (softmax is invertible
        up to a constant, so T * (log p' - b) recovers them exactly)."""
        labels = list(probs)
        z = (np.log(np.clip([probs[k] for k in labels], _EPS, 1.0)) - [self.bias.get(k, 0.0) for k in labels])
        z *= self.temperature
        e = np.exp(z - z.max())
        return dict(zip(labels, map(float, e / e.sum())))


@dataclass(frozen=True)
class Correction:
    """One coach label on one utterance, with the head's own (uncorrected) probabilities."""

    probabilities: dict[str, float]
    label: str
    call_id: str = ""


class RecalibrationRefused(ValueError):
    """Too few corrections, or a fit that made the held-back corrections worse."""


def _weights(corrections: Sequence[Correction], call_cap: float) -> np.ndarray:
    counts = Counter(c.label for c in corrections)
    per_class = np.array([len(corrections) / (len(counts) * counts[c.label]) for c in corrections])
    w = np.clip(per_class, 0.25, 4.0)
    w /= w.mean()
    # one call's corrections count as at most call_cap of them all (and at least one whole
    # correction each call), so twenty clicks on one call weigh like four against the prior
    calls = Counter(c.call_id for c in corrections)
    cap = max(1.0, call_cap * len(corrections))
    return w * np.array([min(1.0, cap / calls[c.call_id]) for c in corrections])


def _fit(logp: np.ndarray, y: np.ndarray, w: np.ndarray, prior_weight: float) -> tuple[float, np.ndarray]:
    from scipy.optimize import minimize

    k = logp.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        log_inv_t, b = theta[0], theta[1:]
        inv_t = np.exp(log_inv_t)
        z = logp * inv_t + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        nll = -np.sum(w * np.log(p[np.arange(len(y)), y] + 1e-12))
        grad_z = p.copy()
        grad_z[np.arange(len(y)), y] -= 1.0
        grad_z *= w[:, None]
        g_b = grad_z.sum(axis=0) + 2 * prior_weight * b
        g_t = float(np.sum(grad_z * logp) * inv_t) + 2 * prior_weight * log_inv_t
        return nll + prior_weight * (log_inv_t**2 + float(b @ b)), np.concatenate([[g_t], g_b])

    res = minimize(loss, np.zeros(k + 1), jac=True, method="L-BFGS-B")
    b = res.x[1:] - res.x[1:].mean()  # a common shift changes nothing
    return float(np.exp(-res.x[0])), b


def _log_loss(cal: Calibration, corrections: Sequence[Correction]) -> tuple[float, float]:
    losses, hits = [], []
    for c in corrections:
        p = cal.apply(c.probabilities)
        losses.append(-np.log(max(p.get(c.label, 0.0), 1e-12)))
        hits.append(max(p, key=p.get) == c.label)
    return float(np.mean(losses)), float(np.mean(hits))


def fit_calibration(corrections: Sequence[Correction], prior_weight: float = 10.0, call_cap: float = 0.2,
                    min_corrections: int = 20, heldout_share: float = 0.25, when: str = "") -> Calibration:
    """A correction fitted on `corrections`, or RecalibrationRefused.

    The labels are the head's; corrections naming anything else are ignored."""
    usable = [c for c in corrections if c.label in c.probabilities]
    if len(usable) < min_corrections:
        raise RecalibrationRefused(f"{len(usable)} usable emotion corrections; at least {min_corrections} needed")
    labels = sorted(usable[0].probabilities)
    calls = sorted({c.call_id for c in usable})
    rng = np.random.default_rng(0)
    if len(calls) >= 4:  # hold back whole calls: utterances of one call are not independent
        held = set(rng.choice(calls, max(1, round(len(calls) * heldout_share)), replace=False).tolist())
        fit_on = [c for c in usable if c.call_id not in held]
        check = [c for c in usable if c.call_id in held]
    else:
        order = rng.permutation(len(usable))
        cut = max(1, round(len(usable) * heldout_share))
        check = [usable[i] for i in order[:cut]]
        fit_on = [usable[i] for i in order[cut:]]
    trial = _calibration(fit_on, labels, prior_weight, call_cap, when)
    before, before_acc = _log_loss(Calibration(), check)
    after, after_acc = _log_loss(trial, check)
    heldout = {"corrections": len(check), "log_loss_before": round(before, 4), "log_loss_after": round(after, 4),
               "accuracy_before": round(before_acc, 4), "accuracy_after": round(after_acc, 4)}
    if after > before:
        raise RecalibrationRefused(f"the fit made {len(check)} held-back corrections worse "
                                   f"(log-loss {before:.3f} -> {after:.3f}); the current calibration stays")
    final = _calibration(usable, labels, prior_weight, call_cap, when)
    return Calibration(final.temperature, final.bias, len(usable), when, heldout)


def _calibration(corrections: Sequence[Correction], labels: list[str], prior_weight: float, call_cap: float,
                 when: str) -> Calibration:
    logp = np.log(np.clip([[c.probabilities.get(k, 0.0) for k in labels] for c in corrections], _EPS, 1.0))
    y = np.array([labels.index(c.label) for c in corrections])
    temperature, bias = _fit(logp, y, _weights(corrections, call_cap), prior_weight)
    return Calibration(round(temperature, 4), {k: round(float(v), 4) for k, v in zip(labels, bias)},
                       len(corrections), when)


# ---- profiles on disk --------------------------------------------------------------------------

def read_profiles(path: Path) -> dict[str, Calibration]:
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    return {str(name): Calibration(float(p.get("temperature", 1.0)), {str(k): float(v) for k, v in
                                   p.get("bias", {}).items()}, int(p.get("corrections", 0)),
                                   str(p.get("fitted_at", "")), dict(p.get("heldout", {})))
            for name, p in raw.get("profiles", {}).items()}


def write_profile(path: Path, name: str, calibration: Calibration) -> None:
    """Replace one profile, atomically and owner-only (a reader never sees half a file)."""
    profiles = read_profiles(path)
    profiles[name] = calibration
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".calibration-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"profiles": {k: asdict(v) for k, v in sorted(profiles.items())}}, f, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Recalibrator:
    """The deployment's profiles, re-read when their file changes; identity when there is none."""

    def __init__(self, path: Path | None, by_team: dict[str, str] | None = None,
                 by_language: dict[str, str] | None = None):
        self.path = path
        self.by_team = dict(by_team or {})
        self.by_language = dict(by_language or {})
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._profiles: dict[str, Calibration] = {}

    def profiles(self) -> dict[str, Calibration]:
        if self.path is None:
            return {}
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._profiles = read_profiles(self.path) if stamp else {}
                except (OSError, ValueError, TypeError, AttributeError):
                    pass  # a bad file keeps the last good profiles; `recalibrate` writes atomically
                self._stamp = stamp
            return self._profiles

    def profile_for(self, team: str | None = None, language: str | None = None) -> str:
        """The call's profile: its team's, else its language's, else the default."""
        if team and team in self.by_team:
            return self.by_team[team]
        if language and language in self.by_language:
            return self.by_language[language]
        return DEFAULT_PROFILE

    def calibration(self, profile: str) -> Calibration | None:
        return self.profiles().get(profile)

    def summary_for(self, team: str | None = None, language: str | None = None) -> dict:
        """The call's profile and its correction as the call records it (calibration_summary)."""
        profile = self.profile_for(team, language)
        return calibration_summary(profile, self.calibration(profile))

    def apply(self, probabilities: list[dict[str, float]], profile: str) -> list[dict[str, float]]:
        cal = self.calibration(profile)
        return probabilities if cal is None else [cal.apply(p) for p in probabilities]


def parse_mapping(text: str) -> dict[str, str]:
    """"sales=uk, support=us" -> {"sales": "uk", "support": "us"}; a malformed pair is an error."""
    out = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"calibration mapping {pair!r}: expected name=profile")
        out[key.strip()] = value.strip()
    return out


def calibration_path(settings) -> Path:
    ec = settings.emotion
    return Path(ec.calibration_file).expanduser() if ec.calibration_file else settings.data_dir / "calibration.json"


def recalibrator_for(settings) -> Recalibrator:
    """The Recalibrator the settings describe (`settings` is emotivoice.config.Settings)."""
    ec = settings.emotion
    return Recalibrator(calibration_path(settings), parse_mapping(ec.calibration_by_team),
                        parse_mapping(ec.calibration_by_language))


def calibration_summary(profile: str, calibration: Calibration | None) -> dict:
    """What a call records about the correction it was scored under: enough to undo it when the
    next recalibration reads this call's corrected probabilities back."""
    if calibration is None:
        return {"profile": None}
    return {"profile": profile, "temperature": calibration.temperature, "bias": calibration.bias,
            "fitted_at": calibration.fitted_at}


def corrections_from_rows(rows) -> list[Correction]:
    """The store's `emotion_corrections` rows as Corrections on the head's own probabilities: each
    call's recorded calibration is undone first, so refitting never compounds an earlier fit."""
    out = []
    if rows is None or len(rows) == 0:
        return out
    for (call_id, _), group in rows.groupby(["call_id", "utterance_idx"], sort=True):
        probs = dict(zip(group["emotion"].astype(str), group["probability"].astype(float)))
        applied = group["calibration"].iloc[0]
        try:
            summary = json.loads(applied) if isinstance(applied, str) else None
        except ValueError:
            summary = None
        if summary and summary.get("profile"):
            probs = Calibration(float(summary.get("temperature", 1.0)),
                                {str(k): float(v) for k, v in (summary.get("bias") or {}).items()}).undo(probs)
        out.append(Correction(probs, str(group["label"].iloc[0]), str(call_id)))
    return out
