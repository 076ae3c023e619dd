from pathlib import Path

from emotivoice.config import load_settings


def test_defaults_then_toml_then_env(tmp_path):
    toml = tmp_path / "ev.toml"
    toml.write_text('data_dir = "/srv/ev"\n[transcription]\nmodel = "tiny.en"\nbeam_size = 2\n'
                    '[dashboard]\nport = 9000\n')
    s = load_settings(toml, env={})
    assert s.db_path == Path("/srv/ev/emotivoice.duckdb")
    assert (s.transcription.model, s.transcription.beam_size, s.dashboard.port) == ("tiny.en", 2, 9000)
    s = load_settings(toml, env={"EMOTIVOICE_TRANSCRIPTION_BEAM_SIZE": "7", "EMOTIVOICE_DB_PATH": "/x.duckdb",
                                 "EMOTIVOICE_SEGMENTATION_USE_SILERO": "false"})
    assert s.transcription.beam_size == 7 and s.db_path == Path("/x.duckdb")
    assert s.segmentation.use_silero is False and s.transcription.model == "tiny.en"


def test_defaults_without_a_file(tmp_path):
    s = load_settings(tmp_path / "missing.toml", env={})
    assert s.dashboard.port == 2024 and s.transcription.model == "base" and s.emotion.high_intensity == 0.7
