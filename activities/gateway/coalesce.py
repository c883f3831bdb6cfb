"""Many executions' describes of single resources, one AWS call.

Concurrent `describe_instances(InstanceIds=[one])`, `describe_volumes(VolumeIds=[one])`, …
made within a short window become one call that filters on all their ids (up to
the API's limit on filter values); each caller gets the answer it would have had
alone, or AWS's own NotFound error for its id. A batch AWS refuses (other than by
throttling or a fault of its own) is asked again id by id, so a refusal that concerns
one resource answers only its caller.

A batch stays open while it waits for its token of AWS's bucket (`pay`): the more
the account's budget is spent, the more reads share each call, which is when it
matters most.

Read-your-writes: a read joins only a batch that has not been sent yet, or takes an
answer `Freshness` vouches for: at most `max_age` old, from a call sent after the last
mutation of that resource through this gateway ended, and none of it under way. An
execution that just mutated its resource therefore never reads an older state than
its own write; someone else's change can be seen up to `max_age` late, and only by the
steps after validation (`may_remember`). Reads outside an activity always ask AWS.

Validation (`validating`) takes an answer only from a call sent after its execution began
(or, validating again after a wait, after the wait ended) and at most `validate_age` old:
it sees the resource no older than the moment the change was asked for, as if it had
validated then. Its reads also carry the resources the plan's next items of the same kind
will validate (`Validating.ahead`, chosen by the plan), so one call answers the
validations of many executions that a CPU-bound worker runs a fraction of a second apart.

Read-ahead: a batch also asks for up to `ahead` ids asked in the last `horizon` seconds,
the latest first, at no extra request: an execution reads its resource at validation,
check-before-act and each verify poll, so the next read of most of them finds an
answer younger than `max_age` and makes no call.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from temporalio import activity

from activities.gateway.buckets import THROTTLE_CODES


@dataclass(frozen=True)
class ReadShape:
    """How one single-resource describe coalesces."""

    operation: str
    """boto3 method name."""
    id_param: str
    """The parameter a single-resource call names its id in."""
    filter_name: str
    """The filter that selects many ids in one call."""
    result_key: str
    """The list in the answer that holds the resources."""
    id_field: str
    """The id inside one resource of that list."""
    not_found: str
    """AWS's error code when the one id does not exist."""
    max_ids: int = 200
    plural: bool = True
    """The id parameter is a list (EC2) rather than one string (RDS)."""
    nested: str | None = None
    """DescribeInstances: resources sit inside reservations under this key."""
    many: bool = False
    """Several items per id (volume modifications): the caller gets all of its own, or none."""


READS: dict[tuple[str, str], ReadShape] = {shape_key: shape for shape_key, shape in (
    (("ec2", "describe_instances"), ReadShape("describe_instances", "InstanceIds", "instance-id", "Reservations",
                                              "InstanceId", "InvalidInstanceID.NotFound", nested="Instances")),
    (("ec2", "describe_volumes"), ReadShape("describe_volumes", "VolumeIds", "volume-id", "Volumes", "VolumeId",
                                            "InvalidVolume.NotFound")),
    (("ec2", "describe_snapshots"), ReadShape("describe_snapshots", "SnapshotIds", "snapshot-id", "Snapshots",
                                              "SnapshotId", "InvalidSnapshot.NotFound")),
    (("ec2", "describe_addresses"), ReadShape("describe_addresses", "AllocationIds", "allocation-id", "Addresses",
                                              "AllocationId", "InvalidAllocationID.NotFound")),
    (("ec2", "describe_volumes_modifications"), ReadShape(
        "describe_volumes_modifications", "VolumeIds", "volume-id", "VolumesModifications", "VolumeId",
        "InvalidVolumeModification.NotFound", many=True)),
    (("rds", "describe_db_instances"), ReadShape("describe_db_instances", "DBInstanceIdentifier", "db-instance-id",
                                                 "DBInstances", "DBInstanceIdentifier", "DBInstanceNotFound",
                                                 max_ids=100, plural=False)),
)}


#: An id the plan's next items will validate is not read ahead again within this many seconds of
#: its last answer: the validations that answer can serve come that soon; a later one, validating
#: again after its approval say, needs an answer sent after that, and finds it read ahead anew.
LATELY = 1.0

#: A batch waits its patient window only if another execution used the same gatherer within this
#: many seconds: the steps of a plan's executions come seconds apart on a busy worker.
COMPANY_SECONDS = 3.0

