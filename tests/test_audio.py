"""Decoding through FFmpeg: formats, telephony audio, and clear errors for bad input."""

import subprocess

import numpy as np
import pytest

from emotivoice.analysis.audio import AudioError, iter_blocks, load_audio, normalize, probe, rms_dbfs
from emotivoice.analysis.synth import write_audio


def tone(seconds=1.0, freq=440.0, channels=1):
    t = np.arange(int(seconds * 16000)) / 16000
    return np.stack([0.3 * np.sin(2 * np.pi * freq * (i + 1) * t) for i in range(channels)]).astype(np.float32)


@pytest.mark.parametrize("ext,args", [("wav", []), ("mp3", []), ("flac", []), ("ogg", ["-c:a", "libopus"]),
                                      ("m4a", ["-c:a", "aac"])])
def test_common_formats_decode_to_16k(tmp_path, ext, args):
    path = write_audio(tone(2.0, channels=2), tmp_path / f"x.{ext}", args)
    info = probe(path)
    audio = load_audio(path)
    assert info.channels == 2
    assert audio.shape[0] == 2 and abs(audio.shape[1] / 16000 - 2.0) < 0.1
    # the channels stay apart: left is 440 Hz, right 880 Hz
    spectrum = np.abs(np.fft.rfft(audio[:, 4000:20000], axis=1))
    assert abs(spectrum[0].argmax() * 16000 / 16000 - 440) < 5
    assert abs(spectrum[1].argmax() * 16000 / 16000 - 880) < 5


def test_telephony_mulaw_8k(tmp_path):
    path = write_audio(tone(1.5), tmp_path / "call.wav", ["-ar", "8000", "-c:a", "pcm_mulaw"])
    assert probe(path).codec == "pcm_mulaw"
    audio = load_audio(path)
    assert abs(audio.shape[1] - 24000) < 200 and rms_dbfs(audio) > -20


@pytest.mark.parametrize("make,message", [
    (lambda p: p, "no such file"),
    (lambda p: (p.mkdir(), p)[1], "is a directory"),
    (lambda p: (p.write_bytes(b""), p)[1], "empty file"),
    (lambda p: (p.write_bytes(np.random.default_rng(0).bytes(5000)), p)[1], "corrupt or unreadable"),
])
def test_bad_input_gets_a_one_line_error(tmp_path, make, message):
    path = make(tmp_path / "bad.wav")
    with pytest.raises(AudioError, match=message) as err:
        probe(path)
    assert "\n" not in str(err.value)


def test_video_without_audio_is_refused(tmp_path):
    video = tmp_path / "video.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=5",
                    "-pix_fmt", "yuv420p", str(video)], check=True)
    with pytest.raises(AudioError, match="no audio stream"):
        probe(video)


def test_truncated_file_keeps_what_decodes(tmp_path):
    full = write_audio(tone(6.0), tmp_path / "full.mp3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    audio = load_audio(cut)
    assert 2.0 < audio.shape[1] / 16000 < 4.5


def test_blocks_bound_memory_and_cover_the_file(tmp_path):
    path = write_audio(tone(10.0), tmp_path / "long.wav")
    blocks = list(iter_blocks(path, 1, block_s=3.0))
    assert [len(b) for b in blocks[:3]] == [48000] * 3
    assert sum(len(b) for b in blocks) == 160000


def test_normalize_reaches_target_without_clipping():
    quiet = tone(1.0)[0] * 0.01
    out = normalize(quiet, target_dbfs=-20)
    assert abs(rms_dbfs(out) - (-20)) < 0.5
    spiky = np.zeros(16000, np.float32)
    spiky[100] = 0.9
    spiky[200:300] = 0.001
    assert np.max(np.abs(normalize(spiky))) <= 0.95 + 1e-6
