"""Ed25519 signatures in minisign's format: the feed's manifest is signed and checked here.

What it decides: whether some bytes were signed by one of the trusted keys, which key that was, and
what the signer put in the signed ("trusted") comment; how keys and signatures are written as text.
The formats are minisign's own (https://jedisct1.github.io/minisign/), so an operator can sign a
manifest with the stock ``minisign`` tool and check ours with it; ``docs/feed.md`` has the layouts.
What it reads: the text it is handed -- never a file, never the network.
What it must never do: do the curve arithmetic itself (the ``cryptography`` package does; it is
imported inside the functions that need it, so importing this module costs nothing until a key is
made or a signature made or checked), accept a signature by a key that is not trusted, or return
normally from ``verify`` when anything at all is wrong.

Text layouts (each base64 line is standard base64 with padding):

* public key: ``untrusted comment: ...`` / base64 of ``"Ed"`` + key id (8) + public key (32);
* secret key: ``untrusted comment: ...`` / base64 of minisign's secret key record with no password
  (``"Ed"``, KDF ``"\\0\\0"``, ``"B2"``, 48 zero bytes of KDF parameters, key id (8), secret key
  (64: seed + public key), BLAKE2b-256 checksum (32)) -- the record ``minisign -G -W`` writes;
* signature: ``untrusted comment: ...`` / base64 of algorithm (2) + key id (8) + signature (64) /
  ``trusted comment: ...`` / base64 of the global signature (64) over signature + trusted comment.

Algorithm ``"ED"`` signs the BLAKE2b-512 hash of the data (minisign's default since 0.8) and is
what ``sign`` writes; ``"Ed"`` (legacy) signs the data itself and is still accepted by ``verify``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from guardian_dns.errors import GuardianError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

KEY_ALG: Final = b"Ed"  # the algorithm bytes of every key
SIG_ALG_PREHASHED: Final = b"ED"  # Ed25519 over BLAKE2b-512 of the data: what we write
SIG_ALG_LEGACY: Final = b"Ed"  # Ed25519 over the data itself: read only
KEY_ID_BYTES: Final = 8
PUBLIC_KEY_BYTES: Final = 32
SEED_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
UNTRUSTED_PREFIX: Final = "untrusted comment: "
TRUSTED_PREFIX: Final = "trusted comment: "
# minisign reads a trusted comment line into 8192 bytes, prefix and newline included, and refuses
# to sign a longer one; keeping below its limit keeps our signatures readable by minisign.
MAX_TRUSTED_COMMENT: Final = 8192 - len(TRUSTED_PREFIX) - 2
MAX_UNTRUSTED_COMMENT: Final = 1024 - len(UNTRUSTED_PREFIX) - 2  # minisign's COMMENTMAXBYTES

_KDF_NONE: Final = b"\0\0"
_KDF_SCRYPT: Final = b"Sc"
_CHK_ALG: Final = b"B2"
_KDF_PARAMS_BYTES: Final = 32 + 8 + 8  # salt, opslimit, memlimit: unused (zero) without a password
_CHK_BYTES: Final = 32
_SECRET_RECORD_BYTES: Final = (
    2 + 2 + 2 + _KDF_PARAMS_BYTES + KEY_ID_BYTES + SEED_BYTES + PUBLIC_KEY_BYTES + _CHK_BYTES
)
_PUBLIC_RECORD_BYTES: Final = 2 + KEY_ID_BYTES + PUBLIC_KEY_BYTES
_SIG_RECORD_BYTES: Final = 2 + KEY_ID_BYTES + SIGNATURE_BYTES
DEFAULT_KEY_COMMENT: Final = "guardian-dns feed secret key (no password: keep this file private)"


class SignatureError(GuardianError):
    """A key or a signature cannot be read, or a signature does not verify; the message says
    which file or key and exactly what is wrong."""


def key_id_hex(key_id: bytes) -> str:
    """A key id as minisign prints it: the 8 bytes read as a little-endian number, in upper-case
    hex (so the bytes ``04 c1 .. e7`` print as ``E7...04``)."""
    return f"{int.from_bytes(key_id, 'little'):016X}"


def _check_comment(text: str, what: str, limit: int) -> None:
    bad = {"\r", "\n", "\0"} & set(text)
    if bad:
        raise ValueError(f"{what} must be one line without {sorted(bad)[0]!r}")
    if len(text.encode()) > limit:
        raise ValueError(f"{what} is longer than {limit} bytes")


def _lines(text: str | bytes, source: str, what: str) -> list[str]:
    """The non-empty-tailed lines of a key or signature file, CR of CRLF removed."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignatureError(f"{source}: malformed {what}: not UTF-8 text ({exc})") from None
    lines = [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _b64(line: str, size: int, source: str, what: str) -> bytes:
    try:
        raw = binascii.a2b_base64(line.strip(), strict_mode=True)
    except binascii.Error as exc:
        raise SignatureError(f"{source}: malformed {what}: not base64 ({exc})") from None
    if len(raw) != size:
        raise SignatureError(
            f"{source}: malformed {what}: {len(raw)} bytes where minisign's format has {size}"
        )
    return raw


def _comment(line: str, prefix: str, source: str, what: str, number: int) -> str:
    if not line.startswith(prefix):
        raise SignatureError(
            f"{source}: malformed {what}: line {number} must start with {prefix.strip()!r}"
        )
    return line[len(prefix) :]


def _private(seed: bytes) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed)


