"""XMPP stanza bytes of a SPADE message: what the message weighs on the wire, not only its body.

SPADE sends a message to an agent of another process as a slixmpp ``<message>`` stanza built by
``Message.prepare`` (addresses, type, id, the body XML-escaped, the metadata as a XEP-0004 data
form); agents of one process reach each other without serializing anything (SPADE's
in-process dispatch), so the accounting computes the stanza each message *would* be, the same
either way. A stanza's size is its fixed part (everything but the body text, which depends only
on the addresses and the metadata) plus the escaped body: the fixed part is serialized once per
(sender, receiver, metadata) and kept, which makes sizing a message cheap enough for every step.
"""

from __future__ import annotations

from typing import Mapping

from slixmpp import ClientXMPP
from slixmpp.xmlstream.tostring import escape
from spade.message import Message

_PLACEHOLDER = "\x00"


class StanzaSizer:
    """Stanza bytes of the messages one agent sends (UTF-8, as slixmpp serializes the stanza)."""

    def __init__(self) -> None:
        self._client = ClientXMPP("sizer@localhost", "unused")  # builds stanzas, never connects
        self._fixed: dict[tuple, int] = {}

    def size(self, sender: str, to: str, body: str, metadata: Mapping[str, str]) -> int:
        if not body:
            return self.serialized(sender, to, body, metadata)  # no body: no <body> element at all
        key = (sender, to, tuple(sorted(metadata.items())))
        fixed = self._fixed.get(key)
        if fixed is None:
            fixed = self._fixed[key] = self.serialized(sender, to, _PLACEHOLDER, metadata) - 1
        return fixed + len(escape(body).encode())

    def serialized(self, sender: str, to: str, body: str, metadata: Mapping[str, str]) -> int:
        """The stanza built and serialized in full (what `size` must agree with)."""
        message = Message(to=to, sender=sender, body=body, metadata=dict(metadata))
        return len(str(message.prepare(self._client)).encode())
