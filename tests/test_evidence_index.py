"""Incremental evidence reads: each line validated once, and always what a whole read returns."""

from __future__ import annotations

import json
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest

from harness import arrivals
from harness.arrivals import find_arrivals, stored_token
from lab.evidence_index import LineIndex
from lab.evidence_store import MESSAGES_FILE, SESSIONS_FILE, read_sessions
from lab.message_record import message_keys, read_message_records
from lab.session_facts import read_session_facts, session_facts_where


def line(n: int, **extra: Any) -> bytes:
    """Return one JSON line with `n` (and any extra fields), newline-ended."""
    return (json.dumps({"n": n} | extra) + "\n").encode()


class Counted:
    """A record parser that counts its calls and refuses objects without `n`."""

    def __init__(self) -> None:
        """Start at no calls."""
        self.calls = 0

    def __call__(self, raw: dict[str, Any]) -> int | None:
        """Return the object's `n`, or None when it has none."""
        self.calls += 1
        value = raw.get("n")
        return value if isinstance(value, int) else None


def index(path: Path) -> tuple[LineIndex[int, int], Counted]:
    """Return an index of `path` keyed by `n`, and its parser's counter."""
    parse = Counted()
    return LineIndex(path, parse, lambda n: n), parse


def everything(idx: LineIndex[int, int]) -> list[int]:
    """Return every record the index selects when it keeps all."""
    return idx.where(lambda key: True)


def test_an_appended_record_is_seen_on_the_next_read_and_old_lines_are_not_parsed_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(line(1) + line(2))
    idx, parse = index(path)
    assert everything(idx) == [1, 2]
    with path.open("ab") as out:
        out.write(line(3))
    assert everything(idx) == [1, 2, 3], "an append must be seen"
    # 2 lines parsed once when indexed, 2 parsed again to be returned, then 1 + 3 the same way
    assert parse.calls == 2 + 2 + 1 + 3
    assert idx.keys() == [1, 2, 3]
    assert parse.calls == 8, "keys alone parse nothing already indexed"
    fresh, fresh_parse = index(path)
    assert fresh.keys() == [1, 2, 3]
    assert fresh_parse.calls == 3, "control: a new index parses every line"


