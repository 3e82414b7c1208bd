"""Feed signatures: minisign's format, made and checked by ``guardian_dns.feedsign``.

What a client must get right: a manifest changed by a single byte, a signature or trusted comment
changed by one character, a signature by a key it does not trust -- each refused, each with its
own reason; two trusted keys at once (rotation); legacy ("Ed") signatures still read; and the
stock ``minisign`` tool agreeing with us in both directions (those tests need ``minisign``:
skipped without it on a developer machine, failed under ``CI=true``).
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from guardian_dns import feedsign
from guardian_dns.errors import GuardianError
from guardian_dns.feedsign import PublicKey, SecretKey, SignatureError, sign, verify
from tests.support import require_tool

DATA = b'{"format": "guardian-dns feed", "serial": 7}\n'
COMMENT = "timestamp:1795559195\tfile:manifest.json\tserial:7\thashed"

# Made by minisign 0.11 (`minisign -G -W`, then `echo hi > f; minisign -S -m f -t "tc here"`):
# a fixed vector, so the format is checked against the real tool even where it is not installed.
MINISIGN_PUB = """\
untrusted comment: minisign public key E71F85E1B0DAC104
RWQEwdqw4YUf5+/v29lVLt9QoMaIB60OE23dM7UKo5hrSpnkULe/Entb
"""
MINISIGN_DATA = b"hi\n"
MINISIGN_SIG = """\
untrusted comment: signature from minisign secret key
RUQEwdqw4YUf5yjuywT9pKizHPQYh6lokkaBsW94nzoWiqSBjpIZeHvPr1USVYlDq4vm/+y8YP6Igcl+umNVG4dXyJbWUnAd/Qk=
trusted comment: tc here
kJ1NzHKvyc2lpCp6EuwolDSis6rbxDHLNX4L6ucEFoCmJJeigi+jAcSBYu9aQtg70lde3NZYR37YXGn7piMLDg==
"""


@pytest.fixture(scope="module")
def key() -> SecretKey:
    return SecretKey.generate("test key")


@pytest.fixture(scope="module")
def other() -> SecretKey:
    return SecretKey.generate("another key")


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _flip_b64(line: str, index: int) -> str:
    raw = bytearray(base64.b64decode(line))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _edit(text: str, line: int, change: Callable[[str], str]) -> str:
    lines = _lines(text)
    lines[line] = change(lines[line])
    return "\n".join(lines) + "\n"


def _legacy_signature(key: SecretKey, data: bytes, comment: str) -> str:
    """A legacy ("Ed": the data itself is signed) signature, as ``minisign -S -l`` makes one."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    sig = private.sign(data)
    global_sig = private.sign(sig + comment.encode())
    record = base64.b64encode(b"Ed" + key.key_id + sig).decode()
    return (
        f"untrusted comment: legacy\n{record}\ntrusted comment: {comment}\n"
        f"{base64.b64encode(global_sig).decode()}\n"
    )


# --- what a good signature says --------------------------------------------------------------


def test_a_signature_verifies_and_says_which_key_and_comment(key: SecretKey) -> None:
    text = sign(DATA, key, COMMENT)
    got = verify(DATA, text, [key.public_key()])
    assert got.key_id == key.key_id
    assert got.key_id_hex == key.public_key().key_id_hex
    assert got.trusted_comment == COMMENT
    assert got.algorithm == "ED"
    lines = _lines(text)
    assert lines[0] == f"untrusted comment: signature from guardian-dns feed key {key.key_id_hex}"
    assert base64.b64decode(lines[1])[:2] == b"ED"  # prehashed, minisign's default
    assert lines[2] == f"trusted comment: {COMMENT}"


def test_signature_text_may_come_as_bytes_with_crlf(key: SecretKey) -> None:
    text = sign(DATA, key, COMMENT).replace("\n", "\r\n").encode()
    assert verify(DATA, text, [key.public_key()]).trusted_comment == COMMENT


def test_a_minisign_made_signature_verifies() -> None:
    pub = PublicKey.parse(MINISIGN_PUB, "minisign.pub")
    got = verify(MINISIGN_DATA, MINISIGN_SIG, [pub])
    assert (got.key_id_hex, got.trusted_comment, got.algorithm) == (
        "E71F85E1B0DAC104",
        "tc here",
        "ED",
    )


def test_key_id_prints_as_minisign_prints_it() -> None:
    pub = PublicKey.parse(MINISIGN_PUB, "minisign.pub")
    assert pub.key_id == bytes.fromhex("04c1dab0e1851fe7")  # little-endian on the wire
    assert pub.key_id_hex == "E71F85E1B0DAC104"
    assert pub.comment == "minisign public key E71F85E1B0DAC104"


