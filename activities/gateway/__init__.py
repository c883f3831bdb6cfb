"""The worker's one way to an AWS account and region: every call of every execution passes here.

- Reads of single resources coalesce across executions (`coalesce.ReadCoalescer`).
- Stops of single instances batch across executions, split on a per-id error
  (`coalesce.MutationBatcher`).
- Every request spends AWS's bucket for it first (`buckets.AwsBudget`, installed on
  the boto3 session by `activities.aws.SessionFactory`).

Actions do not know: they get a `GatewayClient` that behaves as the boto3 client
it wraps, and calls that are not single-resource reads or batchable mutations
pass straight through. A new coalescable read or batchable mutation is one entry
in `coalesce.READS` / `coalesce.MUTATIONS` and its test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from activities.gateway.buckets import AwsBudget, filtered_bucket_of, is_mutating
from activities.gateway.coalesce import (
    FOLLOW_UPS,
    MUTATIONS,
    READS,
    TAG_LOOKUPS,
    Freshness,
    MutationBatcher,
    MutationShape,
    Payment,
    ReadCoalescer,
    ReadShape,
    TagLookup,
    named_ids,
    operation_name,
    single_id,
    tag_lookup_key,
)
from activities.gateway.ledger import CallLedger

#: How long the first single-resource call waits for others to join it: long enough for the
#: executions a plan starts together, short against an AWS round trip under load.
DEFAULT_WINDOW = 0.02
#: How old an answer a read may take (from a call sent after its resource's last mutation here):
#: within the seconds AWS's own describes may lag a change (EC2's eventual consistency).
DEFAULT_MAX_AGE = 1.0
#: How long after its last read an id is read ahead by every batch of its operation, and how
#: many ids at most a batch reads ahead: an execution's next read of its resource comes within
#: seconds (check-before-act after backup, verify after apply, the next poll), and every id
#: ridden along costs the worker the parsing of its item (race N=100: read ahead 30 s and up to
#: the API's 200 ids, worker CPU per execution +25 ms for -20% requests).
DEFAULT_HORIZON = 10.0
DEFAULT_AHEAD = 25
#: How old an answer a validation may take, from a call sent after its execution began
#: (coalesce.validating): a CPU-bound worker runs the validations of a plan's items seconds apart,
#: and a plan's next items are read ahead by the one before. Sent after the start, an answer is
#: never older than the execution itself; the bound only matters for a validation long after it.
DEFAULT_VALIDATE_AGE = 10.0


@dataclass
class GatewayStats:
    """What coalescing saved: `asked` single-resource calls became `sent` AWS calls."""

    asked: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    ledger: CallLedger | None = None

    def count(self, operation: str, ids: int) -> None:
        self.asked[operation] = self.asked.get(operation, 0) + ids
        self.sent[operation] = self.sent.get(operation, 0) + 1
        if self.ledger is not None:
            self.ledger.batch(operation, ids)


class Gateway:
    """One per (account, region) in a worker: its coalescers, shared by every execution there."""

    def __init__(self, window: float = DEFAULT_WINDOW, budget: AwsBudget | None = None,
                 account_id: str = "", region: str = "", ledger: CallLedger | None = None,
                 max_age: float = DEFAULT_MAX_AGE, horizon: float = DEFAULT_HORIZON,
                 validate_age: float = DEFAULT_VALIDATE_AGE, patient_window: float = 0.0) -> None:
        """`max_age` 0: every read asks AWS (no answer remembered, none read ahead); `validate_age` 0:
        every validation asks AWS and reads nothing ahead for the plan's next items."""
        self.window = window
        self.patient_window = patient_window
        """How long a read by a step after validation waits for others (coalesce.ReadCoalescer)."""
        self.fresh = (Freshness(max_age, horizon, ahead=DEFAULT_AHEAD, validate_age=validate_age)
                      if max_age > 0 else None)
        self._budget = budget
        self._where = (account_id, region)
        self.ledger = ledger
        self.stats = GatewayStats(ledger=ledger)
        self._lock = threading.Lock()
        self._readers: dict[tuple[str, str], ReadCoalescer] = {}
        self._batchers: dict[tuple[str, str], MutationBatcher] = {}
        self._lookups: dict[tuple[str, str, tuple[str, ...]], TagLookup] = {}

    def wrap(self, service: str, client: Any) -> Any:
        if self.window <= 0 or not any(key[0] == service for key in (*READS, *MUTATIONS, *TAG_LOOKUPS)):
            return client
        return GatewayClient(self, service, client)

    def reader(self, service: str, shape: ReadShape, call: Callable[..., Any]) -> ReadCoalescer:
        with self._lock:
            key = (service, shape.operation)
            if key not in self._readers:
                self._readers[key] = ReadCoalescer(
                    shape, call, self.window, lambda n: self.stats.count(shape.operation, n),
                    self._payment(service, shape.operation), self.fresh,
                    None if self.ledger is None else partial(self.ledger.remember, shape.operation),
                    patient_window=self.patient_window)
            return self._readers[key]

    def remembered(self) -> dict[str, int]:
        """Reads answered without a call (a fresh answer, see coalesce.Freshness), by operation."""
        with self._lock:
            readers = list(self._readers.values())
        return {r.shape.operation: r.remembered for r in readers if r.remembered}

    def batcher(self, service: str, shape: MutationShape, call: Callable[..., Any]) -> MutationBatcher:
        with self._lock:
            key = (service, shape.operation)
            if key not in self._batchers:
                self._batchers[key] = MutationBatcher(
                    shape, call, max(self.window, shape.window),
                    lambda n: self.stats.count(shape.operation, n),
                    self._payment(service, shape.operation), patient_window=self.patient_window)
            return self._batchers[key]


    def tag_lookup(self, service: str, method: str, key: tuple[str, ...], call: Callable[..., Any]) -> TagLookup:
        with self._lock:
            found = self._lookups.get((service, method, key))
            if found is None:
                found = self._lookups[(service, method, key)] = TagLookup(
                    TAG_LOOKUPS[(service, method)], key[-1] == "owner:self", call, self.window,
                    lambda n: self.stats.count(f"{method} by tag", n), self._payment(service, method))
            return found

    def _payment(self, service: str, method: str) -> Payment | None:
        """The bucket a gathered call spends, paid before its batch closes (see coalesce)."""
        budget = self._budget
        if budget is None:
            return None
        bucket = filtered_bucket_of(service, operation_name(method))
        return lambda: budget.paid(*self._where, bucket)


