"""The city's device certificate authority (the `cryptography` library).

One CA per installation, created on first use: an EC P-256 key sealed with the city's secret key,
and a self-signed certificate. It issues each device a fresh key and a client certificate whose
subject is the device id; `renew_certificate` rollouts install them (protocol `install_certificate`
with `certificate` and `private_key`, both secret in transit and never logged).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import CityCaRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.organizations import Caller
from cityward.services.organizations import city_org

CA_YEARS = 10
DEVICE_DAYS = 365
_SEAL = ("__city_ca__", "ca-key")  # the box's (device, purpose) binding for the CA key


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def ensure(uow_factory: UnitOfWorkFactory, box: SecretBox,
           caller: Caller) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA, created once (under the writer lock, so two executors cannot make two)."""
    with uow_factory(write=True) as uow:
        s = uow.session
        row = s.scalar(select(CityCaRow).order_by(CityCaRow.id).limit(1).with_for_update())
        if row is None:
            now = uow.clock()
            name = city_org(s).name
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name[:64]),
                                 x509.NameAttribute(NameOID.COMMON_NAME, f"{name[:40]} device CA")])
            cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - timedelta(minutes=5))
                    .not_valid_after(now + timedelta(days=365 * CA_YEARS))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                 key_encipherment=False, data_encipherment=False,
                                                 key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                 encipher_only=False, decipher_only=False), critical=True)
                    .sign(key, hashes.SHA256()))
            row = CityCaRow(certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
                            private_key=box.seal(*_SEAL, _pem(key)), created_at=now)
            s.add(row)
            uow.record(caller, "city_ca.created", "city_ca", 1, after={
                "subject": subject.rfc4514_string(), "not_after": cert.not_valid_after_utc.isoformat()})
            uow.commit()
            return cert, key
        cert = x509.load_pem_x509_certificate(row.certificate.encode())
        loaded = serialization.load_pem_private_key(box.open(*_SEAL, row.private_key).encode(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return cert, loaded


def issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], device_id: str,
          days: int = DEVICE_DAYS) -> tuple[str, str]:
    """A new key and client certificate for one device: (certificate PEM, private key PEM)."""
    ca_cert, ca_key = ca
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem(key)
