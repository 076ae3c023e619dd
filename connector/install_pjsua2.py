#!/usr/bin/env python3
"""Make `import pjsua2` work in a given Python: present, cached wheel, fresh build, or PyPI fallback.

Standard library only: launch.py runs this before the venv has anything in it. The build takes
pjproject from Debian sid's `asterisk` source package (its `Xpjproject` component), because that
pjproject (2.17) answers SIPREC natively and is built here for 256 calls against the system's
OpenSSL and libsrtp2. The finished wheel is cached under ~/.cache/emotivoice/wheels/, keyed by
pjproject version and a hash of the build configuration, so a second install takes seconds.
If the build fails, the PyPI wheel `pjsua2-python==2.15.1.post1` is installed instead: it is
capped at 4 simultaneous calls, has no native SIPREC (INVITEs with `Require: siprec` get 420;
those that only offer it still work, see connector/sip.py) and carries an old OpenSSL.

    python3 connector/install_pjsua2.py [path/to/python]
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

CACHE = Path(os.environ.get("EMOTIVOICE_WHEEL_CACHE", Path.home() / ".cache" / "emotivoice" / "wheels"))
FALLBACK = "pjsua2-python==2.15.1.post1"
SOURCE_PACKAGE = "asterisk"  # Debian bundles pjproject into asterisk's source as a component tarball
COMPONENT = "Xpjproject"
SID_SOURCES = Path("/etc/apt/sources.list.d/emotivoice-sid-src.list")
SID_LINE = "deb-src http://deb.debian.org/debian sid main\n"  # sources only: no sid binaries get installed
APT_BUILD_DEPS = ["build-essential", "pkg-config", "swig", "libssl-dev", "libsrtp2-dev",
                  "libsamplerate0-dev", "python3-dev", "xz-utils", "ca-certificates"]

CONFIG_SITE = """\
#define PJSUA_HAS_SIPREC 1
#define PJSUA_MAX_CALLS 256
#define PJ_IOQUEUE_MAX_HANDLES 1024
"""
# Debian strips the bundled third-party codecs from its tarball: use system libraries or drop them.
CONFIGURE_ARGS = ["--with-external-srtp", "--enable-libsamplerate", "--disable-sound", "--disable-video",
                  "--disable-speex-codec", "--disable-speex-aec", "--disable-gsm-codec", "--disable-ilbc-codec",
                  "--disable-g7221-codec", "--disable-libwebrtc", "--disable-libwebrtc-aec3", "--disable-libyuv",
                  "--disable-sdl", "--disable-ffmpeg", "--disable-v4l2", "--disable-openh264", "--disable-vpx",
                  "--disable-opencore-amr", "--disable-silk", "--disable-opus", "--disable-bcg729",
                  "--disable-lyra", "--disable-upnp"]
CFLAGS = "-O2 -fPIC"


def say(msg: str) -> None:
    print(f"      pjsua2: {msg}", flush=True)


def config_hash() -> str:
    """Identifies the build configuration, so a changed config never reuses an old wheel."""
    text = CONFIG_SITE + " ".join(CONFIGURE_ARGS) + CFLAGS
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def has_pjsua2(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import pjsua2"], capture_output=True).returncode == 0


def python_tag(python: Path) -> str:
    out = subprocess.run([str(python), "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def cached_wheel(python: Path) -> Path | None:
    """The newest cached wheel built with this configuration for this Python, if any."""
    tag = python_tag(python)
    found = sorted(CACHE.glob(f"pjproject-*-{config_hash()}/pjsua2-*-{tag}-*.whl"))
    return found[-1] if found else None


def pip_install(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


def _apt(*args: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(_sudo() + ["apt-get", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def ensure_build_deps() -> None:
    missing = [p for p in APT_BUILD_DEPS
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        say(f"apt-get install {' '.join(missing)}")
        _apt("update", "-q")
        _apt("install", "-y", "-q", "--no-install-recommends", *missing)


def fetch_source(workdir: Path) -> Path:
    """Download and unpack only the pjproject component of sid's asterisk source package."""
    if not SID_SOURCES.exists() or SID_SOURCES.read_text() != SID_LINE:
        say(f"adding {SID_SOURCES} (deb-src for sid)")
        subprocess.run(_sudo() + ["tee", str(SID_SOURCES)], input=SID_LINE, text=True, check=True,
                       stdout=subprocess.DEVNULL)
        _apt("update", "-q")
    uris = subprocess.run(["apt-get", "source", "--print-uris", SOURCE_PACKAGE], capture_output=True, text=True,
                          check=True, cwd=workdir).stdout
    match = re.search(rf"'(\S+{COMPONENT}\.tar\.\w+)' (\S+) (\d+) (SHA256|MD5Sum|SHA512):(\w+)", uris)
    if not match:
        raise RuntimeError(f"no {COMPONENT} component in apt-get source {SOURCE_PACKAGE}")
    url, name, _size, algo, digest = match.groups()
    say(f"downloading {name}")
    data = urllib.request.urlopen(url, timeout=300).read()
    got = hashlib.new({"SHA256": "sha256", "MD5Sum": "md5", "SHA512": "sha512"}[algo], data).hexdigest()
    if got != digest:
        raise RuntimeError(f"{name}: {algo} mismatch")
    archive = workdir / name
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12
            tar.extractall(workdir, filter="data")
        else:
            tar.extractall(workdir)
    return workdir / top


