"""The HuBERT backend, on a tiny randomly initialised checkpoint saved to a local directory."""

import numpy as np
import pytest

from emotivoice.analysis.assets import ModelUnavailable
from emotivoice.analysis.emotion.model import load_emotion_model
from emotivoice.config import EmotionConfig

LABELS = ["ang", "dis", "fea", "hap", "neu", "sad", "sur"]


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    import torch
    from transformers import HubertConfig, HubertForSequenceClassification, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    config = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                          conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=2, classifier_proj_size=8,
                          id2label=dict(enumerate(LABELS)), label2id={lab: i for i, lab in enumerate(LABELS)})
    path = tmp_path_factory.mktemp("hubert")
    HubertForSequenceClassification(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(path)
    return path


def test_loads_from_a_local_directory_and_maps_labels(tiny_hubert, tmp_path):
    model = load_emotion_model(EmotionConfig(backend="hubert", hubert_model=str(tiny_hubert)), tmp_path)
    assert model.labels == ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
    clips = [np.random.default_rng(i).normal(0, 0.1, 16000 * (i + 1)).astype(np.float32) for i in range(2)]
    out = model.predict(clips)
    assert len(out) == 2
    for probs in out:
        assert set(probs) == set(model.labels)
        assert abs(sum(probs.values()) - 1) < 1e-5
    assert out[0] != out[1]  # the audio reaches the network


def test_mean_pooling_ignores_clip_length_padding(tiny_hubert, tmp_path):
    model = load_emotion_model(EmotionConfig(backend="hubert", hubert_model=str(tiny_hubert)), tmp_path)
    clip = np.random.default_rng(3).normal(0, 0.1, 16000).astype(np.float32)
    alone = model.predict([clip])[0]
    batched = model.predict([clip, np.zeros(48000, np.float32)])[0]
    assert alone == pytest.approx(batched, abs=1e-6)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailable, match="cannot load HuBERT"):
        load_emotion_model(EmotionConfig(backend="hubert", hubert_model=str(tmp_path / "nope")), tmp_path)
    with pytest.raises(ModelUnavailable, match="needs emotion.hubert_model"):
        load_emotion_model(EmotionConfig(backend="hubert"), tmp_path)


@pytest.mark.slow
def test_train_a_head_on_hubert_features_and_serve_it(tiny_hubert, tmp_path, manifest, settings):
    """`train emotion --backbone hubert --model-dir DIR` end to end, on 10 CREMA-D actors."""
    from dataclasses import replace

    from conftest import run_cli, small_manifest

    small = small_manifest(manifest, tmp_path / "small.csv", 10)
    out = tmp_path / "hubert-head.npz"
    proc = run_cli("train", "emotion", "--manifest", str(small), "--corpora", "cremad", "--backbone", "hubert",
                   "--model-dir", str(tiny_hubert), "--out", str(out), env={"EMOTIVOICE_DATA_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "EMOTIVOICE_EMOTION_BACKEND=hubert" in proc.stdout
    card_md = out.with_suffix(".md").read_text()
    assert "hubert" in card_md and "test 2 speakers" in card_md

    config = replace(settings.emotion, backend="hubert", hubert_model=str(tiny_hubert), head_path=str(out))
    model = load_emotion_model(config, tmp_path)
    assert model.labels == ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
    assert model.provisional  # two held-out speakers are too few to claim the target, whatever their UA
    probs = model.predict([np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)])[0]
    assert abs(sum(probs.values()) - 1) < 1e-5