def _public_of(private: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    # The Encoding/Format spelling works from cryptography 38 (Debian 12) on; *_raw() is 40+.
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _verifier(key: bytes) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(key)


@dataclass(frozen=True)
class PublicKey:
    """A key clients trust: minisign's public key (key id + Ed25519 public key) and its comment.

    ``comment`` is the untrusted comment line's text (``minisign public key <KEYID>`` by
    convention); nothing depends on it.
    """

    key_id: bytes
    key: bytes
    comment: str = ""

    def __post_init__(self) -> None:
        if len(self.key_id) != KEY_ID_BYTES or len(self.key) != PUBLIC_KEY_BYTES:
            raise ValueError("a public key is an 8-byte key id and a 32-byte Ed25519 key")
        _check_comment(self.comment, "a key comment", MAX_UNTRUSTED_COMMENT)

    @property
    def key_id_hex(self) -> str:
        """The key id as minisign prints it (``E71F85E1B0DAC104``)."""
        return key_id_hex(self.key_id)

    @classmethod
    def parse(cls, text: str | bytes, source: str) -> PublicKey:
        """A public key from minisign's two-line file, or from its base64 line alone (what
        ``minisign -P`` takes). Raises SignatureError naming ``source`` and what is wrong."""
        what = "public key"
        lines = _lines(text, source, what)
        if not lines:
            raise SignatureError(f"{source}: malformed {what}: the file is empty")
        comment = ""
        if lines[0].startswith(UNTRUSTED_PREFIX):
            comment = lines[0][len(UNTRUSTED_PREFIX) :]
            lines = lines[1:]
            if not lines:
                raise SignatureError(f"{source}: malformed {what}: no key after the comment line")
        if len(lines) != 1:
            raise SignatureError(
                f"{source}: malformed {what}: expected a comment line and one base64 line"
            )
        try:
            raw = binascii.a2b_base64(lines[0].strip(), strict_mode=True)
        except binascii.Error as exc:
            raise SignatureError(f"{source}: malformed {what}: not base64 ({exc})") from None
        if len(raw) == _SECRET_RECORD_BYTES:
            raise SignatureError(
                f"{source}: this is a secret key, not a public key: never give it to clients"
            )
        if len(raw) != _PUBLIC_RECORD_BYTES:
            raise SignatureError(
                f"{source}: malformed {what}: {len(raw)} bytes where minisign's format has "
                f"{_PUBLIC_RECORD_BYTES}"
            )
        if raw[:2] != KEY_ALG:
            raise SignatureError(
                f"{source}: unsupported {what} algorithm {raw[:2]!r} (only {KEY_ALG!r}, Ed25519)"
            )
        try:
            return cls(raw[2:10], raw[10:], comment)
        except ValueError as exc:
            raise SignatureError(f"{source}: malformed {what}: {exc}") from None

    def to_base64(self) -> str:
        """The base64 line alone, as ``minisign -P`` and a config file take it."""
        return base64.b64encode(KEY_ALG + self.key_id + self.key).decode("ascii")

    def to_text(self) -> str:
        """minisign's public key file: comment line, base64 line."""
        return f"{UNTRUSTED_PREFIX}{self.comment}\n{self.to_base64()}\n"


@dataclass(frozen=True)
class SecretKey:
    """A signing key: key id, Ed25519 seed and public key, and the comment of its file.

    Its text form is minisign's secret key file without a password (``minisign -G -W``), so
    the stock tool signs with a key made by ``guardian-dns feed keygen`` and we sign with one
    made by ``minisign -G -W``. A password-protected minisign key is refused: decrypting it
    would need its password asked for here.
    """

    key_id: bytes
    seed: bytes = field(repr=False)
    public: bytes
    comment: str = DEFAULT_KEY_COMMENT

    def __post_init__(self) -> None:
        if (
            len(self.key_id) != KEY_ID_BYTES
            or len(self.seed) != SEED_BYTES
            or len(self.public) != PUBLIC_KEY_BYTES
        ):
            raise ValueError("a secret key is an 8-byte key id, a 32-byte seed and a public key")
        _check_comment(self.comment, "a key comment", MAX_UNTRUSTED_COMMENT)

    @property
    def key_id_hex(self) -> str:
        return key_id_hex(self.key_id)

    @classmethod
    def generate(cls, comment: str = DEFAULT_KEY_COMMENT) -> SecretKey:
        """A new random key pair with a random key id (as minisign makes them)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(os.urandom(KEY_ID_BYTES), seed, _public_of(private), comment)

    def public_key(self) -> PublicKey:
        """The public half, with minisign's conventional comment."""
        return PublicKey(self.key_id, self.public, f"minisign public key {self.key_id_hex}")

    def _checksum(self) -> bytes:
        # minisign's: BLAKE2b-256 over algorithm, key id and the 64-byte secret key.
        material = KEY_ALG + self.key_id + self.seed + self.public
        return hashlib.blake2b(material, digest_size=_CHK_BYTES).digest()

    def to_text(self) -> str:
        """minisign's unencrypted secret key file. Whoever writes it must make it mode 0600."""
        record = b"".join(
            (
                KEY_ALG,
                _KDF_NONE,
                _CHK_ALG,
                bytes(_KDF_PARAMS_BYTES),
                self.key_id,
                self.seed,
                self.public,
                self._checksum(),
            )
        )
        return f"{UNTRUSTED_PREFIX}{self.comment}\n{base64.b64encode(record).decode('ascii')}\n"

    @classmethod
    def parse(cls, text: str | bytes, source: str) -> SecretKey:
        """A secret key from minisign's unencrypted secret key file (ours or ``minisign -G -W``).

        Raises SignatureError naming ``source`` for anything else: a public key, a
        password-protected key, a checksum or a public half that does not match the secret.
        """
        what = "secret key"
        lines = _lines(text, source, what)
        if len(lines) != 2:
            raise SignatureError(
                f"{source}: malformed {what}: expected a comment line and one base64 line"
            )
        comment = _comment(lines[0], UNTRUSTED_PREFIX, source, what, 1)
        try:
            raw = binascii.a2b_base64(lines[1].strip(), strict_mode=True)
        except binascii.Error as exc:
            raise SignatureError(f"{source}: malformed {what}: not base64 ({exc})") from None
        if len(raw) == _PUBLIC_RECORD_BYTES:
            raise SignatureError(f"{source}: this is a public key; signing needs the secret key")
        if len(raw) != _SECRET_RECORD_BYTES:
            raise SignatureError(
                f"{source}: malformed {what}: {len(raw)} bytes where minisign's format has "
                f"{_SECRET_RECORD_BYTES}"
            )
        alg, kdf, chk_alg = raw[0:2], raw[2:4], raw[4:6]
        if alg != KEY_ALG:
            raise SignatureError(f"{source}: unsupported {what} algorithm {alg!r}")
        if kdf == _KDF_SCRYPT:
            raise SignatureError(
                f"{source}: the secret key is password-protected (minisign's scrypt); only a "
                "key without a password can be read here"
            )
        if kdf != _KDF_NONE:
            raise SignatureError(f"{source}: unsupported key derivation {kdf!r}")
        if chk_alg != _CHK_ALG:
            raise SignatureError(f"{source}: unsupported checksum algorithm {chk_alg!r}")
        at = 6 + _KDF_PARAMS_BYTES
        key_id = raw[at : at + KEY_ID_BYTES]
        at += KEY_ID_BYTES
        seed = raw[at : at + SEED_BYTES]
        public = raw[at + SEED_BYTES : at + SEED_BYTES + PUBLIC_KEY_BYTES]
        checksum = raw[-_CHK_BYTES:]
        try:
            key = cls(key_id, seed, public, comment)
        except ValueError as exc:
            raise SignatureError(f"{source}: malformed {what}: {exc}") from None
        # minisign 0.11 leaves the checksum of a key without a password zero; check it when set.
        if any(checksum) and checksum != key._checksum():
            raise SignatureError(f"{source}: the secret key is corrupt (its checksum differs)")
        if _public_of(_private(seed)) != public:
            raise SignatureError(
                f"{source}: the secret key is corrupt (its public half does not match)"
            )
        return key


@dataclass(frozen=True)
class Verified:
    """What a good signature says: which trusted key made it, and its signed comment."""

    key_id: bytes
    trusted_comment: str
    algorithm: str  # "ED" (prehashed) or "Ed" (legacy)

    @property
    def key_id_hex(self) -> str:
        return key_id_hex(self.key_id)


def _prehash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=64).digest()


