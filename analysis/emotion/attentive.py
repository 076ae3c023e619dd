"""Attentive statistics pooling over the encoder's frames: a second branch of the emotion head.

Mean+std pooling weighs every 20 ms alike, silence and the one shouted word too. This branch
learns which frames carry the emotion: a softmax mix of the encoder layers the head reads (2, 3,
4), a projection, an attention score per frame and the attention-weighted mean and std, with the
eGeMAPS functionals, into one softmax layer. The head's output is the mean of this branch's and
the linear head's log-probabilities (issue 14: on held-out CREMA-D actors the two fused beat
either alone; `benchmarks/emotion_attentive.py`).

Training runs in PyTorch on cached frame states (averaged in pairs to 25 frames a second:
`FRAME_STRIDE`); serving is numpy, the weights plain arrays in the head's .npz.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import erf

FRAME_STRIDE = 2  # 50/s encoder frames averaged in pairs: attention needs no 20 ms detail, training half the memory
ATTENTION_UNITS = 128
PREFIX = "attentive_"  # the branch's arrays in the head's .npz


def downsample(states: np.ndarray, stride: int = FRAME_STRIDE) -> np.ndarray:
    """(T, d) -> (ceil(T / stride), d): means of `stride` adjacent frames (the last one repeated to fill)."""
    pad = (-states.shape[0]) % stride
    full = np.concatenate([states, np.repeat(states[-1:], pad, axis=0)]) if pad else states
    return full.reshape(-1, stride, states.shape[1]).mean(axis=1)


def _layer_norm(x: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


@dataclass
class AttentiveBranch:
    """The trained branch as arrays; `logits` is the network's forward pass in numpy."""

    layers: int  # encoder layers side by side in each frame
    mix: np.ndarray  # (layers,) softmax weights' logits
    proj_weight: np.ndarray  # (hidden, d)
    proj_bias: np.ndarray
    att_weight: np.ndarray  # (ATTENTION_UNITS, hidden)
    att_bias: np.ndarray
    score_weight: np.ndarray  # (1, ATTENTION_UNITS)
    score_bias: np.ndarray
    out_weight: np.ndarray  # (classes, 2 * hidden + prosody)
    out_bias: np.ndarray
    prosody_mean: np.ndarray  # eGeMAPS standardisation of the training clips
    prosody_scale: np.ndarray

    def logits(self, frames: np.ndarray, prosody: np.ndarray) -> np.ndarray:
        """(classes,) for one clip: frames (T, layers * d) at 25/s, prosody its 88 eGeMAPS values."""
        t = frames.shape[0]
        x = _layer_norm(np.asarray(frames, np.float32).reshape(t, self.layers, -1))
        w = np.exp(self.mix - self.mix.max())
        x = np.tensordot(x, w / w.sum(), axes=([1], [0]))  # (T, d)
        h = _gelu(x @ self.proj_weight.T + self.proj_bias)
        a = np.tanh(h @ self.att_weight.T + self.att_bias) @ self.score_weight.T + self.score_bias
        a = np.exp(a[:, 0] - a.max())
        a /= a.sum()
        mu = a @ h
        sd = np.sqrt(np.maximum(a @ (h * h) - mu * mu, 1e-5))
        z = np.concatenate([mu, sd, (prosody - self.prosody_mean) / self.prosody_scale])
        return z @ self.out_weight.T + self.out_bias

    def arrays(self) -> dict[str, np.ndarray]:
        out = {PREFIX + "layers": np.int64(self.layers)}
        for name in _ARRAYS:
            out[PREFIX + name] = getattr(self, name).astype(np.float32)
        return out

    @classmethod
    def from_arrays(cls, d) -> "AttentiveBranch | None":
        """The branch saved in a head's arrays, None for a head without one; a missing array is a
        KeyError (the head loader's 'unreadable')."""
        if PREFIX + "layers" not in d:
            return None
        return cls(int(d[PREFIX + "layers"]), **{name: d[PREFIX + name] for name in _ARRAYS})


_ARRAYS = ("mix", "proj_weight", "proj_bias", "att_weight", "att_bias", "score_weight", "score_bias",
           "out_weight", "out_bias", "prosody_mean", "prosody_scale")


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# --- frame caches ---------------------------------------------------------------------------------

