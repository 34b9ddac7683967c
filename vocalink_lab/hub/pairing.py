"""Who may record: devices' keys, the join code, and the decision on each REGISTER.

A device proves who it is with a credential in REGISTER: its **device key** (handed to it
when it was approved or joined), the **controller token** (trusted, as the operator is),
or the current **join code** (short-lived, shown in the room: it pairs a new device
without a click). A device with none of them is **pending**: it is listed, it may report
its state (so that the operator can tell which phone it is), and it gets no command until
an operator approves it. A REGISTER that claims the id of a paired device without that
device's key is refused, and the device holding the id is left alone.

Loop-only and in memory: the server loads the stored digests at start and persists each
change through ``on_change``; the hub knows no storage.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import PairingRefused
from ..tokens import (
    digest,
    looks_like_join_code,
    new_device_key,
    new_join_code,
    normalize_join_code,
    same_secret,
)

__all__ = [
    "CLOSE_IMPOSTOR",
    "CLOSE_REJECTED",
    "JOIN_CODE_TTL_S",
    "Admission",
    "Pairing",
    "PairingState",
]

#: WebSocket close code: a REGISTER claimed a paired device's id without its key.
CLOSE_IMPOSTOR = 4003
#: WebSocket close code: an operator rejected (unpaired) this device.
CLOSE_REJECTED = 4004
#: How long a join code stays valid, by default.
JOIN_CODE_TTL_S = 900.0
#: Wrong join codes one address may try per `FAILURE_WINDOW_S` (a code has 40 bits).
MAX_JOIN_FAILURES = 10
FAILURE_WINDOW_S = 60.0
#: Addresses whose failures are remembered, and ids remembered as rejected, at most.
_MAX_TRACKED = 4096


class PairingState(enum.StrEnum):
    """How a connected device was let in (``pairing`` in ``/api/clients``)."""

    #: Authentication is off (``--open``): every device is let in.
    OPEN = "open"
    #: It presented the controller token.
    TRUSTED = "trusted"
    #: It presented its device key (or joined with the join code, or was approved).
    PAIRED = "paired"
    #: Waiting for an operator: it gets no command.
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Admission:
    """The decision on one REGISTER that was let in.

    Attributes
    ----------
    state : PairingState
        How it was let in.
    device_key : str or None
        A new key to hand to the device in WELCOME (it joined with the join code).
    """

    state: PairingState
    device_key: str | None = None


class Pairing:
    """Devices' keys (their digests), the join code, and rejected ids.

    Parameters
    ----------
    required : bool
        False when authentication is off: every device is `PairingState.OPEN`.
    controller_token : str or None
        The controller token; a device that presents it is trusted.
    join_code_ttl_s : float
        How long each join code is valid; a new one is made when it runs out.
    clock : callable
        Wall clock in seconds; replaceable in tests.
    on_change : callable, optional
        ``on_change(device_id, digest_or_None)`` after a key is issued or revoked.
    """

    def __init__(self, *, required: bool = False, controller_token: str | None = None,
                 join_code_ttl_s: float = JOIN_CODE_TTL_S,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[str, str | None], None] | None = None) -> None:
        if required and not controller_token:
            raise ValueError("pairing needs the controller token")
        self.required = required
        self._controller = controller_token
        self.join_code_ttl_s = join_code_ttl_s
        self._clock = clock
        self.on_change = on_change
        self._digests: dict[str, str] = {}  # device id → digest of its key
        self._owners: dict[str, str] = {}  # digest → device id
        self._join: tuple[str, float] | None = None
        self._rejected: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict())

    # -- keys ------------------------------------------------------------------------------

    def load(self, digests: Mapping[str, str]) -> None:
        """Take in the stored digests, device id → digest of its key."""
        for device_id, value in digests.items():
            self._set(device_id, value)

    def _set(self, device_id: str, value: str | None) -> None:
        old = self._digests.pop(device_id, None)
        if old is not None:
            self._owners.pop(old, None)
        if value is not None:
            self._digests[device_id] = value
            self._owners[value] = device_id
        if self.on_change is not None:
            self.on_change(device_id, value)

    def is_paired(self, device_id: str) -> bool:
        """Whether ``device_id`` holds a key."""
        return device_id in self._digests

    def paired_count(self) -> int:
        """How many devices hold a key."""
        return len(self._digests)

    def issue_key(self, device_id: str) -> str:
        """Make a new key for ``device_id`` (replacing any), un-reject it; return the key."""
        key = new_device_key()
        self._rejected.pop(device_id, None)
        self._set(device_id, digest(key))
        return key

    def revoke(self, device_id: str) -> None:
        """Forget ``device_id``'s key and refuse it until it pairs again (a bounded memory)."""
        if device_id in self._digests:
            self._set(device_id, None)
        self._rejected[device_id] = None
        self._rejected.move_to_end(device_id)
        while len(self._rejected) > _MAX_TRACKED:
            self._rejected.popitem(last=False)

    def device_of(self, secret: str | None) -> str | None:
        """The device whose key ``secret`` is, or ``None``."""
        if not secret:
            return None
        return self._owners.get(digest(secret))

    def is_controller(self, secret: str | None) -> bool:
        """Whether ``secret`` is the controller token."""
        return same_secret(secret, self._controller)

    # -- the join code ---------------------------------------------------------------------

    def join_code(self) -> tuple[str, float]:
        """The current join code and when it expires (server time); renewed when expired."""
        now = self._clock()
        if self._join is None or self._join[1] <= now:
            self._join = (new_join_code(), now + self.join_code_ttl_s)
        return self._join

    def current_join_code(self) -> str | None:
        """The join code in force, without making one (``None``: none, or it expired)."""
        if self._join is None or self._join[1] <= self._clock():
            return None
        return self._join[0]

    def new_join_code(self) -> tuple[str, float]:
        """Replace the join code now (the old one stops working); return the new one."""
        self._join = None
        return self.join_code()

    def _join_code_valid(self, given: str) -> bool:
        if self._join is None or self._join[1] <= self._clock():
            return False
        return same_secret(normalize_join_code(given), self._join[0])

    def _failed(self, remote: str) -> None:
        now = self._clock()
        times = self._failures.setdefault(remote, collections.deque(maxlen=MAX_JOIN_FAILURES))
        self._failures.move_to_end(remote)
        times.append(now)
        while len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)

    def _locked_out(self, remote: str) -> bool:
        times = self._failures.get(remote)
        return (times is not None and len(times) >= MAX_JOIN_FAILURES
                and self._clock() - times[0] < FAILURE_WINDOW_S)

    # -- the decision ----------------------------------------------------------------------

    def admit(self, device_id: str, token: str | None, join_code: str | None,
              remote: str) -> Admission:
        """Decide on a REGISTER: let it in (how, with a new key or not) or refuse it.

        Parameters
        ----------
        device_id : str
            The id it claims.
        token : str or None
            Its device key or the controller token.
        join_code : str or None
            A join code it was given.
        remote : str
            Its address (wrong join codes are counted per address).

        Returns
        -------
        Admission

        Raises
        ------
        PairingRefused
            With its ``close_code``: `CLOSE_IMPOSTOR` when the id is paired and its key was not
            presented; `CLOSE_REJECTED` when an operator rejected it, or when its address
            tried too many wrong join codes.
        """
        if not self.required:
            return Admission(PairingState.OPEN)
        if self.is_controller(token):
            return Admission(PairingState.TRUSTED)
        owner = self.device_of(token)
        if owner is not None and owner == device_id:
            return Admission(PairingState.PAIRED)
        if device_id in self._digests:
            raise _refusal(CLOSE_IMPOSTOR, f"device id '{device_id}' is paired with another "
                           "device's key; present that device's key (or ask the operator "
                           "to reject the old pairing)")
        if join_code:
            if self._locked_out(remote):
                raise _refusal(CLOSE_REJECTED, "too many wrong join codes from this address; "
                               f"wait {FAILURE_WINDOW_S:.0f} s")
            if looks_like_join_code(join_code) and self._join_code_valid(join_code):
                return Admission(PairingState.PAIRED, device_key=self.issue_key(device_id))
            self._failed(remote)
            raise _refusal(CLOSE_REJECTED, "the join code is wrong or has expired; read the "
                           "current one off the dashboard")
        if device_id in self._rejected:
            raise _refusal(CLOSE_REJECTED, f"device '{device_id}' was rejected by the "
                           "operator; join with a join code to pair it again")
        return Admission(PairingState.PENDING)


def _refusal(close_code: int, message: str) -> PairingRefused:
    return PairingRefused(message, close_code=close_code)