# --- every way a signature can be wrong ------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        pytest.param(lambda d, s: (d[:-2] + b"X" + d[-1:], s), "bad signature", id="data-byte"),
        pytest.param(lambda d, s: (d + b" ", s), "bad signature", id="data-appended"),
        pytest.param(lambda d, s: (d[:-1], s), "bad signature", id="data-cut-short"),
        pytest.param(
            lambda d, s: (d, _edit(s, 1, lambda x: _flip_b64(x, 40))),
            "bad signature",
            id="signature-byte",
        ),
        pytest.param(
            lambda d, s: (d, _edit(s, 2, lambda x: x.replace("serial:7", "serial:9"))),
            "bad global signature",
            id="trusted-comment",
        ),
        pytest.param(
            lambda d, s: (d, _edit(s, 3, lambda x: _flip_b64(x, 5))),
            "bad global signature",
            id="global-signature-byte",
        ),
        pytest.param(
            lambda d, s: (d, _edit(s, 1, lambda x: _flip_b64(x, 3))),
            "which is not trusted",
            id="key-id-byte",
        ),
        pytest.param(
            lambda d, s: (d, _edit(s, 1, lambda x: _flip_b64(x, 0))),
            "unsupported signature algorithm",
            id="algorithm",
        ),
    ],
)
def test_any_change_is_refused_with_its_reason(
    key: SecretKey, tamper: Callable[[bytes, str], tuple[bytes, str]], reason: str
) -> None:
    data, text = tamper(DATA, sign(DATA, key, COMMENT))
    with pytest.raises(SignatureError, match=reason):
        verify(data, text, [key.public_key()])


def test_untrusted_comment_is_not_signed(key: SecretKey) -> None:
    text = _edit(sign(DATA, key, COMMENT), 0, lambda _: "untrusted comment: anything at all")
    assert verify(DATA, text, [key.public_key()]).trusted_comment == COMMENT


def test_a_signature_by_another_key_names_that_key(key: SecretKey, other: SecretKey) -> None:
    text = sign(DATA, other, COMMENT)
    with pytest.raises(SignatureError) as info:
        verify(DATA, text, [key.public_key()], source="https://feed.test/manifest.json.minisig")
    message = str(info.value)
    assert message.startswith("https://feed.test/manifest.json.minisig: ")
    assert f"signed by key {other.key_id_hex}, which is not trusted" in message
    assert f"(trusted keys: {key.key_id_hex})" in message
    assert isinstance(info.value, GuardianError)


def test_a_key_with_a_trusted_id_but_other_bytes_does_not_verify(
    key: SecretKey, other: SecretKey
) -> None:
    # An attacker who copies the trusted key id into a signature by their own key.
    forged = SecretKey(key.key_id, other.seed, other.public)
    with pytest.raises(SignatureError, match="bad signature"):
        verify(DATA, sign(DATA, forged, COMMENT), [key.public_key()])


def test_no_trusted_keys_trusts_nothing(key: SecretKey) -> None:
    with pytest.raises(SignatureError, match=r"not trusted \(trusted keys: none\)"):
        verify(DATA, sign(DATA, key, COMMENT), [])


def test_rotation_two_trusted_keys_each_verify(key: SecretKey, other: SecretKey) -> None:
    old, new = key, other
    trusted = [old.public_key(), new.public_key()]
    assert verify(DATA, sign(DATA, old, COMMENT), trusted).key_id == old.key_id
    assert verify(DATA, sign(DATA, new, COMMENT), trusted).key_id == new.key_id
    # Once the old key is retired, what it signs is refused.
    with pytest.raises(SignatureError, match=old.key_id_hex):
        verify(DATA, sign(DATA, old, COMMENT), [new.public_key()])


