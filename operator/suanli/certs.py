"""Self-signed TLS material for admission webhooks served outside a cluster.

The API server only calls webhooks over HTTPS and verifies them against the ``caBundle`` of the
webhook configuration. Kopf's own self-signed mode relies on oscrypto, which does not work with
OpenSSL 3, so a small CA and a server certificate are made here with ``cryptography`` instead. In
a cluster the Helm chart provides certificates (cert-manager or its own), and this is not used.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class WebhookCertificates:
    """PEM files on disk plus the CA bundle the webhook configuration carries."""

    ca_pem: bytes
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_webhook_certificates(
    directory: Path,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    valid_days: int = 30,
) -> WebhookCertificates:
    """Write ``tls.crt`` / ``tls.key`` signed by a fresh CA into ``directory``.

    ``hosts`` become the certificate's subject alternative names: IP addresses where they parse
    as one, DNS names otherwise (e.g. ``suanli-webhook.suanli-system.svc``).
    """
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("suanli-webhook-ca"))
        .issuer_name(_name("suanli-webhook-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / "tls.crt"
    key_file = directory / "tls.key"
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    (directory / "ca.crt").write_bytes(ca_pem)
    return WebhookCertificates(ca_pem=ca_pem, cert_file=cert_file, key_file=key_file)
