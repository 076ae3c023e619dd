"""The attentive-pooling branch: it learns from frames, serves in numpy what it learned in torch,
travels inside the head's .npz, and is fused with the linear head as its docstring says."""

import numpy as np
import pytest

from emotivoice.analysis.assets import ModelUnavailable
from emotivoice.analysis.emotion.attentive import TrainOptions, downsample, train_branch
from emotivoice.analysis.emotion.head import EmotionHead, HeadModel


def _clips(n: int, rng: np.random.Generator, layers: int = 3, d: int = 8):
    """Frames of noise where one short burst (3 of 30 frames, anywhere) sets the class; prosody is
    uninformative noise."""
    y = rng.integers(0, 2, n)
    frames = []
    for label in y:
        f = rng.normal(0, 1, (30, layers, d)).astype(np.float32)
        at = rng.integers(0, 27)
        f[at:at + 3, :, :4] += 3.0 if label else -3.0
        frames.append(f.reshape(30, layers * d).astype(np.float16))
    return frames, rng.normal(0, 1, (n, 5)).astype(np.float32), np.array(["anger", "neutral"])[y]


def _linear_head(branch=None) -> EmotionHead:
    dim = 3 * 8 * 2 + 5  # pooled mean+std of 24 values, and the 5 "prosody" values
    return EmotionHead(("anger", "neutral"), np.zeros(dim), np.ones(dim), np.zeros((2, dim)), np.zeros(2),
                       card={"prosody": "egemaps"}, attentive=branch)


def test_branch_learns_the_frames_that_carry_the_label_and_serves_it_in_numpy(tmp_path):
    rng = np.random.default_rng(0)
    frames, prosody, y = _clips(400, rng)
    train, val = np.arange(300), np.arange(300, 400)
    opts = TrainOptions(hidden=16, epochs=12, lr=5e-3, dropout=0.0, crop=(1.0, 1.0))
    branch, val_ua, epoch, trace = train_branch(frames, prosody, y, ("anger", "neutral"), train, val, 3, opts)
    assert val_ua >= 0.9, trace
    assert 1 <= epoch <= 12 and len(trace) == 12
    served = np.array(["anger", "neutral"])[[branch.logits(frames[i], prosody[i]).argmax() for i in val]]
    assert np.mean(served == y[val]) >= val_ua - 0.02  # numpy's forward pass is the network torch trained

    head = _linear_head(branch)
    path = tmp_path / "fused.npz"
    head.save(path)
    loaded = EmotionHead.load(path)
    np.testing.assert_allclose(loaded.attentive.logits(frames[0], prosody[0]), branch.logits(frames[0], prosody[0]),
                               rtol=1e-5, atol=1e-5)
    with np.load(path) as saved:  # a head file with part of the branch is unreadable, said as such
        kept = {k: saved[k] for k in saved.files if k != "attentive_proj_weight"}
    np.savez(tmp_path / "partial.npz", **kept)
    with pytest.raises(ModelUnavailable, match="unreadable"):
        EmotionHead.load(tmp_path / "partial.npz")
    _linear_head().save(path)  # a head without the branch loads as one without it
    assert EmotionHead.load(path).attentive is None


def test_fused_head_averages_log_probabilities_and_predict_runs_the_encoder_once(monkeypatch):
    rng = np.random.default_rng(1)
    frames, prosody, y = _clips(200, rng)
    branch, *_ = train_branch(frames, prosody, y, ("anger", "neutral"), np.arange(150), np.arange(150, 200), 3,
                              TrainOptions(hidden=16, epochs=6, lr=5e-3, dropout=0.0))
    head = _linear_head(branch)
    features = np.zeros((1, head.mean.shape[0]))
    att = branch.logits(frames[0], prosody[0])
    fused = head.probabilities(features, attentive_logits=att[None])[0]
    # the linear head is all zeros (0.5 / 0.5): the fused log-probability is half the branch's
    branch_logp = att - np.log(np.exp(att).sum())
    expected = np.exp((branch_logp + np.log(0.5)) / 2 / head.temperature)
    np.testing.assert_allclose(fused, expected / expected.sum(), rtol=1e-5)

    class Encoder:  # the clip's 60 frames at 50/s, the branch sees them at 25/s
        name, calls = "stub", 0

        def encode(self, clip):
            Encoder.calls += 1
            return np.repeat(frames[0].astype(np.float32), 2, axis=0)

    from emotivoice.analysis.emotion import head as head_module

    monkeypatch.setattr(head_module, "egemaps", lambda clip: prosody[0])
    model = HeadModel(head, Encoder())
    Encoder.calls = 0
    probs = model.predict([np.zeros(16000, np.float32)])[0]
    assert Encoder.calls == 1
    np.testing.assert_allclose(downsample(np.repeat(frames[0].astype(np.float32), 2, axis=0)),
                               frames[0].astype(np.float32))
    linear_only = model.head.probabilities(features)[0]
    assert abs(probs["anger"] - fused[0]) < 1e-4 and abs(probs["anger"] - linear_only[0]) > 1e-3