class GatewayClient:
    """A boto3 client whose single-resource describes and stops go through the gateway.

    Every other attribute is the wrapped client's own (`meta`, `exceptions`, paginators, …).
    """

    def __init__(self, gateway: Gateway, service: str, client: Any) -> None:
        self._gateway = gateway
        self._service = service
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        read = READS.get((self._service, name))
        if read is not None or (self._service, name) in TAG_LOOKUPS:
            return self._coalesced_read(read, method, name)
        mutation = MUTATIONS.get((self._service, name))
        if mutation is not None:
            return self._fresh_after(self._batched_mutation(mutation, method))
        api = self._client.meta.method_to_api_mapping.get(name)  # not get_paginator, close, ...
        if api is not None and is_mutating(api):
            call = self._fresh_after(method)
            follow = FOLLOW_UPS.get((self._service, name))
            return self._followed(call, *follow) if follow else call
        return method

    def _followed(self, method: Callable[..., Any], read: str, id_field: str) -> Callable[..., Any]:
        """A mutation whose answer's `id_field` is read ahead by the next `read` call (FOLLOW_UPS)."""
        if self._gateway.fresh is None:
            return method

        def call(**kwargs: Any) -> Any:
            answer = method(**kwargs)
            made = answer.get(id_field) if isinstance(answer, dict) else None
            if isinstance(made, str):
                reader = self._gateway.reader(self._service, READS[(self._service, read)],
                                              getattr(self._client, read))
                reader.expect(made)
            return answer

        return call

    def _fresh_after(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """A mutation after which no answer from before its end is given for what it names."""
        fresh = self._gateway.fresh
        if fresh is None:
            return method

        def call(**kwargs: Any) -> Any:
            with fresh.mutating(named_ids(kwargs)):
                return method(**kwargs)

        return call

    def _coalesced_read(self, shape: ReadShape | None, method: Callable[..., Any], name: str) -> Callable[..., Any]:
        def call(**kwargs: Any) -> Any:
            resource_id = single_id(shape, kwargs) if shape is not None else None
            if resource_id is not None and shape is not None:
                self._asked(name)
                return self._gateway.reader(self._service, shape, method).read(resource_id)
            tags = tag_lookup_key(kwargs) if (self._service, name) in TAG_LOOKUPS else None
            if tags is not None:
                self._asked(f"{name} by tag")
                return self._gateway.tag_lookup(self._service, name, tags, method).lookup(kwargs)
            return method(**kwargs)

        return call

    def _asked(self, operation: str) -> None:
        if self._gateway.ledger is not None:
            self._gateway.ledger.ask(operation)

    def _batched_mutation(self, shape: MutationShape, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(**kwargs: Any) -> Any:
            ids = kwargs.get(shape.id_param)
            if set(kwargs) != {shape.id_param} or not isinstance(ids, list) or len(ids) != 1:
                return method(**kwargs)  # DryRun, Force, many ids: as asked
            self._asked(shape.operation)
            return self._gateway.batcher(self._service, shape, method).mutate(str(ids[0]))

        return call
