"""A Docker engine, a local base image and docker-compose, for tests/test_compose_stack.py.

These machines have Debian's package registry but no image registry and no bridge network, so:

* ``DockerEngine`` installs Debian's ``docker.io``, ``docker-compose`` (1.29) and
  ``debootstrap`` when missing (as root, through apt), and uses the engine that answers on
  ``$DOCKER_HOST`` or ``/var/run/docker.sock``; if none does, it starts ``dockerd
  --bridge=none --iptables=false`` itself on a private socket, with overlay2 (vfs if overlay2
  cannot mount here), and on ``stop()`` stops it and everything it started, within
  ``STOP_SECONDS``, whether or not the test passed.
* ``base_image`` makes the stand-in for the official images: ``debootstrap --variant=minbase
  bookworm`` from the mirror this machine's apt uses, with Python 3.11 and PostgreSQL 15 from
  Debian's packages, a user ``airflow`` (uid 50000, as in apache/airflow) owning a venv on
  PATH, the host's CA bundle (pip reaches PyPI through this machine's TLS proxy) and
  ``AIRFLOW_HOME=/opt/airflow``; it is imported with ``docker import``. The root file system
  is kept as a tarball under ``data/docker-test/`` (git-ignored), keyed by everything that goes
  into it, so later runs skip debootstrap; the engine's own data also lives there, so a second
  run on the same checkout finds the images already built.
* ``Compose`` runs docker-compose against that engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sprx_pipeline.config import PROJECT_ROOT

STATE_DIR = PROJECT_ROOT / "data" / "docker-test"
DEBIAN_PACKAGES = ("docker.io", "docker-compose", "debootstrap")
BASE_PACKAGES = (
    "python3.11",
    "python3.11-venv",
    "python3-distutils",
    "ca-certificates",
    "postgresql-15",
)
SUITE = "bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
START_SECONDS = 90
STOP_SECONDS = 60

# Run in the new root file system: the airflow user and its venv, as the official image has
# them (uid 50000, group root, home /home/airflow), then drop what an image does not need.
ROOTFS_SETUP = """
set -eu
useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow --shell /bin/bash airflow
mkdir -p /opt/airflow && chown airflow:root /opt/airflow
runuser -u airflow -- python3.11 -m venv /home/airflow/.venv
rm -rf /etc/postgresql/15/main /var/lib/postgresql/15/main
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/info/* \
       /usr/share/locale/* /var/log/*.log /var/cache/debconf/*-old
"""
IMAGE_CONFIG = (
    "ENV PATH=/home/airflow/.venv/bin:/usr/lib/postgresql/15/bin:/usr/local/sbin:"
    "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV AIRFLOW_HOME=/opt/airflow",
    "ENV LANG=C.UTF-8",
    "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
    "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    "ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
    "USER airflow",
    "WORKDIR /opt/airflow",
)


class DockerError(RuntimeError):
    """The engine, an image or a compose step failed; the message says which and why."""


def say(message: str) -> None:
    """Progress of the long steps (shown by pytest with -s, and with a failure's output)."""
    print(f"[compose test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    args: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run a command, raising DockerError with the tail of its output when it fails."""
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerError(
            f"`{' '.join(args[:6])} ...` did not finish in {timeout:.0f} s:\n"
            f"{(exc.stdout or '')[-3000:]}{(exc.stderr or '')[-3000:]}"
        ) from None
    if check and done.returncode != 0:
        raise DockerError(
            f"`{' '.join(args[:8])}` failed ({done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def install_debian_packages() -> None:
    """docker.io, docker-compose and debootstrap from Debian's registry, when missing."""
    missing = [
        p
        for p, tool in zip(
            DEBIAN_PACKAGES, ("dockerd", "docker-compose", "debootstrap"), strict=True
        )
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if not missing:
        return
    if os.geteuid() != 0:
        raise DockerError(f"{', '.join(missing)} missing: run as root, or apt-get install them")
    say(f"installing {', '.join(missing)} from Debian's packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], timeout=600, env=env)
    run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        timeout=900,
        env=env,
    )


def docker_cli() -> str:
    """Debian's docker client when present (it matches Debian's engine), else the one on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise DockerError("no docker client: apt-get install docker.io")


class DockerEngine:
    """An engine to talk to: one that already runs, or a dockerd started (and stopped) here."""

    def __init__(self, state_dir: Path = STATE_DIR) -> None:
        self.state_dir = state_dir
        self.host = ""
        self.process: subprocess.Popen | None = None
        self.run_dir: Path | None = None
        self.storage_driver = ""

    @property
    def env(self) -> dict[str, str]:
        """The environment for docker and docker-compose: this engine, no proxy to loopback,
        and none of the caller's settings that compose would interpolate into the files, nor
        a PYTHONPATH for docker-compose's own (Debian's) Python."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SPRX_", "AIRFLOW", "POSTGRES", "PYTHON", "COMPOSE_"))
        }
        return {**env, "DOCKER_HOST": self.host, "NO_PROXY": "127.0.0.1,localhost"}

    def docker(
        self, *args: str, timeout: float = 120, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return run([docker_cli(), *args], timeout=timeout, env=self.env, input=input, check=check)

    def answers(self, host: str) -> bool:
        self.host = host
        return (
            self.docker(
                "version", "--format", "{{.Server.Version}}", timeout=30, check=False
            ).returncode
            == 0
        )

    def start(self) -> DockerEngine:
        install_debian_packages()
        for host in filter(None, (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock")):
            if host.startswith("unix://") and not Path(host[7:]).exists():
                continue
            if self.answers(host):
                say(f"using the Docker engine at {host}")
                return self
        if os.geteuid() != 0:
            raise DockerError("no Docker engine answers and dockerd needs root: run as root")
        for driver in ("overlay2", "vfs"):
            if self._start_dockerd(driver):
                return self
        raise DockerError(
            "dockerd did not start with overlay2 or vfs; its log:\n" + self._log_tail()
        )

    def _start_dockerd(self, driver: str) -> bool:
        """Start dockerd on a private socket; False if it exits (say, overlay2 cannot mount)."""
        self.stop()
        self.run_dir = Path(tempfile.mkdtemp(prefix="sprx-dockerd-"))  # short: socket paths
        data_root = self.state_dir / f"engine-{driver}"
        data_root.mkdir(parents=True, exist_ok=True)
        self.host = f"unix://{self.run_dir}/docker.sock"
        log = open(self.run_dir / "dockerd.log", "wb")  # noqa: SIM115 - closed in stop()
        say(f"starting dockerd ({driver}, no bridge, no iptables; data in {data_root})")
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                f"--storage-driver={driver}",
                f"--host={self.host}",
                f"--data-root={data_root}",
                f"--exec-root={self.run_dir}/exec",
                f"--pidfile={self.run_dir}/docker.pid",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                say(f"dockerd exited with {driver}: {self._log_tail(3)}")
                return False
            if self.answers(self.host):
                self.storage_driver = driver
                return True
            time.sleep(0.5)
        raise DockerError(f"dockerd did not answer within {START_SECONDS} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        if self.run_dir is None:
            return ""
        with contextlib.suppress(OSError):
            text = (self.run_dir / "dockerd.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """Stop the dockerd started here (it stops its containers and containerd first);
        SIGKILL to its whole process group if it has not gone within STOP_SECONDS."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            say("stopping dockerd")
            process.terminate()
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # containerd, if it outlived dockerd
        if self.run_dir is not None and process is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, timeout=60, check=False).returncode == 0

    def image_size(self, tag: str) -> int:
        return int(self.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)


# --- the local base image ------------------------------------------------------------------


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses for `bookworm` (deb822 or one-line sources)."""
    sources = [
        Path("/etc/apt/sources.list.d/debian.sources"),
        Path("/etc/apt/sources.list"),
        *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
        *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
    ]
    for path in sources:
        with contextlib.suppress(OSError):
            text = path.read_text()
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if (
                    uris
                    and re.search(rf"^Suites:.*\b{SUITE}\b", stanza, re.M)
                    and "security" not in uris.group(1)
                ):
                    return uris.group(1)
            line = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M)
            if line:
                return line.group(1)
    raise DockerError(f"no Debian {SUITE} mirror in this machine's apt sources")


def base_key() -> str:
    """What goes into the base file system; a change of any of it makes a new image."""
    parts = [
        SUITE,
        " ".join(BASE_PACKAGES),
        ROOTFS_SETUP,
        "\n".join(IMAGE_CONFIG),
        hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest(),
    ]
    return hashlib.sha256("\n--\n".join(parts).encode()).hexdigest()[:12]


def _build_rootfs_tarball(tarball: Path) -> None:
    rootfs = tarball.with_name(f".{tarball.stem}.rootfs")
    shutil.rmtree(rootfs, ignore_errors=True)
    mirror = apt_mirror()
    say(f"debootstrap --variant=minbase {SUITE} with {', '.join(BASE_PACKAGES)} (a minute or two)")
    started = time.monotonic()
    # Two stages, so that dpkg can skip its fsync per file while it configures the packages
    # (about half the time here); the setting is removed before the image is made.
    run(
        [
            "debootstrap",
            "--foreign",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        timeout=1200,
    )
    unsafe_io = rootfs / "etc/dpkg/dpkg.cfg.d/sprx-unsafe-io"
    unsafe_io.parent.mkdir(parents=True, exist_ok=True)
    unsafe_io.write_text("force-unsafe-io\n")
    run(["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"], timeout=1200)
    unsafe_io.unlink()
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    run(["chroot", str(rootfs), "/bin/bash", "-c", ROOTFS_SETUP], timeout=300)
    partial = tarball.with_suffix(".partial")
    run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], timeout=600)
    partial.rename(tarball)
    shutil.rmtree(rootfs, ignore_errors=True)
    say(
        f"base file system: {tarball.stat().st_size / 2**20:.0f} MiB in "
        f"{time.monotonic() - started:.0f} s"
    )


def base_image(engine: DockerEngine) -> str:
    """The tag of the local base image, imported from the cached tarball (made if missing)."""
    key = base_key()
    tag = f"sprx-local-base:{key}"
    if engine.has_image(tag):
        return tag
    engine.state_dir.mkdir(parents=True, exist_ok=True)
    tarball = engine.state_dir / f"base-{SUITE}-{key}.tar"
    if not tarball.is_file():
        if os.geteuid() != 0:
            raise DockerError("debootstrap needs root: run as root")
        for stale in engine.state_dir.glob(f"base-{SUITE}-*.tar"):
            stale.unlink()
        for stale in engine.state_dir.glob(f".base-{SUITE}-*.rootfs"):
            shutil.rmtree(stale, ignore_errors=True)
        _build_rootfs_tarball(tarball)
    say(f"docker import {tarball.name} as {tag}")
    changes = [arg for change in IMAGE_CONFIG for arg in ("--change", change)]
    engine.docker("import", *changes, str(tarball), tag, timeout=600)
    return tag


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- docker-compose ------------------------------------------------------------------------


class Compose:
    """docker-compose (1.29) for one project, on one resolved file, against one engine."""

    def __init__(self, engine: DockerEngine, project: str, file: Path) -> None:
        self.engine, self.project, self.file = engine, project, file

    def __call__(
        self, *args: str, timeout: float = 300, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return run(
            ["docker-compose", "--ansi", "never", "-p", self.project, "-f", str(self.file), *args],
            timeout=timeout,
            env=self.engine.env,
            input=input,
            check=check,
        )

    def logs(self, *services: str, lines: int = 60) -> str:
        done = self("logs", "--no-color", "--tail", str(lines), *services, timeout=120, check=False)
        return done.stdout[-12000:]

    def down(self) -> None:
        """Remove the project's containers, networks and volumes (bounded; never raises)."""
        try:
            self("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=180)
        except DockerError as exc:
            say(f"docker-compose down failed: {exc}")
