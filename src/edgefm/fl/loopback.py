"""A real Flower deployment on this machine: a SuperLink and one SuperNode per client, each its
own process on 127.0.0.1, optionally over TLS with only registered SuperNodes admitted.

Flower 1.41 (Beutel et al., 2020) deploys a federation as long-running processes: the SuperLink
(``flower-superlink``) serves one HTTP port to SuperNodes and to the ``flwr`` CLI; every
SuperNode (``flower-supernode``) pulls messages from it and runs the ClientApp in a subprocess;
``flwr run APP CONNECTION`` submits a run. Security, as Flower documents it: TLS on the
SuperLink (``--ssl-ca-certfile``, ``--ssl-certfile``, ``--ssl-keyfile``), SuperNodes that trust
the CA (``--root-certificates``), and with ``--enable-supernode-auth`` only SuperNodes whose EC
public key was registered (``flwr supernode register KEY.pub CONNECTION``) may connect; each signs
its requests with its private key (``--auth-supernode-private-key``).

:class:`Loopback` runs exactly those commands, so the tests, ``benchmarks/flower_load.py`` and a
user trying a deployment exercise the same path as a multi-machine one (README, "Deploying on
several machines"). The certificate authority and keys it makes (:func:`make_certificates`,
:func:`make_node_key`, with the ``cryptography`` package Flower itself uses) are for loopback
tests only: a real deployment uses its own CA.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgefm import EdgefmError
from edgefm.data.roots import data_roots

APP = Path(__file__).resolve().parents[3] / "configs" / "flower_app"  # the Flower App in a checkout


try:  # loaded here, not in the forked child (loading a library there can deadlock)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before it runs: ask Linux to send it SIGTERM when the process that started
    it dies, so a launcher killed outright (SIGKILL) leaves no SuperLink behind."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey, fmt: serialization.PrivateFormat) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    path.chmod(0o600)


def make_certificates(folder: Path, days: int = 2) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it: (ca.crt,
    server.pem, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefm loopback CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.crt", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths[2], key, serialization.PrivateFormat.PKCS8)
    return paths


def make_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's P-384 key pair in the OpenSSH formats Flower reads: (private, public)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    _write_private(private, key, serialization.PrivateFormat.OpenSSH)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return private, public


@dataclass
class Loopback:
    """SuperLink + SuperNodes on 127.0.0.1 under ``folder`` (logs, ``FLWR_HOME``). ``tls`` turns
    on TLS with a throwaway CA; ``auth`` (needs ``tls``) admits only registered SuperNodes."""

    folder: Path
    tls: bool = False
    auth: bool = False
    simulation: bool = False  # a SuperLink that simulates the nodes itself (``fl/flower_sim.py``)
    cwd: Path | None = None  # where the processes run (default: ``folder``)
    connection: str = "edgefm-loopback"
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.auth and not self.tls:
            raise ValueError("SuperNode authentication needs TLS (Flower refuses it on an insecure link)")
        self.bin = Path(sys.executable).parent
        home = self.folder / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.ca, self.cert, self.key = make_certificates(self.folder / "certificates")
        link = f'address = "127.0.0.1:{self.port}"\n'
        link += f'root-certificates = "{self.ca}"\n' if self.tls else "insecure = true\n"
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{self.connection}"\n\n[superlink.{self.connection}]\n{link}'
        )
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "HF_HUB_OFFLINE": "1",
        }
        roots = data_roots()
        if roots:  # the processes run elsewhere (``folder``), so name the folder found from here
            self.env["EDGEFM_DATA_DIR"] = str(roots[0])
        if not self.simulation:  # many node processes share few cores: one thread each
            self.env["OMP_NUM_THREADS"] = "1"

    def _spawn(self, name: str, *cmd: str, log: Path | None = None) -> subprocess.Popen:
        exe = self.bin / cmd[0]
        if not exe.is_file():
            raise EdgefmError(f"{exe} is missing; expected Flower installed beside Python: pip install -e '.[flower]'")
        with open(log or self.folder / f"{name}.log", "a") as fh:
            proc = subprocess.Popen(
                [str(exe), *cmd[1:]],
                env=self.env,
                cwd=self.cwd or self.folder,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a kill reaches its ClientApp too
                preexec_fn=_die_with_parent,
            )
        self.procs[name] = proc
        return proc

    def _security(self) -> list[str]:
        return ["--insecure"] if not self.tls else []

    def start_superlink(self, wait_s: float = 4.0) -> None:
        cmd = ["flower-superlink", *self._security(), "--isolation", "subprocess"]
        if self.tls:
            cmd += ["--ssl-ca-certfile", str(self.ca), "--ssl-certfile", str(self.cert), "--ssl-keyfile", str(self.key)]
        if self.auth:
            cmd.append("--enable-supernode-auth")
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--database", ":flwr-in-memory:"]
        if self.simulation:  # as Flower's managed local SuperLink, on free loopback ports
            cmd += ["--simulation", "--control-api-address", f"127.0.0.1:{free_port()}"]
            cmd += ["--fleet-api-address", f"127.0.0.1:{free_port()}"]
        self._spawn("superlink", *cmd)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # up when the port accepts connections
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                time.sleep(wait_s / 4)
                return
            time.sleep(0.25)
        tail = (self.folder / "superlink.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise EdgefmError(f"the Flower SuperLink did not open port {self.port}: {tail[0] if tail else 'no log'}")

    def register(self, public_key: Path) -> subprocess.CompletedProcess:
        """``flwr supernode register``: admit the SuperNode holding this key's private half."""
        return self.flwr("supernode", "register", str(public_key), self.connection, timeout=60)

    def start_node(self, partition: int, partitions: int, private_key: Path | None = None) -> subprocess.Popen:
        cmd = ["flower-supernode", *self._security(), "--superlink", f"127.0.0.1:{self.port}"]
        if self.tls:
            cmd += ["--root-certificates", str(self.ca)]
        if private_key is not None:
            cmd += ["--auth-supernode-private-key", str(private_key)]
        cmd += ["--host", "127.0.0.1", "--port", str(free_port())]
        cmd += ["--node-config", f"partition-id={partition} num-partitions={partitions}"]
        return self._spawn(f"node{partition}", *cmd)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a process and everything it started (a SuperNode and its ClientApp)."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def flwr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / "flwr"), *args],
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run(self, config: Path, overrides: str, run_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
        """``flwr run`` edgefm's Flower App with a config file and ``--set``-style overrides; the
        server writes the run folder ``run_dir`` (metrics, ledger, summary)."""
        run_config = f"edgefm-config='{config}' edgefm-set='{overrides}' edgefm-run-dir='{run_dir}'"
        return self.flwr("run", str(APP), self.connection, "--stream", "--run-config", run_config, timeout=timeout)

    def submit(self, run_config: str, federation_config: str, log: Path) -> subprocess.Popen:
        """``flwr run --stream`` edgefm's Flower App in the background, its output into ``log``;
        it exits when the run ends. ``federation_config``: a simulation's ``num-supernodes=N ...``."""
        cmd = ["flwr", "run", str(APP), self.connection, "--stream", "--run-config", run_config]
        if federation_config:
            cmd += ["--federation-config", federation_config]
        return self._spawn("flwr-run", *cmd, log=log)

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)

    def __enter__(self) -> Loopback:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
