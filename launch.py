#!/usr/bin/env python3
"""Install what is missing, then run EmotiVoice.

    python3 launch.py          install, analyse the demo recording, start the live service and the
                               dashboard, and place a live demo call to the service with sipp
    python3 launch.py test     install, then run the whole test suite
    python3 launch.py install  install only

Standard library only: this runs before the venv exists. Each step checks first and skips
what is already there, so a second run starts in seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("EMOTIVOICE_VENV", ROOT / ".venv"))
PY = VENV / "bin" / "python"
TORCH = "torch==2.13.0"  # the local CPU wheel; anything unpinned pulls a multi-GB CUDA build
# binary (or, for what has none, an absolute file path) -> Debian (bookworm) package. chromium and
# chromedriver (/usr/bin/chromium, /usr/bin/chromedriver) drive the dashboard browser tests; Selenium uses
# them as installed and downloads nothing. The emoji font draws the dashboard's page icons in screenshots.
# sipp (sip-tester) is the real SIP peer that places the demo call and the SIP tests' calls; baresip
# places the TLS and SRTP test calls (sipp has neither), with a certificate made by openssl.
APT_PACKAGES = {"ffmpeg": "ffmpeg", "ffprobe": "ffmpeg", "chromium": "chromium", "chromedriver": "chromium-driver",
                "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf": "fonts-noto-color-emoji", "sipp": "sip-tester",
                "baresip": "baresip", "openssl": "openssl", "espeak-ng": "espeak-ng"}
DEMO_CALL = ROOT / "assets" / "demo" / "demo_call.opus"


def step(n: int, total: int, title: str) -> float:
    print(f"[{n}/{total}] {title}", flush=True)
    return time.monotonic()


def done(started: float, what: str) -> None:
    print(f"      {what} ({time.monotonic() - started:.1f} s)", flush=True)


def run(cmd: list[str], **kwargs) -> None:
    result = subprocess.run(cmd, **kwargs)
    if result.returncode != 0:
        sys.exit(f"launch: command failed ({result.returncode}): {' '.join(map(str, cmd))}")


def _present(need: str) -> bool:
    return Path(need).is_file() if os.path.isabs(need) else shutil.which(need) is not None


def ensure_apt() -> str:
    missing = sorted({pkg for need, pkg in APT_PACKAGES.items() if not _present(need)})
    if not missing:
        return "system packages present"
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(sudo + ["apt-get", "update", "-q"], env=env)
    run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    return f"installed {' '.join(missing)}"


def ensure_venv() -> str:
    if PY.exists():
        return f"venv at {VENV}"
    run([sys.executable, "-m", "venv", str(VENV)])
    return f"created {VENV}"


def _venv_has(code: str) -> bool:
    return subprocess.run([str(PY), "-c", code], capture_output=True).returncode == 0


def ensure_torch() -> str:
    if _venv_has("import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')"):
        return "torch 2.13.0 present"
    run([str(PY), "-m", "pip", "install", "--progress-bar", "on", TORCH])
    return "installed torch 2.13.0 (CPU)"


def ensure_project() -> str:
    stamp = VENV / ".emotivoice-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + str(ROOT).encode()).hexdigest()
    installed = _venv_has("import emotivoice.analysis, emotivoice.storage, emotivoice.app")
    if stamp.is_file() and stamp.read_text() == want and installed:
        return "dependencies up to date"
    # the ray extra (serve --ray, tests/test_ray.py): about 400 MB more in the venv, 23 s from a cached wheel
    run([str(PY), "-m", "pip", "install", "--progress-bar", "on", "-e", f"{ROOT}[dev,ray]"])
    stamp.write_text(want)
    return "installed EmotiVoice and its pinned dependencies"


def ensure_pjsua2() -> str:
    """pjsua2 for the SIP connector: built once from Debian's pjproject source and cached as a wheel."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("install_pjsua2", ROOT / "connector" / "install_pjsua2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ensure_pjsua2(PY)


def ensure_models() -> str:
    run([str(PY), "-m", "emotivoice.app", "prepare-models"], stdout=subprocess.DEVNULL)
    return "offline models ready"


