"""The fleet's private CA and one certificate per host, for uwsgi over mutual TLS.

    python -m service.ops.certs              issue what is missing, renew what expires within 30 days
    python -m service.ops.certs --renew      reissue every host certificate now
    python -m service.ops.certs --rotate-ca  a new CA signs from now on; both are trusted meanwhile
    python -m service.ops.certs --retire-ca  trust only the newest CA again

Layout under [tls] dir (default pki/, never committed): ca/ca-N.key + ca-N.crt (the keys stay on
the machine that runs this), and hosts/NAME/{host.crt, host.key, ca.crt} - exactly what
`sudo make install` on host NAME copies to /etc/parse/tls. ca.crt there is the bundle of every
CA still trusted, so a CA rotation never has a moment in which two hosts disagree.

A host certificate names the host (DNS name, its bind and reach addresses) and, for hosts that run
instances, "parse-instance", the one name Nginx checks (service/ops/fleet.py). It serves for both
ends: uWSGI presents it as a server, Nginx and the readiness probe as a client.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import settings as settings_mod
from ..settings import Host, Settings
from . import fleet

CA_DAYS = 3650
HOST_DAYS = 365
# Re-running the command renews a certificate this close to its end (a yearly cron, or by hand).
RENEW_BEFORE = dt.timedelta(days=30)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def new_ca(ca_dir: Path, name: str = "parse fleet CA") -> Path:
    """A CA key and self-signed certificate, numbered after the ones already there."""
    n = 1 + max((int(p.stem.split("-")[1]) for p in ca_dir.glob("ca-*.crt")), default=0)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {n}")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(ca_dir / f"ca-{n}.key", key)
    _write_cert(ca_dir / f"ca-{n}.crt", cert)
    return ca_dir / f"ca-{n}.crt"


def cas(ca_dir: Path) -> list[Path]:
    """The CA certificates, oldest first; the last one signs."""
    return sorted(ca_dir.glob("ca-*.crt"), key=lambda p: int(p.stem.split("-")[1]))


def issue_host(ca_crt: Path, host: Host, runs_instances: bool, out: Path, days: int = HOST_DAYS) -> None:
    """host.key + host.crt for `host`, signed by the CA at `ca_crt` (its key beside it)."""
    ca_key = serialization.load_pem_private_key(ca_crt.with_suffix(".key").read_bytes(), password=None)
    ca = _load_cert(ca_crt)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host.name)]
    if runs_instances:
        names.append(x509.DNSName(fleet.INSTANCE_NAME))
    for addr in dict.fromkeys((host.bind, host.reach)):
        names.append(x509.IPAddress(ipaddress.ip_address(addr)))
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host.name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(out / fleet.KEY_FILE, key)
    _write_cert(out / fleet.CERT_FILE, cert)


def _needs_issue(out: Path, signer: x509.Certificate) -> str | None:
    """Why the host certificate in `out` must be (re)issued, or None when it is good."""
    crt = out / fleet.CERT_FILE
    if not crt.exists() or not (out / fleet.KEY_FILE).exists():
        return "missing"
    cert = _load_cert(crt)
    if cert.issuer != signer.subject:
        return "signed by an older CA"
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def issue_all(cfg: Settings, renew: bool = False) -> list[str]:
    """Create the CA if there is none, then each host's certificate as needed; returns what was done."""
    root = cfg.tls.dir
    ca_dir = root / "ca"
    done = []
    if not cas(ca_dir):
        new_ca(ca_dir)
        done.append(f"created CA {cas(ca_dir)[-1]}")
    signer_path = cas(ca_dir)[-1]
    signer = _load_cert(signer_path)
    bundle = b"".join(p.read_bytes() for p in cas(ca_dir))
    for host in cfg.hosts:
        out = root / "hosts" / host.name
        why = "renewal asked for" if renew else _needs_issue(out, signer)
        if why:
            issue_host(signer_path, host, bool(fleet.host_instances(cfg, host.name)), out)
            done.append(f"issued {out / fleet.CERT_FILE} ({why})")
        out.mkdir(parents=True, exist_ok=True)
        (out / fleet.CA_FILE).write_bytes(bundle)
    return done


def retire_old(cfg: Settings) -> list[str]:
    """Drop every CA but the newest: after each host has installed certificates it signed."""
    ca_dir = cfg.tls.dir / "ca"
    old = cas(ca_dir)[:-1]
    for crt in old:
        crt.unlink()
        crt.with_suffix(".key").unlink(missing_ok=True)
    return [f"retired {p}" for p in old] + issue_all(cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.ops.certs", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--renew", action="store_true", help="reissue every host certificate")
    group.add_argument("--rotate-ca", action="store_true", help="a new CA signs; old and new are trusted")
    group.add_argument("--retire-ca", action="store_true", help="trust only the newest CA")
    args = parser.parse_args(argv)
    cfg = settings_mod.load()
    if args.rotate_ca:
        done = [f"created CA {new_ca(cfg.tls.dir / 'ca')}"] + issue_all(cfg, renew=True)
    elif args.retire_ca:
        done = retire_old(cfg)
    else:
        done = issue_all(cfg, renew=args.renew)
    print("\n".join(done) or f"every certificate under {cfg.tls.dir} is current")
    if not fleet.uses_tls(cfg):
        print("(every instance is on loopback: nothing uses these until one is not)")


if __name__ == "__main__":
    main()