def test_legacy_signature_verifies(key: SecretKey) -> None:
    text = _legacy_signature(key, DATA, COMMENT)
    got = verify(DATA, text, [key.public_key()])
    assert (got.algorithm, got.trusted_comment) == ("Ed", COMMENT)
    with pytest.raises(SignatureError, match="bad signature"):
        verify(DATA + b"\n", text, [key.public_key()])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("", "0 lines", id="empty"),
        pytest.param("\n".join(_lines(MINISIGN_SIG)[:3]), "3 lines", id="three-lines"),
        pytest.param(MINISIGN_SIG + "extra\n", "5 lines", id="extra-line"),
        pytest.param(
            MINISIGN_SIG.replace("untrusted comment: ", "comment: "),
            "line 1 must start with 'untrusted comment:'",
            id="no-untrusted-prefix",
        ),
        pytest.param(
            MINISIGN_SIG.replace("trusted comment: tc", "tc"),
            "line 3 must start with 'trusted comment:'",
            id="no-trusted-prefix",
        ),
        pytest.param(MINISIGN_SIG.replace("RUQE", "RU*E"), "not base64", id="bad-base64"),
        pytest.param(
            _edit(MINISIGN_SIG, 1, lambda x: base64.b64encode(base64.b64decode(x)[:-1]).decode()),
            "73 bytes where minisign's format has 74",
            id="short-signature",
        ),
        pytest.param(
            _edit(MINISIGN_SIG, 3, lambda x: base64.b64encode(b"x" * 65).decode()),
            "65 bytes where minisign's format has 64",
            id="long-global-signature",
        ),
        pytest.param(
            MINISIGN_SIG.replace("tc here", "tc\rhere"), "control character", id="cr-in-comment"
        ),
        pytest.param(b"\xff\xfe", "not UTF-8", id="not-utf8"),
    ],
)
def test_malformed_signature_files_are_refused(text: str | bytes, reason: str) -> None:
    pub = PublicKey.parse(MINISIGN_PUB, "minisign.pub")
    with pytest.raises(SignatureError, match="malformed signature") as info:
        verify(MINISIGN_DATA, text, [pub])
    assert reason in str(info.value)


def test_sign_refuses_a_comment_minisign_could_not_read(key: SecretKey) -> None:
    with pytest.raises(ValueError, match="one line"):
        sign(DATA, key, "two\nlines")
    with pytest.raises(ValueError, match="longer than"):
        sign(DATA, key, "x" * (feedsign.MAX_TRUSTED_COMMENT + 1))
    text = sign(DATA, key, "x" * feedsign.MAX_TRUSTED_COMMENT)
    assert len(verify(DATA, text, [key.public_key()]).trusted_comment) == 8173


# --- key files -------------------------------------------------------------------------------


def test_public_key_round_trip_and_one_line_form(key: SecretKey) -> None:
    pub = key.public_key()
    text = pub.to_text()
    assert text == f"untrusted comment: minisign public key {pub.key_id_hex}\n{pub.to_base64()}\n"
    assert pub.to_base64().startswith("RW")  # what minisign -P takes
    assert PublicKey.parse(text, "k.pub") == pub
    one_line = PublicKey.parse(pub.to_base64(), "config")
    assert (one_line.key_id, one_line.key, one_line.comment) == (pub.key_id, pub.key, "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("", "the file is empty", id="empty"),
        pytest.param("untrusted comment: x\n", "no key after the comment line", id="no-key"),
        pytest.param("untrusted comment: x\nRWQ\nRWQ\n", "one base64 line", id="two-keys"),
        pytest.param("untrusted comment: x\n!!!\n", "not base64", id="bad-base64"),
        pytest.param(
            "untrusted comment: x\n" + base64.b64encode(b"Ed" + bytes(30)).decode(),
            "32 bytes where minisign's format has 42",
            id="short",
        ),
        pytest.param(
            "untrusted comment: x\n" + base64.b64encode(b"Xx" + bytes(40)).decode(),
            "unsupported public key algorithm",
            id="algorithm",
        ),
    ],
)
def test_bad_public_key_files_name_the_file(text: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=r"^/etc/guardian/feed\.pub: ") as info:
        PublicKey.parse(text, "/etc/guardian/feed.pub")
    assert reason in str(info.value)


def test_a_secret_key_given_as_public_key_is_refused(key: SecretKey) -> None:
    with pytest.raises(SignatureError, match="this is a secret key, not a public key"):
        PublicKey.parse(key.to_text(), "feed.pub")


def test_secret_key_round_trip_in_minisign_layout(key: SecretKey) -> None:
    text = key.to_text()
    comment, b64 = _lines(text)
    assert comment == "untrusted comment: test key"
    raw = base64.b64decode(b64)
    assert len(raw) == 158
    assert raw[:6] == b"Ed\0\0B2"  # Ed25519, no password (no KDF), BLAKE2b checksum
    assert raw[54:62] == key.key_id
    parsed = SecretKey.parse(text, "feed.key")
    assert parsed == key
    assert key.seed.hex() not in repr(parsed)  # the seed never lands in a log line