def install() -> None:
    steps = [("system packages (ffmpeg, chromium, sipp, baresip)", ensure_apt), ("virtual environment", ensure_venv),
             ("PyTorch CPU wheel", ensure_torch), ("Python dependencies", ensure_project),
             ("pjsua2 for the SIP connector (first time: a ~2-6 min build, then cached)", ensure_pjsua2),
             ("offline models (Whisper base + tiny.en, emotion head)", ensure_models)]
    for i, (title, fn) in enumerate(steps, 1):
        started = step(i, len(steps), title)
        done(started, fn())


def free_port(preferred: int) -> int:
    """`preferred` when nothing listens there (UDP and TCP), else a free port the system picks."""
    import socket

    def usable(port: int) -> bool:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind(("0.0.0.0", port))
                t.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False
    if usable(preferred):
        return preferred
    while True:
        with socket.socket() as t:
            t.bind(("0.0.0.0", 0))
            port = t.getsockname()[1]
        if usable(port):
            return port


def data_dir() -> str:
    """Where the services keep their data, as the settings resolve it ($EMOTIVOICE_DATA_DIR, the TOML,
    else ~/.local/share/emotivoice): asked of emotivoice.config, the one place that decides it."""
    code = "from emotivoice.config import load_settings; print(load_settings().data_dir)"
    found = subprocess.run([str(PY), "-c", code], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else "the data dir"


def start() -> int:
    """The demo recording first (skipped once stored), then the live service and the dashboard,
    then a live demo call to the service from sipp, so the Live floor fills as in production."""
    print(f"analysing the demo call {DEMO_CALL.name} (skipped once stored) into {data_dir()} ...", flush=True)
    run([str(PY), "-m", "emotivoice.app", "analyze", str(DEMO_CALL), "--skip-known"])
    run([str(PY), "-m", "emotivoice.app", "users", "init"])  # prints a first login once
    sip_port = free_port(int(os.environ.get("EMOTIVOICE_CONNECTOR_SIP_PORT", "5060")))
    service = subprocess.Popen([str(PY), "-m", "emotivoice.app", "serve", "--sip-port", str(sip_port)])
    # the demo recording lives in the checkout, outside the dirs the dashboard plays from by default
    demo_env = dict(os.environ, EMOTIVOICE_DASHBOARD_RECORDING_DIRS=os.environ.get(
        "EMOTIVOICE_DASHBOARD_RECORDING_DIRS", str(DEMO_CALL.parent)))
    dashboard = subprocess.Popen([str(PY), "-m", "emotivoice.app", "dashboard"], env=demo_env)
    caller = None
    try:
        if wait_for_udp_listener(sip_port, service):
            print(f"placing a live demo SIPREC call to sip:127.0.0.1:{sip_port} with sipp "
                  "(open the dashboard's Live floor) ...", flush=True)
            caller = subprocess.Popen([str(PY), "-m", "emotivoice.app", "place-call", str(DEMO_CALL),
                                       "--to", f"127.0.0.1:{sip_port}"])
        while service.poll() is None and dashboard.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (caller, service, dashboard):
            if proc and proc.poll() is None:
                proc.terminate()
        for proc in (caller, service, dashboard):
            if proc:
                proc.wait()
    return 0


def wait_for_udp_listener(port: int, service: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    """True once something has bound UDP `port` (the service's SIP listener is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and service.poll() is None:
        if free_port(port) != port:
            return True
        time.sleep(0.5)
    print("warning: the live service's SIP listener did not come up; no demo call placed", file=sys.stderr)
    return False


def test(extra: list[str]) -> int:
    """ruff (the rules in pyproject.toml) first: a lint error fails the run in seconds, before the
    ~12 minutes of tests; then pytest with whatever was asked (e.g. `-m "not slow"`)."""
    lint = subprocess.call([str(PY), "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT)
    if lint != 0:
        print("launch: ruff found the problems above; fix them before the tests run", flush=True)
        return lint
    return subprocess.call([str(PY), "-m", "pytest", *extra], cwd=ROOT)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "run"
    if command not in {"run", "test", "install"}:
        sys.exit(__doc__)
    install()
    if command == "install":
        return 0
    if command == "test":
        return test(argv[1:])
    try:
        return start()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