def frames_folder(features_dir: Path, encoder_name: str) -> Path:
    """Where an encoder's frame caches live: `train emotion` and benchmarks/emotion_frames.py agree on it."""
    return features_dir / ("frames-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_name))


def load_frames(cache_file: Path) -> dict[str, np.ndarray]:
    """key -> (frames, d) float16, from one cache file (absent: empty)."""
    if not cache_file.is_file():
        return {}
    with np.load(cache_file, allow_pickle=False) as data:
        frames, offsets = data["frames"], data["offsets"]
        return {k: frames[offsets[i]:offsets[i + 1]] for i, k in enumerate(data["keys"].tolist())}


def save_frames(cache_file: Path, cached: dict[str, np.ndarray]) -> None:
    """All clips' frames in one array with offsets (no pickles), written atomically."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    lengths = [len(v) for v in cached.values()]
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(tmp, keys=np.array(list(cached)), offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
             frames=np.concatenate(list(cached.values())))
    tmp.replace(cache_file)


# --- training --------------------------------------------------------------------------------------

@dataclass
class TrainOptions:
    """Hyperparameters; the defaults are the ones benchmarks/emotion_attentive.py measured."""

    hidden: int = 256  # projection width
    dropout: float = 0.3
    epochs: int = 12  # the best validation epoch is kept
    lr: float = 2e-3  # one-cycle peak
    weight_decay: float = 0.05
    batch: int = 32
    crop: tuple[float, float] = (0.7, 1.0)  # random share of each training clip: live utterances are cut anywhere
    label_smoothing: float = 0.1
    seed: int = 0


def _net(layers: int, d: int, prosody_dim: int, classes: int, opts: TrainOptions):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = nn.Parameter(torch.zeros(layers))
            self.proj = nn.Linear(d, opts.hidden)
            self.att = nn.Linear(opts.hidden, ATTENTION_UNITS)
            self.score = nn.Linear(ATTENTION_UNITS, 1)
            self.drop = nn.Dropout(opts.dropout)
            self.out = nn.Linear(2 * opts.hidden + prosody_dim, classes)

        def forward(self, x, mask, prosody):  # x (B, T, layers, d); mask (B, T), True on real frames
            x = nn.functional.layer_norm(x, (d,))
            x = (x * torch.softmax(self.mix, 0)[None, None, :, None]).sum(2)
            h = self.drop(nn.functional.gelu(self.proj(x)))
            a = self.score(torch.tanh(self.att(h))).squeeze(-1).masked_fill(~mask, -1e4)
            a = torch.softmax(a, 1)[..., None]
            mu = (a * h).sum(1)
            sd = ((a * h * h).sum(1) - mu * mu).clamp_min(1e-5).sqrt()
            return self.out(self.drop(torch.cat([mu, sd, prosody], 1)))

    return Net()


def _batch(frames: Sequence[np.ndarray], idx: np.ndarray, prosody: np.ndarray, layers: int,
           rng: np.random.Generator | None = None, crop: tuple[float, float] = (1.0, 1.0)):
    import torch

    chosen = []
    for i in idx:
        f = frames[i]
        if rng is not None and len(f) > 8:
            keep = max(8, int(len(f) * rng.uniform(*crop)))
            start = int(rng.integers(0, len(f) - keep + 1))
            f = f[start:start + keep]
        chosen.append(f)
    t = max(len(f) for f in chosen)
    x = np.zeros((len(idx), t, chosen[0].shape[1]), np.float32)
    mask = np.zeros((len(idx), t), bool)
    for j, f in enumerate(chosen):
        x[j, :len(f)] = f
        mask[j, :len(f)] = True
    return (torch.from_numpy(x).view(len(idx), t, layers, -1), torch.from_numpy(mask),
            torch.from_numpy(prosody[idx].astype(np.float32)))


def _predict(model, frames: Sequence[np.ndarray], prosody_z: np.ndarray, idx: np.ndarray, layers: int) -> np.ndarray:
    import torch

    model.eval()
    order = sorted(idx.tolist(), key=lambda i: len(frames[i]))  # similar lengths together: little padding
    out = []
    with torch.inference_mode():
        for b in range(0, len(order), 64):
            x, m, p = _batch(frames, np.array(order[b:b + 64]), prosody_z, layers)
            out.append(torch.log_softmax(model(x, m, p), 1).numpy())
    logp = np.concatenate(out)
    pos = {i: k for k, i in enumerate(order)}
    return np.stack([logp[pos[i]] for i in idx.tolist()])


def train_branch(frames: Sequence[np.ndarray], prosody: np.ndarray, y: np.ndarray, labels: tuple[str, ...],
                 train: np.ndarray, val: np.ndarray, layers: int, opts: TrainOptions | None = None,
                 progress: Callable[[str], None] | None = None) -> tuple[AttentiveBranch, float, int, list[float]]:
    """Fit on rows `train`, keep the epoch with the best validation UA: (branch, that UA, its epoch,
    every epoch's UA). Classes are weighted by inverse frequency (neutral is short in CREMA-D)."""
    import torch

    from emotivoice.analysis.emotion.metrics import classification_report

    opts = opts or TrainOptions()
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    mean, scale = prosody[train].mean(0), prosody[train].std(0) + 1e-6
    prosody_z = ((prosody - mean) / scale).astype(np.float32)
    d = frames[0].shape[1] // layers
    model = _net(layers, d, prosody.shape[1], len(labels), opts)
    y_idx = np.array([labels.index(v) for v in y])
    counts = np.bincount(y_idx[train], minlength=len(labels)).astype(np.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(counts.sum() / (len(labels) * np.maximum(counts, 1))),
                                        label_smoothing=opts.label_smoothing)
    optimiser = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    per_epoch = int(np.ceil(len(train) / opts.batch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=opts.lr, total_steps=opts.epochs * per_epoch,
                                                   pct_start=0.1)
    best, trace = (-1.0, None, 0), []
    for epoch in range(1, opts.epochs + 1):
        model.train()
        started = time.perf_counter()
        order = rng.permutation(train)
        for b in range(0, len(order), opts.batch):
            rows = order[b:b + opts.batch]
            x, m, p = _batch(frames, rows, prosody_z, layers, rng, opts.crop)
            loss = loss_fn(model(x, m, p), torch.from_numpy(y_idx[rows]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        pred = np.array(labels)[_predict(model, frames, prosody_z, val, layers).argmax(1)]
        ua = round(classification_report(y[val], pred, labels)["unweighted_average_recall"], 4)
        trace.append(ua)
        if progress:
            progress(f"attentive epoch {epoch}/{opts.epochs}: validation UA {ua:.3f} "
                     f"({time.perf_counter() - started:.0f} s)")
        if ua > best[0]:
            best = (ua, copy.deepcopy(model.state_dict()), epoch)
    s = {k: v.detach().numpy().copy() for k, v in best[1].items()}
    branch = AttentiveBranch(layers, s["mix"], s["proj.weight"], s["proj.bias"], s["att.weight"], s["att.bias"],
                             s["score.weight"], s["score.bias"], s["out.weight"], s["out.bias"],
                             mean.astype(np.float32), scale.astype(np.float32))
    return branch, best[0], best[2], trace
