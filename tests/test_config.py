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


def test_the_data_dir_is_the_users_wherever_the_code_lives(tmp_path, monkeypatch):
    """$EMOTIVOICE_DATA_DIR, else $XDG_DATA_HOME/emotivoice, else ~/.local/share/emotivoice; what lives
    under it follows (issue 11: no default points into the checkout)."""
    missing = tmp_path / "missing.toml"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    s = load_settings(missing, env={})
    assert s.data_dir == tmp_path / "home" / ".local" / "share" / "emotivoice"
    s = load_settings(missing, env={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert s.data_dir == tmp_path / "xdg" / "emotivoice"
    assert (s.db_path, s.live.audio_dir, s.analytics.edited_rules_file) == (
        s.data_dir / "emotivoice.duckdb", s.data_dir / "calls", s.data_dir / "rules.toml")
    s = load_settings(missing, env={"XDG_DATA_HOME": str(tmp_path / "xdg"), "EMOTIVOICE_DATA_DIR": "/srv/ev"})
    assert s.data_dir == Path("/srv/ev") and s.inbox_dir == Path("/srv/ev/inbox")


def test_the_config_file_is_found_without_the_checkout(tmp_path, monkeypatch):
    from emotivoice.config import find_config_file

    monkeypatch.chdir(tmp_path)
    user_file = tmp_path / "cfg" / "emotivoice" / "emotivoice.toml"
    assert find_config_file({"XDG_CONFIG_HOME": str(tmp_path / "cfg")}) == user_file
    (tmp_path / "emotivoice.toml").write_text("[dashboard]\nport = 9100\n")
    assert find_config_file({}) == Path("emotivoice.toml")
    assert load_settings(env={}).dashboard.port == 9100
    assert load_settings(env={"EMOTIVOICE_CONFIG": str(tmp_path / "other.toml")}).dashboard.port == 2024


def test_shipped_rules_are_package_data():
    from emotivoice.config import shipped_rules

    assert shipped_rules().is_file() and shipped_rules().name == "default_rules.toml"
    # naming the shipped set is naming no file of the deployment's own: the editor never writes over it
    analytics = load_settings(Path("/nonexistent.toml"), env={"EMOTIVOICE_ANALYTICS_RULES_FILE": str(shipped_rules()),
                                                               "EMOTIVOICE_DATA_DIR": "/srv/ev"}).analytics
    assert analytics.editor_target() == Path("/srv/ev/rules.toml")


def test_one_diarization_section_from_toml_and_env(tmp_path):
    toml = tmp_path / "ev.toml"
    toml.write_text("[diarization]\nclustering_threshold = 0.5\nmax_speakers = 3\n")
    d = load_settings(toml, env={"EMOTIVOICE_DIARIZATION_WINDOW_STEP_S": "1.0"}).diarization
    assert (d.clustering_threshold, d.max_speakers, d.window_step_s, d.min_duration_off_s) == (0.5, 3, 1.0, 0.25)
    from emotivoice.analysis.diarization.pipeline import DiarizationConfig as used_by_the_diarizer
    from emotivoice.config import DiarizationConfig

    assert used_by_the_diarizer is DiarizationConfig
