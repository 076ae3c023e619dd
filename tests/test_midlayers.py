"""The PyTorch Whisper encoder read from CTranslate2's model.bin matches CTranslate2 itself."""

import numpy as np
import pytest

from emotivoice.analysis.assets import ModelUnavailable, whisper_model_dir
from emotivoice.analysis.audio import load_audio, normalize
from emotivoice.analysis.emotion.features import pool
from emotivoice.analysis.emotion.midlayers import MidLayerEncoder, read_ct2_variables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(settings):
    return whisper_model_dir("base", settings.model_cache_dir)


@pytest.fixture(scope="module")
def clip(manifest):
    first = next(c for c in manifest if c.corpus == "cremad")
    return normalize(load_audio(first.path, channels=1)[0])


def test_last_layer_matches_ctranslate2_float32(model_dir, clip):
    import ctranslate2
    from faster_whisper import WhisperModel

    encoder = MidLayerEncoder(model_dir, layers=(2, 3, 4, 6), threads=1)
    states = encoder.hidden_states(clip)
    assert set(states) == {2, 3, 4, 6}
    ct2 = WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=1)
    mel = encoder.mel(clip)
    reference = np.asarray(ct2.model.encode(ctranslate2.StorageView.from_array(mel[None]), to_cpu=True))[0]
    assert states[6].shape == reference.shape == (mel.shape[1] // 2, 512)
    np.testing.assert_allclose(states[6], reference, atol=5e-3 * np.abs(reference).max())
    cosine = (states[6] * reference).sum(1) / np.linalg.norm(states[6], axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.9999
    # the middle layers are different states, not copies of the last
    assert np.abs(states[4] - states[6]).mean() > 0.1 * np.abs(states[6]).mean()


def test_runs_only_the_blocks_it_needs_and_pools_each_layer(model_dir, clip):
    encoder = MidLayerEncoder(model_dir, layers=(2, 3, 4))
    assert encoder._net.n_layers == 4 and len(encoder._net.layers) == 4
    with pytest.raises(ValueError):
        encoder.hidden_states(clip, layers=(6,))
    frames = encoder.encode(clip)
    assert frames.shape[1] == 3 * 512 and np.isfinite(frames).all()
    states = encoder.hidden_states(clip)
    assert pool(frames).shape == (3072,)
    np.testing.assert_allclose(pool(frames)[512:1024], states[3].mean(axis=0), rtol=1e-5, atol=1e-6)
    # unpadded: a clip's states do not depend on trailing silence it never had
    assert encoder.encode(clip[:16000]).shape[0] == 50


def test_reader_rejects_other_files(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes((99).to_bytes(4, "little") + b"\0" * 16)
    with pytest.raises(ModelUnavailable):
        read_ct2_variables(bad)
    with pytest.raises(ModelUnavailable):
        MidLayerEncoder(tmp_path / "missing")


def test_heads_of_both_kinds_load_through_load_emotion_model(settings, clip):
    """The card decides the encoder: `layers` -> the PyTorch middle layers, none -> CTranslate2."""
    from dataclasses import replace

    from emotivoice.analysis.emotion.model import HEADS_DIR, load_emotion_model

    heads = sorted(HEADS_DIR.glob("*.npz"))
    assert heads, "no committed heads"
    kinds = set()
    for path in heads:
        model = load_emotion_model(replace(settings.emotion, head_path=str(path)), settings.model_cache_dir,
                                   cpu_threads=1)
        kinds.add(bool(model.head.card.get("layers")))
        probs = model.predict([clip])[0]
        assert abs(sum(probs.values()) - 1) < 1e-4 and set(probs) == set(model.labels)
    assert kinds == {True, False}, "expected the middle-layer default and the older last-layer head"


def test_train_emotion_on_middle_layers_records_them_and_serves_the_same_features(manifest, settings, tmp_path):
    """`train emotion --layers 2,3` end to end on 8 CREMA-D actors: the card names the layers and
    load_emotion_model rebuilds that encoder, so serving sees the features training saw."""
    from dataclasses import replace

    from conftest import run_cli, small_manifest

    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.model import load_emotion_model

    small = small_manifest(manifest, tmp_path / "small.csv", 8)
    out = tmp_path / "mid-head.npz"
    proc = run_cli("train", "emotion", "--manifest", str(small), "--corpora", "cremad", "--layers", "2,3",
                   "--out", str(out), env={"EMOTIVOICE_DATA_DIR": str(tmp_path),
                                           "EMOTIVOICE_MODEL_CACHE_DIR": str(settings.model_cache_dir)})
    assert proc.returncode == 0, proc.stderr
    head = EmotionHead.load(out)
    assert head.card["layers"] == [2, 3] and head.mean.shape == (2 * 1024 + 88,)
    assert (tmp_path / "features" / "whisper-base-l23" / "cremad-phone.npz").is_file()
    assert "layers 2, 3" in out.with_suffix(".md").read_text()
    model = load_emotion_model(replace(settings.emotion, head_path=str(out)), settings.model_cache_dir, cpu_threads=1)
    assert model.encoder.layers == (2, 3)
    cached = np.load(tmp_path / "features" / "whisper-base-l23" / "cremad-clean.npz")
    key = str(cached["keys"][0])
    from emotivoice.analysis.emotion.features import prepare

    states = model.encoder.encode(prepare(load_audio(key, channels=1)[0], "clean", 0))
    np.testing.assert_allclose(pool(states), cached["features"][0], rtol=1e-4, atol=1e-4)
    # the fused head's default branch was trained on the same layers' frames, as serving computes them
    from emotivoice.analysis.emotion.attentive import downsample, load_frames

    assert head.attentive is not None and head.card["attentive"]["epoch"] >= 1
    frames = load_frames(tmp_path / "features" / "frames-whisper-base-l23" / "cremad-clean.npz")[key]
    np.testing.assert_allclose(downsample(states), frames.astype(np.float32), rtol=1e-2, atol=2e-2)
