"""Redis servers that speak only TLS, with a test CA made on the spot (`cryptography`):
one cluster node owning every slot, and a master watched by one sentinel."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from atlas_broker_dev.processes import ManagedProcess, free_port, tcp_open
from atlas_broker_dev.servers import find_redis_server
from polling import wait_for


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_args(self) -> list[str]:
        return [
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(self.ca), socket_timeout=5
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("test redis ca"))
        .issuer_name(_name("test redis ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "redis.pem", directory / "redis.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _start(directory: Path, name: str, port: int, *args: str) -> ManagedProcess:
    argv = [
        find_redis_server(),
        *args,
        "--bind", "127.0.0.1",
        "--port", "0",
        "--tls-port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip
    process = ManagedProcess(name, argv, log_dir=directory).start()
    process.wait_until(tcp_open(port))
    return process


def _wait(condition: Callable[[], object], what: str) -> None:
    def reached() -> object:
        try:
            return condition()
        except redis.RedisError:  # not up yet
            return False

    wait_for(reached, timeout=30, interval=0.1, message=f"TLS redis: {what} not reached")


@contextmanager
def tls_cluster(directory: Path, files: TlsFiles) -> Iterator[int]:
    """One TLS-only cluster node owning all 16384 slots; yields its port."""
    port, bus = free_port(), free_port()
    process = _start(
        directory,
        "redis-tls-cluster",
        port,
        *files.server_args(),
        "--cluster-enabled", "yes",
        "--cluster-port", str(bus),
        "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
        "--tls-cluster", "yes",
    )  # fmt: skip
    try:
        client = files.client(port)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        _wait(lambda: client.cluster("info")["cluster_state"] == "ok", "cluster_state ok")
        yield port
    finally:
        process.stop()


@contextmanager
def tls_sentinel(directory: Path, files: TlsFiles, service: str) -> Iterator[int]:
    """A TLS-only master and one TLS-only sentinel watching it; yields the sentinel's port."""
    master_port, sentinel_port = free_port(), free_port()
    master = _start(directory, "redis-tls-master", master_port, *files.server_args())
    config = directory / "sentinel-tls.conf"  # the sentinel rewrites its own file
    config.write_text(
        "\n".join(
            [
                "tls-replication yes",
                f"sentinel monitor {service} 127.0.0.1 {master_port} 1",
                "",
            ]
        )
    )
    try:
        sentinel = _start(
            directory,
            "redis-tls-sentinel",
            sentinel_port,
            str(config),
            "--sentinel",
            *files.server_args(),
        )
    except BaseException:
        master.stop()
        raise
    try:
        client = files.client(sentinel_port)
        _wait(lambda: client.sentinel_master(service)["flags"] == "master", "sentinel sees master")
        yield sentinel_port
    finally:
        sentinel.stop()
        master.stop()
