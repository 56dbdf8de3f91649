"""What the man in the middle records about one connection, and how every reader reads it back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from lab.evidence_store import read_json_lines
from lab.spec import ProxyVector

PROXY_FILE = "proxy.jsonl"


class ProxyRecord(BaseModel):
    """One sender connection through the proxy: the vector, what crossed it, and how."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    receiver: str
    vector: ProxyVector
    peer_ip: str  # the sender, as the proxy saw it
    peer_port: int
    upstream_ip: str = ""  # the proxy's end of its connection to the receiver (the receiver's peer)
    upstream_port: int = 0
    started: float
    ended: float
    manipulated: bool = False  # the vector changed what the sender saw
    manipulation: str | None = None  # what the proxy did, in words
    injected: str | None = None  # bytes appended to a reply, exactly as written to the sender
    injected_sent: bool = False  # the injected bytes were handed to the sender's connection
    sent_before: tuple[str, ...] = ()  # the sender's command lines before the manipulated reply
    sent_after: tuple[str, ...] = ()  # ... and after it
    sender_tls: str | None = None  # TLS version of the sender's leg when the proxy terminated it
    passthrough_tls: bool = False  # TLS ran end to end through the proxy, opaque to it
    data_in_plaintext: bool = False  # message data crossed while the sender's leg was not TLS
    data_decrypted: bool = False  # message data crossed the proxy decrypted by the proxy itself
    data_bytes: int = 0  # message data bytes the proxy read in the clear (either way above)
    tls_error: str | None = None  # a handshake of the proxy's that failed
    # quit, sender-closed, passthrough-closed, garbage-sent, handshake-failed, timeout, shutdown
    # or `error: <what>`
    ended_by: str = "connection-closed"

    @property
    def peer(self) -> tuple[str, int]:
        """Return the sender's (ip, port)."""
        return self.peer_ip, self.peer_port

    @property
    def upstream(self) -> tuple[str, int]:
        """Return the (ip, port) the receiver recorded as this connection's peer."""
        return self.upstream_ip, self.upstream_port


def read_proxy_records(directory: Path) -> Iterator[ProxyRecord]:
    """Yield the proxy records in a receiver's evidence directory, skipping unreadable lines."""
    for data in read_json_lines(directory / PROXY_FILE):
        try:
            yield ProxyRecord.model_validate(data)
        except ValidationError:
            continue
