"""A throwaway PostgreSQL server for the team-instance tests (issue 32).

Installed from Debian's package when missing (as tests/test_ui.py installs Chromium), run as
an unprivileged user in a temporary directory on a free loopback port, stopped at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PG_USER = "chameleonpg"  # the unprivileged system user that owns and runs the server


def _bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def ensure_installed() -> tuple[Path | None, str]:
    """PostgreSQL's bin directory (installing Debian's ``postgresql`` if needed), or None and why not."""
    if _bin_dir() is None:
        if shutil.which("apt-get") is None:
            return None, "no PostgreSQL installed and no apt-get to install it"
        if os.geteuid() != 0:
            return None, "no PostgreSQL installed and not root to install it with apt-get"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            done = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
                                  env=env, capture_output=True, text=True)
        if _bin_dir() is None:
            return None, f"apt-get install postgresql failed: {done.stderr.strip()[-300:]}"
    return _bin_dir(), ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user() -> list[str]:
    """The command prefix that drops to the unprivileged server user (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
    return ["runuser", "-u", PG_USER, "--"]


@dataclass
class PgServer:
    """A running server: ``bin``aries, data ``root``, loopback ``port``; ``stop``/``start`` it."""

    bin: Path
    root: Path
    port: int
    user: str = "chameleon"

    @classmethod
    def create(cls, bin_dir: Path) -> "PgServer":
        """initdb a cluster in a new temporary directory (trust auth, loopback only) and start it.

        The directory is made directly under the system's temporary folder: pytest's own
        temporary folders are private to root, which the server user could not enter.
        """
        root = Path(tempfile.mkdtemp(prefix="chameleon-pg-"))
        root.chmod(0o755)
        server = cls(bin_dir, root, _free_port())
        if os.geteuid() == 0:
            _as_user()
            shutil.chown(root, PG_USER)
        subprocess.run([*_as_user(), str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", server.user,
                        "--auth=trust", "-E", "UTF8", "--locale=C"], check=True, capture_output=True)
        server.start()
        return server

    def start(self) -> None:
        """Start the server (listening on 127.0.0.1 only) and wait until it accepts connections."""
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        subprocess.run([*_as_user(), str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-o", opts,
                        "-l", str(self.root / "server.log"), "-w", "-t", "60", "start"],
                       check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` disconnects clients; ``immediate`` is a crash)."""
        subprocess.run([*_as_user(), str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode,
                        "-w", "stop"], capture_output=True)

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def createdb(self, name: str) -> None:
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                        name], check=True, capture_output=True)

    def env(self, db: str) -> dict[str, str]:
        """The connection variables conf/instance/postgres.yaml reads, for database ``db``."""
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": "unused-with-trust-auth", "DAGSTER_PG_DB": db}

    def url(self, db: str) -> str:
        """A SQLAlchemy URL for database ``db`` (the MLflow backend store)."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{db}"