def sign(
    data: bytes, key: SecretKey, trusted_comment: str, *, untrusted_comment: str | None = None
) -> str:
    """The ``.minisig`` text of a prehashed ("ED") signature of ``data`` by ``key``.

    ``trusted_comment`` is signed too (one line, at most ``MAX_TRUSTED_COMMENT`` bytes); the
    untrusted comment is not, and defaults to naming the key. Raises ValueError for a comment
    that minisign could not read back.
    """
    _check_comment(trusted_comment, "the trusted comment", MAX_TRUSTED_COMMENT)
    if untrusted_comment is None:
        untrusted_comment = f"signature from guardian-dns feed key {key.key_id_hex}"
    _check_comment(untrusted_comment, "the untrusted comment", MAX_UNTRUSTED_COMMENT)
    private = _private(key.seed)
    signature = private.sign(_prehash(data))
    global_signature = private.sign(signature + trusted_comment.encode())
    record = SIG_ALG_PREHASHED + key.key_id + signature
    return (
        f"{UNTRUSTED_PREFIX}{untrusted_comment}\n"
        f"{base64.b64encode(record).decode('ascii')}\n"
        f"{TRUSTED_PREFIX}{trusted_comment}\n"
        f"{base64.b64encode(global_signature).decode('ascii')}\n"
    )


