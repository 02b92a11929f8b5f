"""Nova's ``power-update`` external events (microversion 2.76), several per request.

One call to :meth:`NovaClient.send` is one logical delivery of a batch. Whole-request
failures become exceptions (:class:`ServiceUnavailableError`: try again later;
:class:`ServiceRefusedError`: an operator must fix something); otherwise every event gets
its own :class:`EventResult` from its per-event code (200 delivered; 404, 422 and 400
dropped for good). A 401 renews the token and resends once, as keystoneauth does. A
request Nova finds too large (413) or malformed (400) is split in halves until the
offending event is alone, so one bad event never holds the others back.
"""

from __future__ import annotations

import enum
import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence

import attrs
import httpx

from agent.errors import NotificationError
from agent.nova.config import NovaConfig
from agent.nova.keystone import (
    KeystoneSession,
    ServiceRefusedError,
    ServiceUnavailableError,
    Token,
    error_message,
)

__all__ = [
    "MICROVERSION",
    "POWER_TAGS",
    "EventResult",
    "NovaClient",
    "OutcomeUnknownError",
    "PowerEvent",
    "ServiceRefusedError",
    "ServiceUnavailableError",
    "Verdict",
    "chunk_events",
]

log = logging.getLogger(__name__)

MICROVERSION = "2.76"
POWER_TAGS: Mapping[str, str] = {"power on": "POWER_ON", "power off": "POWER_OFF"}
EVENTS_PATH = "/os-server-external-events"
# What each failed per-event code means (nova-keystone.md, section 2.2).
DROP_REASONS: Mapping[int, str] = {
    404: "Nova does not know the instance (deleted or wrong uuid)",
    422: "the instance has no compute host in Nova (not scheduled, or shelved-offloaded)",
    400: "Nova rejected the event (tag missing)",
}
_BODY_OVERHEAD = len(b'{"events": []}')


class OutcomeUnknownError(ServiceUnavailableError):
    """A POST whose outcome is unknown (timed out, connection lost after sending, a gateway's
    502/504): Nova may still apply its events later, after newer ones."""


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # Nova accepted it (code 200): never send it again
    DROPPED = "dropped"  # Nova will never accept it: keep the reason, do not retry
    RETRY = "retry"  # no answer we can trust: stays in the outbox


@attrs.frozen
class PowerEvent:
    """One outbox row to send: ``key`` is the caller's id for it (the notification id)."""

    key: int
    instance_uuid: str
    power_state: str

    @property
    def tag(self) -> str:
        return POWER_TAGS[self.power_state]

    def wire(self) -> dict[str, str]:
        return {"name": "power-update", "server_uuid": self.instance_uuid, "tag": self.tag}

    def wire_size(self) -> int:
        return len(json.dumps(self.wire()).encode()) + 2  # ", " separator


@attrs.frozen
class EventResult:
    event: PowerEvent
    verdict: Verdict
    reason: str = ""
    # Set when a RETRY comes from a whole-request failure met while sending a split batch.
    error: NotificationError | None = None


def chunk_events(
    events: Sequence[PowerEvent], *, max_events: int, max_body_bytes: int
) -> Iterator[list[PowerEvent]]:
    """Consecutive batches of at most ``max_events`` whose JSON body fits ``max_body_bytes``."""
    batch: list[PowerEvent] = []
    size = _BODY_OVERHEAD
    for event in events:
        event_size = event.wire_size()
        if batch and (len(batch) >= max_events or size + event_size > max_body_bytes):
            yield batch
            batch, size = [], _BODY_OVERHEAD
        batch.append(event)
        size += event_size
    if batch:
        yield batch


