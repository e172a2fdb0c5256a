"""Signed checkpoints of the audit log (Ed25519), verifiable with nothing but the public key.

A checkpoint says "apikeys wrote entries ``first_entry_id`` to ``entry_id``, and after them the
log's head hash is ``head_hash``", at a time, signed by the installation's audit signing key. Its
*message* is canonical JSON::

    {"v": "apikeys-audit-checkpoint/2", "first_entry_id": 40, "entry_id": 42, "head_hash": "<64 hex>",
     "at": "2026-12-02T01:00:00.000000+00:00", "public_key": "<base64 raw key>",
     "prev_hash": "<64 hex: the previous checkpoint's hash, 64 zeros for the first>"}

A checkpoint vouches only for the entries appended in its own transaction (``first_entry_id`` to
``entry_id``): an entry that anyone else wrote between two appends (plain SQL at head+1, the head row
moved along) lies in no checkpoint's range and stays "not written by apikeys" however many signed
entries follow. The first checkpoint of a log vouches from entry 1 (the entries written before
signing was turned on are adopted once, when it is). Version 1 checkpoints (before release 5) had no
``first_entry_id``; each vouched for everything since the checkpoint before it.

(keys sorted, no spaces, UTF-8), the signature is Ed25519 over those bytes, and the checkpoint's
``hash`` is SHA-256 over the message bytes, a newline and the base64 signature. Because each
checkpoint signs the hash of the one before, a valid signature on the newest checkpoint vouches
for every earlier checkpoint and, through the head hash, for every entry up to it.

``docs/verify_audit_export.py`` repeats these few lines on its own, for auditors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import InvalidInput

VERSION = "apikeys-audit-checkpoint/2"
VERSION_1 = "apikeys-audit-checkpoint/1"  # no first_entry_id (release 4)
GENESIS = "0" * 64


def message(*, entry_id: int, head_hash: str, at: datetime, public_key: str, prev_hash: str,
            first_entry_id: int | None = None) -> bytes:
    """The signed bytes; ``first_entry_id`` None: a version 1 checkpoint (as release 4 wrote them)."""
    body = {"v": VERSION_1 if first_entry_id is None else VERSION, "entry_id": entry_id, "head_hash": head_hash,
            "at": at.isoformat(timespec="microseconds"), "public_key": public_key, "prev_hash": prev_hash}
    if first_entry_id is not None:
        body["first_entry_id"] = first_entry_id
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checkpoint_hash(msg: bytes, signature: str) -> str:
    return hashlib.sha256(msg + b"\n" + signature.encode()).hexdigest()


def raw_public_key(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class Signer:
    """The installation's audit signing key."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_raw(self) -> str:
        return raw_public_key(self.public_key)

    def sign(self, msg: bytes) -> str:
        return base64.b64encode(self.private_key.sign(msg)).decode()


def signature_valid(public_key: str, msg: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is ``public_key``'s (base64 raw) Ed25519 signature of ``msg``."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        key.verify(base64.b64decode(signature, validate=True), msg)
    except (InvalidSignature, ValueError):
        return False
    return True


def _pem_text(value: str, what: str, *, secret: bool = False) -> bytes:
    """The PEM that ``value`` is, or names as a file. Forgiven: one pair of quotes around it, and
    newlines written as ``\\n`` (both usual in .env files). ``secret``: whatever is wrong, no message
    repeats any of the value (it may be most of a private key), not even as a file name."""
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if "-----BEGIN" in text:
        if not text.startswith("-----BEGIN"):
            raise InvalidInput(f"{what} has text before its '-----BEGIN' line (set it to the PEM alone, or to the "
                               "path of a PEM file)")
        return text.replace("\\n", "\n").encode()
    if secret and ("\n" in text or len(text) > 1024 or "PRIVATE" in text):
        raise InvalidInput(f"{what} is neither a PEM private key (it must begin with '-----BEGIN') nor the path of a "
                           "file holding one")
    path = Path(text).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        named = "the file it names" if secret else str(path)
        raise InvalidInput(f"{what}: cannot read {named}: {exc.strerror or exc.__class__.__name__}") from None


def load_signer(value: str) -> Signer:
    """``APIKEYS_AUDIT_SIGNING_KEY``: an Ed25519 private key as PEM, or the path of a PEM file."""
    what = "APIKEYS_AUDIT_SIGNING_KEY"
    try:
        key = serialization.load_pem_private_key(_pem_text(value, what, secret=True), password=None)
    except (ValueError, TypeError):
        raise InvalidInput(f"{what} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{what} must be an Ed25519 key (make one with `apikeys audit keygen`)")
    return Signer(key)


def load_public_key(value: str) -> str:
    """A pinned public key (PEM SubjectPublicKeyInfo, or a path to one) as base64 raw bytes."""
    try:
        key = serialization.load_pem_public_key(_pem_text(value, "the public key"))
    except (ValueError, TypeError):
        raise InvalidInput("the public key is not a PEM public key (as `apikeys audit keygen` prints it)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("the public key must be an Ed25519 key")
    return raw_public_key(key)


def pem_of_raw(public_key: str) -> str:
    return public_pem(Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key)))


def generate(out: Path | None = None) -> tuple[str, str]:
    """A new signing key: (private PEM, public PEM). With ``out``, the private key is written there
    with mode 0600 (created exclusively: an existing file is never overwritten)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    if out is not None:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InvalidInput(f"{out} already exists; a signing key is never overwritten") from None
        except OSError as exc:
            raise InvalidInput(f"cannot create {out}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(private)
        os.chmod(out, 0o600)  # whatever the umask said
    return private, public_pem(key.public_key())