def _secret_record(key: SecretKey, **changes: bytes) -> str:
    raw = bytearray(base64.b64decode(_lines(key.to_text())[1]))
    spans = {"kdf": (2, 4), "key_id": (54, 62), "public": (94, 126), "checksum": (126, 158)}
    for name, value in changes.items():
        start, end = spans[name]
        raw[start:end] = value
    return f"untrusted comment: edited\n{base64.b64encode(bytes(raw)).decode()}\n"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"kdf": b"Sc"}, "password-protected", id="encrypted"),
        pytest.param({"kdf": b"Xx"}, "unsupported key derivation", id="unknown-kdf"),
        pytest.param({"checksum": b"\1" * 32}, "checksum differs", id="checksum"),
        pytest.param(
            {"public": b"\2" * 32, "checksum": bytes(32)},
            "public half does not match",
            id="public-half",
        ),
    ],
)
def test_bad_secret_keys_are_refused(
    key: SecretKey, changes: dict[str, bytes], reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        SecretKey.parse(_secret_record(key, **changes), "feed.key")


def test_a_zero_checksum_is_accepted_as_minisign_0_11_writes_it(key: SecretKey) -> None:
    assert SecretKey.parse(_secret_record(key, checksum=bytes(32)), "k") == SecretKey(
        key.key_id, key.seed, key.public, "edited"
    )


def test_a_public_key_given_as_secret_key_is_refused(key: SecretKey) -> None:
    with pytest.raises(SignatureError, match="this is a public key"):
        SecretKey.parse(key.public_key().to_text(), "feed.key")


def test_importing_feedsign_does_not_import_cryptography() -> None:
    code = (
        "import sys; import guardian_dns.feedsign; "
        "sys.exit('cryptography' in sys.modules or 'guardian_dns.lists' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- the stock minisign tool -----------------------------------------------------------------


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_minisign_signs_and_we_verify(tmp_path: Path) -> None:
    minisign = require_tool("minisign", "minisign")
    _run(minisign, "-G", "-W", "-p", "pub", "-s", "sec", cwd=tmp_path)
    (tmp_path / "manifest.json").write_bytes(DATA)
    _run(minisign, "-S", "-s", "sec", "-m", "manifest.json", "-t", COMMENT, cwd=tmp_path)
    pub = PublicKey.parse((tmp_path / "pub").read_text(), "pub")
    sig = (tmp_path / "manifest.json.minisig").read_text()
    got = verify(DATA, sig, [pub])
    assert (got.trusted_comment, got.algorithm) == (COMMENT, "ED")
    with pytest.raises(SignatureError, match="bad signature"):
        verify(DATA + b" ", sig, [pub])


def test_minisign_legacy_signature_verifies(tmp_path: Path) -> None:
    minisign = require_tool("minisign", "minisign")
    _run(minisign, "-G", "-W", "-p", "pub", "-s", "sec", cwd=tmp_path)
    (tmp_path / "m").write_bytes(DATA)
    _run(minisign, "-S", "-l", "-s", "sec", "-m", "m", "-t", "legacy", cwd=tmp_path)
    pub = PublicKey.parse((tmp_path / "pub").read_text(), "pub")
    assert verify(DATA, (tmp_path / "m.minisig").read_text(), [pub]).algorithm == "Ed"


def test_we_sign_with_a_minisign_key_and_minisign_verifies(tmp_path: Path) -> None:
    minisign = require_tool("minisign", "minisign")
    _run(minisign, "-G", "-W", "-p", "pub", "-s", "sec", cwd=tmp_path)
    key = SecretKey.parse((tmp_path / "sec").read_text(), "sec")
    pub = PublicKey.parse((tmp_path / "pub").read_text(), "pub")
    # (Not the comments: minisign 0.11 drops a key id's leading zeros there, 0.12 keeps them.)
    assert (key.key_id, key.public) == (pub.key_id, pub.key)
    (tmp_path / "manifest.json").write_bytes(DATA)
    (tmp_path / "manifest.json.minisig").write_text(sign(DATA, key, COMMENT))
    done = _run(minisign, "-V", "-p", "pub", "-m", "manifest.json", cwd=tmp_path)
    assert f"Trusted comment: {COMMENT}" in done.stdout


def test_our_key_files_work_with_minisign(tmp_path: Path, key: SecretKey) -> None:
    minisign = require_tool("minisign", "minisign")
    secret = tmp_path / "guardian-feed.key"
    secret.write_text(key.to_text())
    os.chmod(secret, stat.S_IRUSR | stat.S_IWUSR)
    (tmp_path / "guardian-feed.pub").write_text(key.public_key().to_text())
    (tmp_path / "a").write_bytes(DATA)
    (tmp_path / "a.minisig").write_text(sign(DATA, key, COMMENT))
    _run(minisign, "-V", "-p", "guardian-feed.pub", "-m", "a", cwd=tmp_path)
    # ... and minisign signs with the secret key file we wrote.
    (tmp_path / "b").write_bytes(DATA + b"b")
    _run(minisign, "-S", "-s", "guardian-feed.key", "-m", "b", "-t", "by minisign", cwd=tmp_path)
    got = verify(DATA + b"b", (tmp_path / "b.minisig").read_text(), [key.public_key()])
    assert got.trusted_comment == "by minisign"
