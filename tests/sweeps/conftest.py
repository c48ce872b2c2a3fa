"""A real single-node Slurm cluster on loopback, for @pytest.mark.slurm tests.

What it does (see docs/architecture.md, "The Slurm test cluster", for what was measured and the pitfalls):
apt-installs slurmctld, slurmd, slurm-client, munge, slurmdbd and mariadb-server when
missing (root and apt-get needed: otherwise the tests skip and say why), then starts, each in
the foreground with its pid recorded: munged (unless munge already works), a MariaDB on its
own datadir/socket/port 3307 for accounting (submitit reads job states through sacct),
slurmdbd, slurmctld and slurmd, all configured under a temp dir with SLURM_CONF pointing at
it. At the end it stops exactly the pids it started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
DB_PORT = 3307


def _why_no_slurm() -> str | None:
    if os.geteuid() != 0:
        return "the Slurm fixture needs root (it installs and starts slurmctld/slurmd/munge)"
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged", "slurmdbd",
                                     "mariadbd")):
        return None
    if not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, stdin=subprocess.DEVNULL,
                   capture_output=True)
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {r.stderr.strip()[-300:]}"
    return None


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"Slurm fixture: timed out waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ok(cmd: list[str], env: dict, expect: str | None = None) -> bool:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return r.returncode == 0 and (expect is None or expect in r.stdout)


def _resolvable_hostname() -> str | None:
    host = socket.gethostname()
    try:
        socket.gethostbyname(host)
    except OSError:
        return None
    return host if host and set(host) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") else None


class SlurmCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        # jax.distributed's Slurm detection dials the step's first node by name, so the node
        # is named after this host when that name resolves
        self.node = _resolvable_hostname() or "node1"
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def spawn(self, cmd: list[str], log: str) -> subprocess.Popen:
        out = open(self.root / log, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        self._munge()
        self._mariadb()
        self._write_configs()
        self.spawn(["slurmdbd", "-D"], "slurmdbd.log")
        _wait(lambda: _port_open(6819), 60, "slurmdbd on port 6819")
        self.spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld.log")
        _wait(lambda: _ok(["scontrol", "ping"], self.env, "UP"), 60, "slurmctld (scontrol ping)")
        self.spawn(["slurmd", "-D", "-N", self.node, "-f", str(self.conf)], "slurmd.log")
        _wait(lambda: _ok(["sinfo", "-h", "-o", "%t"], self.env, "idle"), 60, "an idle node")

    def _munge(self) -> None:
        if _ok(["munge", "-n"], self.env):
            return
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        self.spawn(["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                    "munged", "--foreground"], "munged.log")
        _wait(lambda: _ok(["munge", "-n"], self.env), 30, "munged")

    def _mariadb(self) -> None:
        db = self.root / "db"
        db.mkdir()
        shutil.chown(self.root, "mysql", "mysql")  # mariadb exits silently otherwise
        shutil.chown(db, "mysql", "mysql")
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        subprocess.run([install, "--user=mysql", f"--datadir={db}", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], capture_output=True, check=True)
        self.sock = self.root / "mysqld.sock"
        self.spawn(["mariadbd", "--user=mysql", f"--datadir={db}", f"--socket={self.sock}",
                    f"--port={DB_PORT}", "--bind-address=127.0.0.1",
                    f"--pid-file={self.root / 'mysqld.pid'}"], "mariadb.log")
        _wait(lambda: _port_open(DB_PORT), 60, "mariadb")
        sql = ("CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';"
               "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        client = shutil.which("mariadb") or shutil.which("mysql")
        subprocess.run([client, f"--socket={self.sock}", "-uroot", "-e", sql], check=True,
                       capture_output=True)

    def _write_configs(self) -> None:
        free_mb = int(subprocess.run(["free", "-m"], capture_output=True, text=True)
                      .stdout.splitlines()[1].split()[1])
        state = self.root / "state"
        spool = self.root / "spool"
        for d in (state, spool):
            d.mkdir()
        host = socket.gethostname()
        self.conf.write_text(f"""
ClusterName=ci
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/none
KillWait=5
MinJobAge=300
ReturnToService=2
MpiDefault=none
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={int(free_mb * 0.9)} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        dbd = self.root / "slurmdbd.conf"
        dbd.write_text(f"""
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile={self.root}/slurmdbd.pid
LogFile={self.root}/slurmdbd.file.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={DB_PORT}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)

    def stop(self) -> None:
        # jobs still running (a failed test) would outlive slurmd as orphaned slurmstepds
        subprocess.run(["scancel", "--quiet", "--full", "--user", "root"], env=self.env,
                       capture_output=True, timeout=30)
        time.sleep(1)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def slurm_cluster():
    why = _why_no_slurm()
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="slurm-ci-"))
    cluster = SlurmCluster(root)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                       for p in sorted(root.glob("*.log")))
        raise RuntimeError(f"Slurm fixture failed to start; logs:{logs}") from None
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        shutil.rmtree(root, ignore_errors=True)