def pj_version(src: Path) -> str:
    text = (src / "version.mak").read_text()
    parts = dict(re.findall(r"export PJ_VERSION_(MAJOR|MINOR|REV|SUFFIX)[ \t]*:=[ \t]*(\S*)", text))
    version = f"{parts['MAJOR']}.{parts['MINOR']}"
    return version + (f".{parts['REV']}" if parts.get("REV") else "") + parts.get("SUFFIX", "")


def _step(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> None:
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[:2])} failed in {cwd}:\n" + "\n".join(tail))
    say(f"{' '.join(cmd[:2])} done ({time.monotonic() - started:.0f} s)")


def build_wheel(python: Path, workdir: Path) -> Path:
    """configure + make pjproject, then swig and build the Python binding as a wheel."""
    src = fetch_source(workdir)
    log = workdir / "build.log"
    say(f"building pjproject {pj_version(src)} in {src} (log: {log}); takes several minutes")
    makefile = src / "pjmedia" / "build" / "Makefile"  # Debian's tarball lacks the BDIMAD sound driver
    makefile.write_text(makefile.read_text().replace(" bdimad_dev.o", ""))
    (src / "pjlib" / "include" / "pj" / "config_site.h").write_text(CONFIG_SITE)
    env = dict(os.environ, CFLAGS=CFLAGS, CXXFLAGS=CFLAGS)
    jobs = str(os.cpu_count() or 2)
    _step(["./configure", *CONFIGURE_ARGS], src, log, env)
    _step(["make", "dep", f"-j{jobs}"], src, log, env)
    _step(["make", f"-j{jobs}"], src, log, env)
    binding = src / "pjsip-apps" / "src" / "swig" / "python"
    _step(["make", "pjsua2_wrap.cpp"], binding, log, env)
    dist = workdir / "dist"
    _step([str(python), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), "."],
          binding, log, dict(env, PJDIR=str(src)))
    wheels = list(dist.glob("pjsua2-*.whl"))
    if not wheels:
        raise RuntimeError("pip wheel produced no pjsua2 wheel")
    target = CACHE / f"pjproject-{pj_version(src)}-{config_hash()}"
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(wheels[0], target / wheels[0].name))


def ensure_pjsua2(python: Path) -> str:
    """Make pjsua2 importable in `python`; returns one line saying how (for launch.py's progress)."""
    python = Path(python).absolute()  # the build runs in other directories
    if has_pjsua2(python):
        return "pjsua2 present"
    wheel = cached_wheel(python)
    if wheel:
        pip_install(python, "--force-reinstall", "--no-deps", str(wheel))
        return f"installed cached {wheel.name}"
    started = time.monotonic()
    try:
        ensure_build_deps()
        with tempfile.TemporaryDirectory(prefix="pjproject-") as tmp:
            wheel = build_wheel(python, Path(tmp))
        pip_install(python, "--force-reinstall", "--no-deps", str(wheel))
        return f"built and installed {wheel.name} ({(time.monotonic() - started) / 60:.1f} min, cached in {CACHE})"
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        say(f"build failed: {exc}")
        say(f"falling back to {FALLBACK}: at most 4 simultaneous calls, SIPREC answered by the connector itself")
        pip_install(python, FALLBACK)
        return f"installed {FALLBACK} (fallback; pjproject build failed)"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.executable)
    print(ensure_pjsua2(target))