def _parse_signature(
    signature_text: str | bytes, source: str
) -> tuple[bytes, bytes, bytes, str, bytes]:
    """(algorithm, key id, signature, trusted comment, global signature) of a .minisig text."""
    what = "signature"
    lines = _lines(signature_text, source, what)
    if len(lines) != 4:
        raise SignatureError(
            f"{source}: malformed {what}: {len(lines)} lines where minisign's format has 4 "
            "(untrusted comment, signature, trusted comment, global signature)"
        )
    _comment(lines[0], UNTRUSTED_PREFIX, source, what, 1)
    record = _b64(lines[1], _SIG_RECORD_BYTES, source, what)
    trusted_comment = _comment(lines[2], TRUSTED_PREFIX, source, what, 3)
    if "\r" in trusted_comment or "\0" in trusted_comment:
        # minisign cuts the comment there, so it could never verify what we would.
        raise SignatureError(f"{source}: malformed {what}: a control character in line 3")
    global_signature = _b64(lines[3], SIGNATURE_BYTES, source, what)
    alg, key_id, signature = record[:2], record[2:10], record[10:]
    if alg not in (SIG_ALG_PREHASHED, SIG_ALG_LEGACY):
        raise SignatureError(
            f"{source}: unsupported signature algorithm {alg!r} (known: 'ED' prehashed, 'Ed')"
        )
    return alg, key_id, signature, trusted_comment, global_signature


def signature_key_id(signature_text: str | bytes, *, source: str = "signature") -> bytes:
    """The key id a well-formed signature names, checking nothing else (for messages such as
    "signed by key X"). Raises SignatureError for a malformed signature."""
    return _parse_signature(signature_text, source)[1]


def verify(
    data: bytes,
    signature_text: str | bytes,
    trusted: Sequence[PublicKey],
    *,
    source: str = "signature",
) -> Verified:
    """Check that ``data`` was signed by one of ``trusted`` (the signature's key id picks it)
    and that its trusted comment is the one signed. Returns what the signature says.

    Every failure raises SignatureError, its message starting with ``source``: a malformed
    signature file, an unsupported algorithm, a key id that is not trusted (named, with the
    trusted ones), a signature that does not match the data, a trusted comment that does not
    match its global signature.
    """
    from cryptography.exceptions import InvalidSignature

    alg, key_id, signature, trusted_comment, global_signature = _parse_signature(
        signature_text, source
    )
    message = _prehash(data) if alg == SIG_ALG_PREHASHED else data
    candidates = [k for k in trusted if k.key_id == key_id]
    if not candidates:
        known = ", ".join(k.key_id_hex for k in trusted) or "none"
        raise SignatureError(
            f"{source}: signed by key {key_id_hex(key_id)}, which is not trusted "
            f"(trusted keys: {known})"
        )
    signed_comment = signature + trusted_comment.encode()
    for candidate in candidates:
        verifier = _verifier(candidate.key)
        try:
            verifier.verify(signature, message)
        except InvalidSignature:
            continue
        try:
            verifier.verify(global_signature, signed_comment)
        except InvalidSignature:
            raise SignatureError(
                f"{source}: bad global signature: the trusted comment is not the one key "
                f"{candidate.key_id_hex} signed"
            ) from None
        return Verified(key_id, trusted_comment, alg.decode("ascii"))
    raise SignatureError(
        f"{source}: bad signature: the data is not what key {key_id_hex(key_id)} signed "
        "(changed after signing, or cut short)"
    )


__all__ = [
    "MAX_TRUSTED_COMMENT",
    "PublicKey",
    "SecretKey",
    "SignatureError",
    "Verified",
    "key_id_hex",
    "sign",
    "signature_key_id",
    "verify",
]