def test_a_partial_last_line_is_not_a_record_until_it_is_completed(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    whole = line(2)
    path.write_bytes(line(1) + whole[:5])
    idx, _ = index(path)
    assert everything(idx) == [1], "a torn line is never parsed in part"
    with path.open("ab") as out:
        out.write(whole[5:])
    assert everything(idx) == [1, 2], "once completed it is a record"


def test_an_unended_but_whole_line_counts_as_a_whole_read_counts_it(tmp_path: Path) -> None:
    path = tmp_path / SESSIONS_FILE
    path.write_bytes(line(1) + line(2).rstrip(b"\n"))
    idx, _ = index(path)
    assert everything(idx) == [1, 2] == [r["n"] for r in read_sessions(tmp_path)]
    path.write_bytes(line(1) + line(2).rstrip(b"\n") + b"xx\n" + line(3))  # then it tore
    assert everything(idx) == [1, 3] == [r["n"] for r in read_sessions(tmp_path)]


@pytest.mark.parametrize("how", ["in place", "replaced", "shrunk"])
def test_a_rewritten_file_is_read_again_from_the_start(tmp_path: Path, how: str) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(line(1) + line(2))
    idx, _ = index(path)
    assert everything(idx) == [1, 2]
    if how == "in place":  # same inode, same size, other records
        path.write_bytes(line(7) + line(8))
    elif how == "replaced":
        (tmp_path / "new").write_bytes(line(7) + line(8) + line(9))
        (tmp_path / "new").replace(path)
    else:
        path.write_bytes(line(7))
    expected = {"in place": [7, 8], "replaced": [7, 8, 9], "shrunk": [7]}[how]
    assert idx.keys() == expected, "no key of the old content is kept"
    assert everything(idx) == expected
    path.unlink()
    assert everything(idx) == [], "a missing file has no records"


def test_records_are_picked_by_key_and_invalid_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(line(1) + b'{"no": 1}\n' + b"[1]\n" + line(2) + line(3))
    idx, _ = index(path)
    assert idx.where(lambda n: n != 2) == [1, 3]
    assert idx.keys() == [1, 2, 3]


def session_line(port: int, session_id: str) -> bytes:
    """Return a valid session record line for a peer port."""
    record = {
        "receiver": "r",
        "session_id": session_id,
        "peer_ip": "127.0.0.1",
        "peer_port": port,
        "started": 1.0,
        "ended": 2.0,
        "starttls_offered": True,
        "ended_by": "quit",
    }
    return (json.dumps(record) + "\n").encode()


def test_sessions_picked_by_peer_are_the_whole_reads_records(tmp_path: Path) -> None:
    path = tmp_path / SESSIONS_FILE
    path.write_bytes(session_line(1000, "a") + b'{"peer_port": 1001}\n' + session_line(1001, "b"))
    picked = session_facts_where(tmp_path, lambda key: key.peer_port == 1001)
    assert [r.session_id for r in picked] == ["b"]
    assert picked == [r for r in read_session_facts(tmp_path) if r.peer_port == 1001]
    with path.open("ab") as out:
        out.write(session_line(1001, "c"))
    again = session_facts_where(tmp_path, lambda key: key.peer_port == 1001)
    assert [r.session_id for r in again] == ["b", "c"]


def message_line(message_id: str, eml: str, rcpt: str = "inbox@r.lab.test") -> bytes:
    """Return a valid message record line."""
    record = {
        "receiver": "r",
        "session_id": "s1",
        "peer_ip": "127.0.0.1",
        "peer_port": 1000,
        "handshake": "none",
        "queue_id": eml.removesuffix(".eml"),
        "message_id": message_id,
        "rcpt_tos": [rcpt],
        "size": 10,
        "eml": eml,
        "received": "from x by y",
        "accepted": 1.0,
    }
    return (json.dumps(record) + "\n").encode()


def test_find_arrivals_sees_a_copy_stored_after_a_first_look(tmp_path: Path) -> None:
    (tmp_path / "q1.eml").write_bytes(b"Received: from x by y\r\nMessage-ID: <a@x>\r\n\r\nhi\r\n")
    (tmp_path / MESSAGES_FILE).write_bytes(message_line("<a@x>", "q1.eml"))
    assert find_arrivals(tmp_path, "<b@x>", "lab.test") == []
    (tmp_path / "q2.eml").write_bytes(b"Received: from x by y\r\nMessage-ID: <b@x>\r\n\r\nhi\r\n")
    with (tmp_path / MESSAGES_FILE).open("ab") as out:
        out.write(message_line("<b@x>", "q2.eml"))
    assert [a.eml for a in find_arrivals(tmp_path, "<b@x>", "lab.test")] == ["q2.eml"]
    assert [k.eml for k in message_keys(tmp_path)] == [
        r.eml for r in read_message_records(tmp_path)
    ]


def test_a_token_header_is_parsed_once_per_file_and_again_when_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    real = arrivals._token

    def counting(data: bytes | None) -> str | None:
        parsed.append(data or b"")
        return real(data)

    monkeypatch.setattr(arrivals, "_token", counting)
    eml = tmp_path / "q1.eml"
    eml.write_bytes(b"X-TLSLab-Message-ID: <t@x>\r\n\r\nbody\r\n")
    assert stored_token(eml) == "<t@x>"
    assert stored_token(eml) == "<t@x>"
    assert len(parsed) == 1, "an unchanged file is not parsed again"
    eml.write_bytes(b"X-TLSLab-Message-ID: <other@x>\r\n\r\nbody, longer\r\n")
    assert stored_token(eml) == "<other@x>", "a changed file is parsed again"
    assert len(parsed) == 2
    eml.unlink()
    assert stored_token(eml) is None


def test_a_token_is_remembered_under_the_same_file_whether_named_by_text_or_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    real = arrivals._token

    def counting(data: bytes | None) -> str | None:
        parsed.append(data or b"")
        return real(data)

    monkeypatch.setattr(arrivals, "_token", counting)
    eml = tmp_path / "q2.eml"
    eml.write_bytes(b"X-TLSLab-Message-ID: <t2@x>\r\n\r\nbody\r\n")
    assert stored_token(eml) == "<t2@x>"
    assert stored_token(str(eml)) == "<t2@x>"
    assert len(parsed) == 1, "the text path names the file already parsed"
    other = tmp_path / "q3.eml"
    other.write_bytes(b"X-TLSLab-Message-ID: <t3@x>\r\n\r\nbody\r\n")
    assert stored_token(str(other)) == "<t3@x>", "control: another file is parsed on its own"
    assert len(parsed) == 2
    assert stored_token(str(tmp_path / "missing.eml")) is None


@pytest.mark.parametrize(
    "message",
    [
        b"A: 1\r\nX-TLSLab-Message-ID: <t1@x>\r\n\r\nbody\r\nX-TLSLab-Message-ID: <no@x>\r\n",
        b"A: 1\nX-TLSLab-Message-ID: <t2@x>\n\nX-TLSLab-Message-ID: <no@x>\n",
        b"A: 1\rX-TLSLab-Message-ID: <t3@x>\r\rX-TLSLab-Message-ID: <no@x>\r",
        b"A: 1\r\n folded\r\nX-TLSLab-Message-ID:\r\n <t4@x>\r\n\r\nbody",
        b"A: 1\r\n\nX-TLSLab-Message-ID: <body@x>\r\n",  # CRLF then LF: an empty line
        b"\r\nX-TLSLab-Message-ID: <body@x>\r\n",  # no headers at all
        b"A: 1\r\nB: 2\r\nX-TLSLab-Message-ID: <t5@x>",  # no body, no final line ending
        b"A: 1\r\nnot a header line\r\nX-TLSLab-Message-ID: <t6@x>\r\n\r\n",
    ],
)
def test_the_token_is_read_from_the_header_block_exactly_as_the_whole_message_parse(
    message: bytes,
) -> None:
    whole = BytesHeaderParser().parsebytes(message).get(arrivals.TOKEN_HEADER)
    expected = str(whole).strip() if whole is not None else None
    assert arrivals._token(message) == expected
    assert arrivals._token(message + b"\r\nX-TLSLab-Message-ID: <late@x>\r\n") == expected


def test_forgetting_a_folder_drops_its_indexes_only(tmp_path: Path) -> None:
    from lab import evidence_index

    done, other = tmp_path / "done", tmp_path / "other"
    for folder in (done, other):
        folder.mkdir()
        (folder / SESSIONS_FILE).write_bytes(line(1))
    made = {
        folder: evidence_index.index_of("n", folder / SESSIONS_FILE, Counted(), int)
        for folder in (done, other)
    }
    evidence_index.forget_folder(done)
    again = evidence_index.index_of("n", done / SESSIONS_FILE, Counted(), int)
    assert again is not made[done], "the finished receiver's index was dropped"
    assert again.keys() == [1], "a later read starts over and reads the same records"
    kept = evidence_index.index_of("n", other / SESSIONS_FILE, Counted(), int)
    assert kept is made[other], "control: another folder's index is kept"