class NovaClient:
    """Sends power-update events to Nova through a :class:`KeystoneSession`."""

    def __init__(self, config: NovaConfig, keystone: KeystoneSession) -> None:
        self._config = config
        self._keystone = keystone
        self.requests = 0  # HTTP POSTs made (for tests and metrics)

    async def send(self, events: Sequence[PowerEvent]) -> list[EventResult]:
        """Deliver ``events`` (already chunked to fit one request); results in the same order."""
        if not events:
            return []
        response = await self._post(events)
        status = response.status_code
        if status in (200, 207):
            return self._per_event(events, response)
        detail = error_message(response)
        if status in (400, 413) and len(events) > 1:
            # One event may be at fault; split so the others still get through.
            middle = len(events) // 2
            log.info("Nova answered %d to %d events; sending them in halves", status, len(events))
            results = [
                *await self._send_part(events[:middle]),
                *await self._send_part(events[middle:]),
            ]
            first_error = results[0].error
            if first_error is not None and all(result.error is not None for result in results):
                raise first_error  # nothing got through: a whole-request failure after all
            return results
        if status == 413:
            return [
                EventResult(events[0], Verdict.DROPPED, f"larger than Nova's body limit: {detail}")
            ]
        if status == 400 and detail.startswith("Invalid input"):
            return [EventResult(events[0], Verdict.DROPPED, f"Nova rejected the event: {detail}")]
        if status == 404 and "No instances found" in detail:
            # Nova 20.x (Train) answers 404 to the whole request when every event failed.
            reason = "Nova does not know the instance (whole-request 404)"
            return [EventResult(event, Verdict.DROPPED, reason) for event in events]
        raise self._request_failure(status, detail, response)

    async def _send_part(self, events: Sequence[PowerEvent]) -> list[EventResult]:
        """Like :meth:`send`, but a failure of this part must not hide what the other part
        already delivered: it becomes RETRY results carrying the error."""
        try:
            return await self.send(events)
        except (ServiceUnavailableError, ServiceRefusedError) as exc:
            return [EventResult(event, Verdict.RETRY, str(exc), exc) for event in events]

    async def _post(self, events: Sequence[PowerEvent]) -> httpx.Response:
        body = {"events": [event.wire() for event in events]}
        token = await self._keystone.token()
        response = await self._post_with(token, body)
        if response.status_code == 401:
            # The token was revoked or expired early: renew once and resend (keystoneauth).
            self._keystone.invalidate(token)
            token = await self._keystone.token()
            response = await self._post_with(token, body)
            if response.status_code == 401:
                raise ServiceRefusedError(
                    "Nova rejected a freshly issued Keystone token (401); check that Nova's "
                    "keystone_authtoken settings trust this Keystone",
                    kind="nova-token",
                )
        return response

    async def _post_with(self, token: Token, body: Mapping[str, object]) -> httpx.Response:
        url = (await self._keystone.compute_endpoint(token)) + EVENTS_PATH
        headers = {
            "X-Auth-Token": token.value,
            "Accept": "application/json",
            "OpenStack-API-Version": f"compute {MICROVERSION}",
            "X-OpenStack-Nova-API-Version": MICROVERSION,
            "X-OpenStack-Request-ID": f"req-{uuid.uuid4()}",
        }
        self.requests += 1
        try:
            return await self._keystone.request("Nova", "POST", url, json=body, headers=headers)
        except ServiceUnavailableError as exc:
            if exc.maybe_received:
                raise OutcomeUnknownError(str(exc), maybe_received=True) from exc
            raise

    def _per_event(
        self, events: Sequence[PowerEvent], response: httpx.Response
    ) -> list[EventResult]:
        try:
            codes = _event_codes(events, response.json()["events"])
        except (ValueError, KeyError, TypeError) as exc:
            # Some may have been delivered; resending a power-update is harmless, losing it is not.
            raise ServiceRefusedError(
                f"Nova answered {response.status_code} with an unreadable body ({exc}); "
                "the events stay queued",
                kind="nova-response",
            ) from None
        results = []
        for event, code in zip(events, codes, strict=True):
            if code == 200:
                results.append(EventResult(event, Verdict.DELIVERED))
            elif code in DROP_REASONS:
                results.append(
                    EventResult(event, Verdict.DROPPED, f"{DROP_REASONS[code]} (code {code})")
                )
            else:
                results.append(
                    EventResult(event, Verdict.RETRY, f"unexpected per-event code {code}")
                )
        return results

    def _request_failure(self, status: int, detail: str, response: httpx.Response) -> Exception:
        where = str(response.request.url)
        if status in (502, 504):
            # A gateway gave up on Nova, which may still be working on the request.
            return OutcomeUnknownError(
                f"Nova at {where} answered {status}: {detail}", maybe_received=True
            )
        if status >= 500 or status == 429:
            return ServiceUnavailableError(f"Nova at {where} answered {status}: {detail}")
        if status == 403:
            return ServiceRefusedError(
                "Nova refused os-server-external-events (403): the Keystone user needs the "
                "'service' role (or 'admin' on older Nova) in the project its token is scoped to",
                kind="forbidden",
            )
        if status == 406:
            return ServiceRefusedError(
                f"Nova at {where} does not support microversion {MICROVERSION} (power-update "
                f"events need Nova 20.0.0 Train or newer): {detail}",
                kind="microversion",
            )
        if 300 <= status < 400:
            location = response.headers.get("Location", "?")
            return ServiceRefusedError(
                f"Nova at {where} redirects to {location}; set [nova] endpoint_override to the "
                "final v2.1 URL",
                kind="redirect",
            )
        return ServiceRefusedError(
            f"Nova at {where} answered {status}: {detail}", kind=f"nova-{status}"
        )


def _event_codes(events: Sequence[PowerEvent], answered: object) -> list[int]:
    if not isinstance(answered, list) or len(answered) != len(events):
        raise ValueError(f"{len(events)} events sent, a different number answered")
    return [_event_code(event, entry) for event, entry in zip(events, answered, strict=True)]


def _event_code(sent: PowerEvent, entry: object) -> int:
    if not isinstance(entry, Mapping):
        raise TypeError("an event is not an object")
    if entry.get("server_uuid") != sent.instance_uuid:
        raise ValueError("events answered out of order")
    code = entry["code"]
    if isinstance(code, str) and code.isdigit():  # the api-ref once called it a string
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError("an event code is not an integer")
    return code
