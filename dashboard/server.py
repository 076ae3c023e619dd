"""Start the Streamlit dashboard on the configured port, or a free one when that is taken."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from emotivoice.config import Settings

LAUNCHER = Path(__file__).resolve().parent / "launcher.py"  # the app script with its routes (st.App)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def choose_port(host: str, preferred: int) -> int:
    """The preferred port if it can be bound, else any free one."""
    return preferred if port_is_free(host, preferred) else free_port(host)


def dashboard_command(settings: Settings, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(LAUNCHER), "--server.port", str(port),
            "--server.address", settings.dashboard.host, "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--client.toolbarMode", "viewer"]  # no "Deploy" button for supervisors


def start_dashboard(settings: Settings, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start the server in the background; returns the process and its URL."""
    host = settings.dashboard.host
    wanted = port or settings.dashboard.port
    chosen = choose_port(host, wanted)
    if chosen != wanted:
        print(f"port {wanted} is busy; using {chosen} instead", flush=True)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    env = dict(os.environ, EMOTIVOICE_DB_PATH=str(settings.db_path), EMOTIVOICE_LOG_LEVEL=level)
    proc = subprocess.Popen(dashboard_command(settings, chosen), env=env)
    return proc, f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{chosen}"


def run_dashboard(settings: Settings, port: int | None = None) -> int:
    """Serve until stopped; SIGTERM or Ctrl-C stops the Streamlit server too, never leaving it behind."""
    import signal

    proc, url = start_dashboard(settings, port)
    print(f"EmotiVoice dashboard: {url}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(3)  # Streamlit sometimes ignores SIGTERM with sessions open
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