#: Mutations whose answer names a resource its execution reads next: (the read, the answer's id
#: field). The id is read ahead by the next call of that read, so the read that follows (a
#: backup's snapshot, which apply checks is complete before it deletes the volume) usually
#: finds a fresh answer instead of a call of its own (race N=100: ~60 DescribeSnapshots).
FOLLOW_UPS: dict[tuple[str, str], tuple[str, str]] = {
    ("ec2", "create_snapshot"): ("describe_snapshots", "SnapshotId"),
}


def single_id(shape: ReadShape, kwargs: dict[str, Any]) -> str | None:
    """The one id of a call that asks for exactly one resource and nothing else, or None."""
    if set(kwargs) != {shape.id_param}:
        return None
    value = kwargs[shape.id_param]
    if shape.plural:
        return str(value[0]) if isinstance(value, list) and len(value) == 1 else None
    return value if isinstance(value, str) else None


class Freshness:
    """Which remembered answers a read may take (see the module's read-your-writes), for one gateway.

    Mutations are counted per id named in their arguments while they run, and their end time
    kept: an answer from a call sent before that end (or during a mutation) is never given.
    """

    def __init__(self, max_age: float, horizon: float, clock: Callable[[], float] = time.monotonic,
                 ahead: int = 200, validate_age: float = 0.0, wall: Callable[[], float] = time.time) -> None:
        self.max_age = max_age
        self.horizon = horizon
        self.ahead = ahead
        """At most this many ids read ahead per call, the latest read first: each costs the worker
        the parsing of its item (about 0.5 ms an instance, 0.2 ms a volume)."""
        self.validate_age = validate_age
        """How old an answer validation may take (0: validation always asks AWS)."""
        self.clock = clock
        self.wall = wall
        """Seconds since the epoch: a validation's `since` is a time the Temporal server gave."""
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._ended: dict[str, float] = {}

    @property
    def keep(self) -> float:
        """How long an answer is remembered: the longer of the two ages."""
        return max(self.max_age, self.validate_age)

    def usable(self, resource_id: str, sent_at: float, now: float, sent_wall: float | None = None) -> bool:
        checking = validation()
        if checking is not None:
            if (checking.since is None or sent_wall is None or sent_wall < checking.since
                    or now - sent_at > self.validate_age):
                return False
        elif now - sent_at > self.max_age or not may_remember():
            return False
        with self._lock:
            return not self._running.get(resource_id) and sent_at > self._ended.get(resource_id, float("-inf"))

    @contextlib.contextmanager
    def mutating(self, ids: list[str]) -> Iterator[None]:
        """Around a mutation naming `ids`: no remembered answer of them is given until one sent after it."""
        with self._lock:
            for i in ids:
                self._running[i] = self._running.get(i, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                now = self.clock()
                for i in ids:
                    self._running[i] -= 1
                    if not self._running[i]:
                        del self._running[i]
                    self._ended[i] = now
                if len(self._ended) > 10_000:  # ends older than an answer is kept outdate nothing still given
                    self._ended = {k: t for k, t in self._ended.items() if now - t <= self.keep}


#: The only activities whose reads may take a remembered answer: an execution's steps after its
#: validation, each reading the resource its own execution holds the lease of (backup, apply's
#: check-before-act, verify polls, revert, cleanup). Every other read asks AWS: validation trusts
#: the live resource only (its drift check against a dry run, its refusals), and a savings
#: measurement, a scan or an import reads what others may have changed a moment ago.
MAY_REUSE = frozenset({"backup", "apply", "verify", "revert", "cleanup"})


@dataclass(frozen=True)
class Validating:
    """What a validation's reads may take and carry (see the module's docstring)."""

    own_id: str
    """Its own resource: only reads of it carry `ahead`."""
    ahead: tuple[str, ...] = ()
    """Resources the plan's next items of the same kind, account and region will validate."""
    since: float | None = None
    """Epoch seconds: no answer from a call sent earlier (None: always ask AWS)."""


_validating = threading.local()


@contextlib.contextmanager
def validating(own_id: str, ahead: list[str] | tuple[str, ...] = (), since: float | None = None) -> Iterator[None]:
    """Around a validation's reads, in the thread that makes them (the validate activity's)."""
    before = getattr(_validating, "current", None)
    _validating.current = Validating(own_id, tuple(ahead), since)
    try:
        yield
    finally:
        _validating.current = before


def validation() -> Validating | None:
    """The validation this thread's reads belong to, if any."""
    return getattr(_validating, "current", None)


def may_remember() -> bool:
    """Whether this thread's read may take a remembered answer: only the steps after validation
    (`MAY_REUSE`), never a read outside an activity."""
    return activity.in_activity() and activity.info().activity_type in MAY_REUSE


def named_ids(kwargs: dict[str, Any]) -> list[str]:
    """Every string a call names (ids among them): what a mutation may change."""
    found: list[str] = []
    for value in kwargs.values():
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            found += [v for v in value if isinstance(v, str)]
    return found


Payment = Callable[[], contextlib.AbstractContextManager[Any]]
"""Blocks until the batch's AWS request may be sent (a token of its bucket), for the send."""


@dataclass
class _Batch:
    ids: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    found: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    sent: bool = False


#: How often a waiting caller wakes: a cancelled activity's exception is raised in its thread
#: (temporalio's thread raiser), which a wait without a timeout would never let in.
_WAKE_SECONDS = 0.1


def _start(thread: threading.Thread) -> None:
    """Start a thread from an activity's thread without a cancellation landing in between.

    temporalio cancels a thread-pool activity by raising in its thread id, and CPython gives a
    thread that has not begun to run the id of the thread starting it (3.11: its state is
    created with the creator's id until it runs): a cancellation then kills the new thread
    before it runs and leaves its starter waiting in `start()` for ever. Shielded, the
    cancellation is raised once `start()` has returned.
    """
    if activity.in_activity():
        with activity.shield_thread_cancel_exception():
            thread.start()
    else:
        thread.start()


class _Gatherer(ABC):
    """Gathers single-id calls for `window` seconds, then sends them all (`_send`) from a thread
    of its own; every caller waits for that answer. A batch once sent takes no one more.

    The send is nobody's caller: a caller's activity can be cancelled at any point (its
    workflow evicted from the cache, the execution cancelled, a worker shutting down), and a
    batch sent by its first caller was left open and never sent when that caller was
    cancelled in its window, so every later read of the same operation joined it and
    waited for ever. A caller that leaves before the batch is sent takes its id out: a stop
    nobody waits for any more is not sent.
    """

    def __init__(self, call: Callable[..., Any], window: float, max_ids: int,
                 on_batch: Callable[[int], None] | None = None, pay: Payment | None = None,
                 patient_window: float = 0.0) -> None:
        self._call = call
        self._window = window
        self._max_ids = max_ids
        self._on_batch = on_batch
        self._pay = pay or contextlib.nullcontext
        self._lock = threading.Lock()
        self._open: _Batch | None = None
        self._patient = max(window, patient_window)
        """How long a batch stays open when others are about (`_in_company`)."""
        self._callers: dict[object, float] = {}
        """caller (its execution, or its thread outside an activity) -> when it last called."""

    def _in_company(self) -> bool:
        """Whether another caller (another execution) used this gatherer within `COMPANY_SECONDS`;
        notes this caller. Only then is the patient window worth waiting: a lone execution (the
        CLI's, a test's, a small plan's) has nobody to share a call with and pays it for nothing."""
        me: object = activity.info().workflow_id if activity.in_activity() else threading.get_ident()
        now = time.monotonic()
        with self._lock:
            self._callers = {c: t for c, t in self._callers.items() if now - t <= COMPANY_SECONDS}
            company = any(c != me for c in self._callers)
            self._callers[me] = now
        return company

    def _patient_window(self, may_wait: bool = True) -> float | None:
        """The patient window when others are about and this caller `may_wait`, else None (the
        gatherer's own window). Every caller counts as company for the others."""
        company = self._in_company()
        return self._patient if may_wait and company and self._patient > self._window else None

    def _gathered(self, resource_id: str, window: float | None = None) -> _Batch:
        """The answered batch this id went out in; a batch it opens stays open `window` seconds
        (default: the gatherer's own).

        A cancellation can land between any two bytecodes of this method: whatever it
        interrupts, the id leaves a batch not yet sent, and a batch once opened is sent.
        """
        batch: _Batch | None = None
        flusher: threading.Thread | None = None
        try:
            with self._lock:
                batch = self._open
                if batch is None or batch.sent or len(batch.ids) >= self._max_ids:
                    batch = self._open = _Batch()
                    flusher = threading.Thread(target=self._flush, args=(batch, window),
                                               name=f"gather-{type(self).__name__}", daemon=True)
                batch.ids.append(resource_id)
            if flusher is not None:
                _start(flusher)
            while not batch.done.wait(_WAKE_SECONDS):
                pass
        except BaseException:  # cancelled: a batch not yet sent goes without this id
            if batch is not None:
                with self._lock:
                    if not batch.sent and resource_id in batch.ids:
                        batch.ids.remove(resource_id)
            if flusher is not None and flusher.ident is None:
                _start(flusher)  # others may have joined the batch this call opened
            raise
        return batch

    def _flush(self, batch: _Batch, window: float | None = None) -> None:
        try:
            time.sleep(self._window if window is None else window)
            with self._pay():  # others may still join while the token is awaited
                with self._lock:
                    batch.sent = True  # from here on, later callers form the next batch
                    if self._open is batch:
                        self._open = None
                    ids = list(dict.fromkeys(batch.ids))
                if ids:
                    if self._on_batch is not None:
                        self._on_batch(len(ids))
                    self._send(batch, ids)
        except BaseException as exc:  # every waiter gets the batch's own error
            batch.error = exc
        finally:
            with self._lock:
                batch.sent = True
                if self._open is batch:
                    self._open = None
            batch.done.set()

    @abstractmethod
    def _send(self, batch: _Batch, ids: list[str]) -> None:
        """Make the batch's call(s) and put each id's answer in `batch.found`."""


class ReadCoalescer(_Gatherer):
    """One per (client, operation): gathers single-id reads for `window` seconds, then makes one call."""

    def __init__(self, shape: ReadShape, call: Callable[..., Any], window: float,
                 on_batch: Callable[[int], None] | None = None, pay: Payment | None = None,
                 fresh: Freshness | None = None, on_remembered: Callable[[], None] | None = None,
                 patient_window: float = 0.0) -> None:
        # The patient window: how long a batch opened by a step after validation (`may_remember`)
        # stays open when other executions are about. Backup, apply's check-before-act and verify
        # polls wait seconds for a workflow task anyway, so a fraction of one more lets the reads
        # of the executions a CPU-bound worker runs apart share a call. A validation's batch keeps
        # the short window: it holds its workflow task meanwhile.
        super().__init__(call, window, shape.max_ids, on_batch, pay, patient_window)
        self.shape = shape
        self._fresh = fresh
        self._on_remembered = on_remembered
        self._hot: dict[str, float] = {}
        """id -> when it was last asked: read ahead by every batch until `horizon` has passed."""
        self._seen: dict[str, tuple[float, Any, float]] = {}
        """id -> (when the call that answered it was sent, its item or items, None: not found;
        the same moment in epoch seconds)."""
        self._expected: dict[str, float] = {}
        """id -> until when it is read ahead first: a plan's next item will validate it (in plan order)."""
        self._riding: dict[str, tuple[_Batch, float, float]] = {}
        """id -> the call under way that reads it ahead, and when that call was sent (monotonic, epoch):
        a read of it waits for that answer rather than asking again (a plan's executions validate
        at the same moment)."""
        self._reading: dict[str, int] = {}
        """id -> how many reads of it wait for a batch: not read ahead, its own call answers it."""
        self._shunned: dict[str, float] = {}
        """id -> until when it is not read ahead: it rode along in a call AWS refused."""
        self.remembered = 0
        """Reads answered from `_seen`, without a call."""

    def read(self, resource_id: str) -> dict[str, Any]:
        fresh = self._fresh
        if fresh is not None:
            now = fresh.clock()
            checking = validation()
            with self._lock:
                self._hot[resource_id] = now
                seen = self._seen.get(resource_id)
                if checking is not None and checking.own_id == resource_id and fresh.validate_age > 0:
                    for upcoming in checking.ahead:
                        if upcoming != resource_id:
                            self._expected[upcoming] = now + fresh.horizon
                riding = self._riding.get(resource_id)
            usable = seen is not None and fresh.usable(resource_id, seen[0], now, seen[2])
            if not usable and riding is not None and fresh.usable(resource_id, riding[1], now, riding[2]):
                while not riding[0].done.wait(_WAKE_SECONDS):  # woken to let a cancellation in
                    pass
                with self._lock:
                    seen = self._seen.get(resource_id)
                usable = seen is not None and fresh.usable(resource_id, seen[0], fresh.clock(), seen[2])
            if usable:
                assert seen is not None
                with self._lock:
                    self.remembered += 1
                if self._on_remembered is not None:
                    self._on_remembered()
                return self._answer(copy.deepcopy(seen[1]), resource_id)  # a caller may change its own
        with self._lock:
            self._reading[resource_id] = self._reading.get(resource_id, 0) + 1
        try:
            batch = self._gathered(resource_id, self._patient_window(may_remember()))
        finally:
            with self._lock:
                self._reading[resource_id] -= 1
                if not self._reading[resource_id]:
                    del self._reading[resource_id]
        if batch.error is not None:
            raise batch.error
        return self._answer(batch.found.get(resource_id), resource_id)

    def expect(self, resource_id: str) -> None:
        """Read `resource_id` ahead with the next call of this operation (`FOLLOW_UPS`)."""
        fresh = self._fresh
        if fresh is not None:
            with self._lock:
                self._expected[resource_id] = fresh.clock() + fresh.horizon

    def _ahead(self, ids: list[str]) -> tuple[list[str], float, float]:
        """`ids` and the ids read ahead with them: first those the plan's next items will validate
        (unless answered lately), then the latest read; when the call is sent (monotonic, epoch)."""
        fresh = self._fresh
        if fresh is None:
            return ids, 0.0, 0.0
        now, wall = fresh.clock(), fresh.wall()
        with self._lock:
            self._hot = {i: t for i, t in self._hot.items() if now - t <= fresh.horizon}
            self._seen = {i: seen for i, seen in self._seen.items() if now - seen[0] <= fresh.keep}
            self._shunned = {i: until for i, until in self._shunned.items() if until > now}
            self._expected = {i: until for i, until in self._expected.items() if until > now}
            asked = set(ids) | set(self._shunned) | set(self._reading) | set(self._riding)
            room = max(min(2 * fresh.ahead, self.shape.max_ids - len(ids)), 0)
            lately = min(LATELY, fresh.validate_age)  # an older answer may predate the next ones' start
            upcoming = [i for i in self._expected
                        if i not in asked and now - self._seen.get(i, (float("-inf"),))[0] > lately][:fresh.ahead]
            for i in upcoming:
                del self._expected[i]  # read ahead once; a later validation's plan names it again
            taken = asked | set(upcoming)
            latest = sorted(self._hot.items(), key=lambda hot: -hot[1])
            extra = [*upcoming, *[i for i, _ in latest if i not in taken][:fresh.ahead]][:room]
        return [*ids, *extra], now, wall

    def _send(self, batch: _Batch, ids: list[str]) -> None:
        """One call for every id asked and up to `ahead` read ahead. A batch AWS refuses for what
        may be one id's sake (an access denied on one resource, say) is asked again without its
        riders (which of them AWS refused is not said: none is read ahead for the horizon), then id
        by id, so that error answers only its own caller and never fails a neighbour. Throttling
        and AWS's own faults are the whole call's: those go to every caller, as each would have
        met them alone (the activity retries)."""
        asked = ids
        ids, sent_at, sent_wall = self._ahead(asked)
        riders = ids[len(asked):]
        if riders:
            with self._lock:
                for i in riders:
                    self._riding[i] = (batch, sent_at, sent_wall)
        try:
            self._answered(batch, asked, ids, sent_at, sent_wall)
        finally:
            if riders:
                with self._lock:
                    for i in riders:
                        if self._riding.get(i, (None,))[0] is batch:
                            del self._riding[i]

    def _answered(self, batch: _Batch, asked: list[str], ids: list[str], sent_at: float, sent_wall: float) -> None:
        try:
            self._read(batch, ids)
        except ClientError as exc:
            if len(ids) == 1 or not _may_be_one_ids(exc):
                if len(ids) == 1 and _may_be_one_ids(exc) and self._fresh is not None:
                    self._shun(ids)  # refused for its own sake: not read ahead in others' batches
                raise
            batch.found.clear()
            if self._fresh is not None:
                sent_at, sent_wall = self._fresh.clock(), self._fresh.wall()
            if len(ids) > len(asked):  # the callers together first, then id by id
                self._shun(ids[len(asked):])
                ids = asked
                self._read_or_split(batch, ids)
            else:
                self._split(batch, ids)
        if self._fresh is not None:
            refused = [i for i in ids if isinstance(batch.found.get(i), BaseException)]
            if refused:
                self._shun(refused)
            with self._lock:
                for i in ids:
                    if i not in refused:
                        self._seen[i] = (sent_at, batch.found.get(i), sent_wall)

    def _shun(self, riders: list[str]) -> None:
        assert self._fresh is not None
        with self._lock:
            until = self._fresh.clock() + self._fresh.horizon
            for rider in riders:
                self._hot.pop(rider, None)
                self._shunned[rider] = until

    def _read_or_split(self, batch: _Batch, ids: list[str]) -> None:
        try:
            self._read(batch, ids)
        except ClientError as exc:
            if len(ids) == 1 or not _may_be_one_ids(exc):
                raise
            batch.found.clear()
            self._split(batch, ids)

    def _split(self, batch: _Batch, ids: list[str]) -> None:
        for one in ids:
            if self._on_batch is not None:
                self._on_batch(1)
            try:
                self._read(batch, [one])
            except ClientError as alone:
                batch.found[one] = alone

    def _read(self, batch: _Batch, ids: list[str]) -> None:
        kwargs: dict[str, Any] = {"Filters": [{"Name": self.shape.filter_name, "Values": ids}]}
        while True:
            page = self._call(**kwargs)
            for item in page.get(self.shape.result_key, []):
                self._index(batch, item)
            token = page.get("NextToken") or page.get("Marker")
            if not token:
                break
            kwargs["NextToken" if "NextToken" in page else "Marker"] = token

    def _index(self, batch: _Batch, item: dict[str, Any]) -> None:
        if self.shape.many:
            batch.found.setdefault(str(item[self.shape.id_field]), []).append(item)
            return
        if self.shape.nested is None:
            batch.found[str(item[self.shape.id_field])] = item
            return
        for inner in item.get(self.shape.nested, []):  # one reservation per instance in the answer
            batch.found[str(inner[self.shape.id_field])] = {**item, self.shape.nested: [inner]}

    def _answer(self, item: Any, resource_id: str) -> dict[str, Any]:
        if isinstance(item, BaseException):  # its own error, from the batch asked again id by id
            raise item
        if self.shape.many:  # none is an empty answer, as AWS gives for a volume never modified
            return {self.shape.result_key: list(item or [])}
        if item is None:
            raise ClientError({"Error": {"Code": self.shape.not_found,
                                         "Message": f"The resource '{resource_id}' does not exist"}},
                              operation_name(self.shape.operation))
        return {self.shape.result_key: [item]}


def _may_be_one_ids(exc: ClientError) -> bool:
    """A refusal that may concern only some of the batch's ids: not throttling, not AWS's fault."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
    return exc.response.get("Error", {}).get("Code") not in THROTTLE_CODES and status < 500


def operation_name(method: str) -> str:
    """boto3's method name as AWS's operation name."""
    return "".join(part.capitalize() for part in method.split("_")).replace("Db", "DB")


@dataclass(frozen=True)
class MutationShape:
    """A mutation AWS takes for many ids at once."""

    operation: str
    id_param: str
    result_key: str
    id_field: str
    max_ids: int = 50
    window: float = 0.0
    """At least this long a batch stays open: a mutation is asked once per execution, so
    executions arrive far apart, and its bucket (5/s) is the scarcest."""


#: StartInstances is not batched: starts come from reverts and rightsizes, where an instance's
#: InsufficientInstanceCapacity must answer its own execution on the first try (a split batch
#: would ask again at once, and a transient refusal would look like success to one and not to
#: the other); its bucket's 2/s is spent one start at a time.
MUTATIONS: dict[tuple[str, str], MutationShape] = {
    ("ec2", "stop_instances"): MutationShape("stop_instances", "InstanceIds", "StoppingInstances", "InstanceId",
                                             window=0.25),
}


class MutationBatcher(_Gatherer):
    """Concurrent single-id mutations, one call; a batch AWS refuses is split, so an id's error
    answers only its own caller and never fails a neighbour. Idempotency stays per resource:
    each action still checks its resource before it asks (check-before-act)."""

    def __init__(self, shape: MutationShape, call: Callable[..., Any], window: float,
                 on_batch: Callable[[int], None] | None = None, pay: Payment | None = None,
                 patient_window: float = 0.0) -> None:
        super().__init__(call, window, shape.max_ids, on_batch, pay, patient_window)
        self.shape = shape

    def mutate(self, resource_id: str) -> dict[str, Any]:
        batch = self._gathered(resource_id, self._patient_window())
        answer = batch.found.get(resource_id)
        if isinstance(answer, BaseException):
            raise answer
        if answer is None:
            raise batch.error or RuntimeError(f"{self.shape.operation} gave no answer for {resource_id}")
        return {self.shape.result_key: [answer]}

    def _send(self, batch: _Batch, ids: list[str]) -> None:
        try:
            answer = self._call(**{self.shape.id_param: ids})
        except ClientError as exc:
            if len(ids) == 1:
                batch.found[ids[0]] = exc
                return
            for one in ids:  # split: each id answers for itself
                if self._on_batch is not None:
                    self._on_batch(1)
                self._send(batch, [one])
            return
        for item in answer.get(self.shape.result_key, []):
            batch.found[str(item[self.shape.id_field])] = item


# ---- lookups by tag ------------------------------------------------------------------------

#: Describes that find resources by tags (a backup by its execution's tag, a restored volume).
TAG_LOOKUPS: dict[tuple[str, str], str] = {
    ("ec2", "describe_snapshots"): "Snapshots",
    ("ec2", "describe_volumes"): "Volumes",
    ("ec2", "describe_addresses"): "Addresses",
}


def tag_lookup_key(kwargs: dict[str, Any]) -> tuple[str, ...] | None:
    """The tag keys of a call that asks only by tags, one value each (plus `OwnerIds=["self"]`),
    or None: only such calls can be answered exactly from a wider call, client-side."""
    if not set(kwargs) <= {"Filters", "OwnerIds"} or kwargs.get("OwnerIds", ["self"]) != ["self"]:
        return None
    filters = kwargs.get("Filters")
    if not isinstance(filters, list) or not filters:
        return None
    keys = []
    for f in filters:
        name, values = f.get("Name", ""), f.get("Values")
        if not name.startswith("tag:") or not isinstance(values, list) or len(values) != 1 or set(f) != {"Name", "Values"}:
            return None
        keys.append(name)
    return (*sorted(keys), "owner:self" if "OwnerIds" in kwargs else "")


class TagLookup(_Gatherer):
    """Concurrent lookups by the same tag keys: one call whose filters take every caller's values
    (AWS: values OR, names AND), each caller then given exactly the items carrying all of its
    own tags. One per (client, operation, tag keys)."""

    def __init__(self, result_key: str, owner_self: bool, call: Callable[..., Any], window: float,
                 on_batch: Callable[[int], None] | None = None, pay: Payment | None = None) -> None:
        super().__init__(call, window, 200, on_batch, pay)
        self._result_key = result_key
        self._owner_self = owner_self
        self._asked: dict[str, tuple[dict[str, str], int]] = {}
        """What each waiting caller asks for, and how many wait for it (forgotten at none)."""
        self._asked_lock = threading.Lock()

    def lookup(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        wanted = {f["Name"][4:]: str(f["Values"][0]) for f in kwargs["Filters"]}
        key = repr(sorted(wanted.items()))
        with self._asked_lock:
            self._asked[key] = (wanted, self._asked.get(key, (wanted, 0))[1] + 1)
        try:
            batch = self._gathered(key)
        finally:
            with self._asked_lock:
                left = self._asked[key][1] - 1
                if left:
                    self._asked[key] = (wanted, left)
                else:
                    del self._asked[key]
        if batch.error is not None:
            raise batch.error
        items = batch.found.get("items", [])
        return {self._result_key: [i for i in items if _carries(i, wanted)]}

    def _send(self, batch: _Batch, ids: list[str]) -> None:
        with self._asked_lock:  # a caller cancelled since the batch closed asks for nothing
            asked = [self._asked[k][0] for k in ids if k in self._asked]
        values: dict[str, list[str]] = {}
        for wanted in asked:
            for tag, value in wanted.items():
                values.setdefault(tag, [])
                if value not in values[tag]:
                    values[tag].append(value)
        kwargs: dict[str, Any] = {"Filters": [{"Name": f"tag:{t}", "Values": v} for t, v in sorted(values.items())]}
        if self._owner_self:
            kwargs["OwnerIds"] = ["self"]
        found: list[dict[str, Any]] = []
        while True:
            page = self._call(**kwargs)
            found.extend(page.get(self._result_key, []))
            token = page.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        batch.found["items"] = found


def _carries(item: dict[str, Any], wanted: dict[str, str]) -> bool:
    tags = {t["Key"]: t["Value"] for t in item.get("Tags") or []}
    return all(tags.get(k) == v for k, v in wanted.items())
