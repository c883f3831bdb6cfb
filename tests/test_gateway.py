"""The AWS gateway: coalesced reads, batched Stop/Start split on error, read-your-writes.

Counted where AWS would count them: `FaultInjector.calls` sees every request boto3
sends (with no rules it changes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from activities.aws import SessionFactory
from activities.faults import FaultInjector, FaultRule
from activities.gateway import coalesce
from activities.gateway.buckets import AwsBudget
from activities.gateway.coalesce import MUTATIONS, READS, Freshness, MutationBatcher, ReadCoalescer, _Gatherer
from activities.gateway.ledger import GATEWAY, OUTSIDE
from domain.status import ExecutionStatus as S
from tests.conftest import ACCOUNT, REGION, AwsAccount, Stack
from tests.helpers import recommendation, request


def counted(aws: AwsAccount, window: float = 0.05) -> tuple[SessionFactory, FaultInjector]:
    seen = FaultInjector([])
    return SessionFactory(endpoint_url=aws.endpoint, session_hooks=[seen.install], coalesce_window=window), seen


def at_once(n: int, call: Any) -> list[Any]:
    """`call(i)` from n threads released together; each result, or the exception it raised."""
    barrier = threading.Barrier(n)

    def one(i: int) -> Any:
        barrier.wait()
        try:
            return call(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_single_describes_become_one_call_and_each_gets_its_own_answer(aws: AwsAccount) -> None:
    sessions, seen = counted(aws)
    instances = [aws.instance() for _ in range(12)]
    missing = "i-0123456789abcdef0"
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    asked = [*instances, missing]
    answers = at_once(len(asked), lambda i: ec2.describe_instances(InstanceIds=[asked[i]]))
    for instance, answer in zip(instances, answers, strict=False):
        (reservation,) = answer["Reservations"]
        assert [i["InstanceId"] for i in reservation["Instances"]] == [instance]
    assert isinstance(answers[-1], ClientError)
    assert answers[-1].response["Error"]["Code"] == "InvalidInstanceID.NotFound"  # as AWS answers one id
    assert seen.calls == {"DescribeInstances": 1}
    assert sessions.gateway(ACCOUNT, REGION).stats.asked["describe_instances"] == 13
    volumes = [aws.volume() for _ in range(5)]
    answers = at_once(5, lambda i: ec2.describe_volumes(VolumeIds=[volumes[i]]))
    assert [a["Volumes"][0]["VolumeId"] for a in answers] == volumes
    assert seen.calls["DescribeVolumes"] == 1
    ec2.describe_instances(InstanceIds=instances[:2])  # many ids, as asked: not coalesced, not changed
    assert seen.calls["DescribeInstances"] == 2


def test_lookups_by_tag_share_one_call_and_each_gets_exactly_its_own(aws: AwsAccount) -> None:
    sessions, seen = counted(aws)
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    volume = aws.volume()
    made = {}
    for n in range(4):
        snapshot = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
            {"Key": "reclaim:execution-id", "Value": f"exec-{n}"},
            {"Key": "reclaim:resource-id", "Value": volume if n != 3 else "vol-other"}]}])
        made[n] = snapshot["SnapshotId"]
    seen.calls.clear()

    def mine(n: int) -> list[str]:
        answer = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:reclaim:execution-id", "Values": [f"exec-{n}"]},
            {"Name": "tag:reclaim:resource-id", "Values": [volume]}])
        return [s["SnapshotId"] for s in answer["Snapshots"]]

    # exec-3's snapshot names another resource and exec-4 has none: neither may borrow a neighbour's.
    assert at_once(5, mine) == [[made[0]], [made[1]], [made[2]], [], []]
    assert seen.calls == {"DescribeSnapshots": 1}


def test_volume_modifications_coalesce_and_a_volume_never_modified_has_none(aws: AwsAccount) -> None:
    sessions, seen = counted(aws)
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    volumes = [aws.volume() for _ in range(3)]
    for v in volumes[:2]:
        ec2.modify_volume(VolumeId=v, VolumeType="gp3")
    seen.calls.clear()
    answers = at_once(3, lambda i: ec2.describe_volumes_modifications(VolumeIds=[volumes[i]]))
    assert [[m["VolumeId"] for m in a["VolumesModifications"]] for a in answers] == [[volumes[0]], [volumes[1]], []]
    assert seen.calls == {"DescribeVolumesModifications": 1}


def test_rds_describes_coalesce_on_the_db_instance_filter(aws: AwsAccount) -> None:
    sessions, seen = counted(aws)
    rds = sessions.client(ACCOUNT, REGION, "rds")
    names = [f"db-{n}" for n in range(4)]
    for name in names:
        rds.create_db_instance(DBInstanceIdentifier=name, DBInstanceClass="db.m5.large", Engine="postgres",
                               MasterUsername="admin", MasterUserPassword="password123", AllocatedStorage=20)
    answers = at_once(5, lambda i: rds.describe_db_instances(DBInstanceIdentifier=[*names, "gone"][i]))
    assert [a["DBInstances"][0]["DBInstanceIdentifier"] for a in answers[:4]] == names
    assert isinstance(answers[4], ClientError) and answers[4].response["Error"]["Code"] == "DBInstanceNotFound"
    assert seen.calls["DescribeDBInstances"] == 1


def test_a_batched_stop_that_aws_refuses_for_one_id_fails_only_that_caller(aws: AwsAccount) -> None:
    instances = [aws.instance() for _ in range(4)]
    sessions, seen = counted(aws)
    seen.rules.append(FaultRule("StopInstances", "IncorrectInstanceState", resource=instances[2]))
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    answers = at_once(4, lambda i: ec2.stop_instances(InstanceIds=[instances[i]]))
    assert isinstance(answers[2], ClientError)
    assert answers[2].response["Error"]["Code"] == "IncorrectInstanceState"
    for i in (0, 1, 3):
        assert answers[i]["StoppingInstances"][0]["InstanceId"] == instances[i]
        assert aws.instance_state(instances[i])[0] == "stopped"
    assert aws.instance_state(instances[2])[0] == "running"
    assert seen.calls["StopInstances"] == 1 + 4  # the batch, then each id alone


def test_a_coalesced_describe_refused_for_one_id_fails_only_that_caller(aws: AwsAccount) -> None:
    """AWS refuses the batch for one resource's sake (here: the injected refusal of any request naming
    it): the batch is asked again id by id, and only that caller gets the refusal."""
    instances = [aws.instance() for _ in range(4)]
    sessions, seen = counted(aws)
    seen.rules.append(FaultRule("DescribeInstances", "UnauthorizedOperation", resource=instances[2]))
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    answers = at_once(4, lambda i: ec2.describe_instances(InstanceIds=[instances[i]]))
    assert isinstance(answers[2], ClientError)
    assert answers[2].response["Error"]["Code"] == "UnauthorizedOperation"
    for i in (0, 1, 3):
        assert answers[i]["Reservations"][0]["Instances"][0]["InstanceId"] == instances[i]
    assert seen.calls["DescribeInstances"] == 1 + 4  # the batch, then each id alone


def test_throttling_of_a_coalesced_describe_is_the_whole_calls_not_split() -> None:
    """Throttling (and AWS's own faults) concern the call, not an id: asking again id by id would
    only spend more of the bucket. Every caller gets it; the activity retries."""
    calls: list[list[str]] = []
    throttled = ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "DescribeInstances")

    def describe(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs["Filters"][0]["Values"])
        raise throttled

    reader = ReadCoalescer(READS[("ec2", "describe_instances")], describe, window=0.2)
    answers = at_once(3, lambda i: reader.read(f"i-{i}"))
    assert all(a is throttled for a in answers)
    assert sorted(i for c in calls for i in c) == ["i-0", "i-1", "i-2"]  # each id asked once: no split


def test_a_read_never_gets_an_answer_sent_before_it_was_asked() -> None:
    """Read-your-writes: a read that arrives while a batch is in flight forms the next batch."""
    state = {"i-1": "running"}
    in_flight, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def describe(**kwargs: Any) -> dict[str, Any]:
        seen = state["i-1"]
        calls.append(seen)
        if len(calls) == 1:
            in_flight.set()
            release.wait(5)
        return {"Reservations": [{"Instances": [{"InstanceId": "i-1", "State": seen}]}]}

    reader = ReadCoalescer(READS[("ec2", "describe_instances")], describe, window=0.01)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(reader.read, "i-1")
        assert in_flight.wait(5)
        state["i-1"] = "stopping"  # the execution's own write lands while the first read is in flight
        second = pool.submit(reader.read, "i-1")
        time.sleep(0.05)
        release.set()
        assert first.result(5)["Reservations"][0]["Instances"][0]["State"] == "running"
        assert second.result(5)["Reservations"][0]["Instances"][0]["State"] == "stopping"
    assert calls == ["running", "stopping"]


def test_a_batch_waiting_for_its_token_takes_the_reads_that_arrive_meanwhile() -> None:
    """The budget is paid before the batch closes: when the bucket is empty, the wait gathers
    more callers into the one call instead of queueing more calls."""
    calls: list[list[str]] = []
    token = threading.Event()

    @contextlib.contextmanager
    def pay() -> Iterator[None]:
        token.wait(5)  # the bucket is empty until the test refills it
        yield

    def describe(**kwargs: Any) -> dict[str, Any]:
        ids = kwargs["Filters"][0]["Values"]
        calls.append(ids)
        return {"Volumes": [{"VolumeId": v} for v in ids]}

    reader = ReadCoalescer(READS[("ec2", "describe_volumes")], describe, window=0.01, pay=pay)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(reader.read, "vol-1")
        assert until(lambda: waiting(reader) == ["vol-1"])  # its window over, it waits for its token
        later = [pool.submit(reader.read, v) for v in ("vol-2", "vol-3")]
        assert until(lambda: waiting(reader) == ["vol-1", "vol-2", "vol-3"])
        token.set()
        answers = [f.result(5)["Volumes"][0]["VolumeId"] for f in (first, *later)]
    assert answers == ["vol-1", "vol-2", "vol-3"]
    assert calls == [["vol-1", "vol-2", "vol-3"]]


def until(condition: Any, timeout: float = 10.0) -> bool:
    """Whether `condition()` became true within `timeout` seconds (checked every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def waiting(gatherer: _Gatherer) -> list[str]:
    """The ids of the batch still open for callers to join."""
    with gatherer._lock:
        return list(gatherer._open.ids) if gatherer._open is not None else []


def gather_threads_running() -> bool:
    """Every batch's sending thread has begun to run. Until it has, CPython gives it the id of the
    thread that starts it, so a raise by thread id can land in it: inside an activity the gateway
    shields the start (`coalesce._start`); these callers are plain threads and wait instead."""
    return all(t.ident is not None for t in threading.enumerate() if t.name.startswith("gather-"))


def cancel(thread_id: int) -> None:
    """What temporalio does to a cancelled activity running in a thread: raise in that thread."""
    from temporalio.bridge.runtime import Runtime
    from temporalio.exceptions import CancelledError

    Runtime._raise_in_thread(thread_id, CancelledError)


@contextlib.contextmanager
def blocked_until(go: threading.Event) -> Iterator[None]:
    """A bucket that has no token until the test says so: the batch stays open."""
    if not go.wait(10):
        raise TimeoutError("the test never released the token")
    yield


def caller(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """`call()` in a thread of its own; what it returned or raised lands in the dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["answer"] = call()
        except BaseException as exc:  # the cancellation is what is observed
            out["raised"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_read_cancelled_while_its_batch_is_open_leaves_it_to_the_others() -> None:
    """The defect behind 'a small workflow cache stalls executions': a workflow evicted from the
    cache cancels its running local activity, and a cancelled first caller of a batch left it
    open and unsent for ever; every later describe of the worker joined it and hung."""
    from temporalio.exceptions import CancelledError

    calls: list[list[str]] = []
    go = threading.Event()

    def describe(**kwargs: Any) -> dict[str, Any]:
        ids = kwargs["Filters"][0]["Values"]
        calls.append(ids)
        return {"Reservations": [{"Instances": [{"InstanceId": i} for i in ids]}]}

    reader = ReadCoalescer(READS[("ec2", "describe_instances")], describe, window=0.0,
                           pay=lambda: blocked_until(go))
    first, first_out = caller(lambda: reader.read("i-evicted"))
    assert until(lambda: waiting(reader) == ["i-evicted"] and gather_threads_running())
    assert first.ident is not None
    cancel(first.ident)
    first.join(10)
    assert isinstance(first_out.get("raised"), CancelledError)
    assert waiting(reader) == []  # it took its id out of the batch it left
    second, second_out = caller(lambda: reader.read("i-other"))
    assert until(lambda: waiting(reader) == ["i-other"])
    go.set()
    second.join(10)
    assert second_out["answer"]["Reservations"][0]["Instances"] == [{"InstanceId": "i-other"}]
    assert calls == [["i-other"]]  # one call, for the caller still waiting


def test_a_stop_whose_caller_was_cancelled_before_the_batch_left_is_not_sent() -> None:
    from temporalio.exceptions import CancelledError

    calls: list[list[str]] = []
    go = threading.Event()

    def stop(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs["InstanceIds"])
        return {"StoppingInstances": [{"InstanceId": i} for i in kwargs["InstanceIds"]]}

    batcher = MutationBatcher(MUTATIONS[("ec2", "stop_instances")], stop, window=0.0,
                              pay=lambda: blocked_until(go))
    kept, kept_out = caller(lambda: batcher.mutate("i-kept"))
    assert until(lambda: waiting(batcher) == ["i-kept"] and gather_threads_running())
    gone, gone_out = caller(lambda: batcher.mutate("i-gone"))
    assert until(lambda: waiting(batcher) == ["i-kept", "i-gone"])
    assert gone.ident is not None
    cancel(gone.ident)
    gone.join(10)
    assert isinstance(gone_out.get("raised"), CancelledError)
    go.set()
    kept.join(10)
    assert kept_out["answer"] == {"StoppingInstances": [{"InstanceId": "i-kept"}]}
    assert calls == [["i-kept"]]


@pytest.fixture
def sessions(moto_endpoint: str, faults: FaultInjector) -> SessionFactory:
    """The stack's worker with a coalescing window wide enough to gather executions started together."""
    return SessionFactory(endpoint_url=moto_endpoint, session_hooks=[faults.install], coalesce_window=0.2)


async def test_executions_share_describes_and_a_refused_stop_fails_only_its_own(
    stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    instances = [aws.instance() for _ in range(6)]
    faults.rules.append(FaultRule("StopInstances", "UnsupportedOperation", resource=instances[0],
                                  message="The instance does not support stop"))
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in instances]
    started = await asyncio.gather(*(stack.executions.start(request(r, auto_approve=True)) for r in recs))
    views = await asyncio.gather(*(stack.executions.wait(s.execution_id, timeout=120) for s in started))
    # The refused one is compensated (its backup taken, its change undone); its neighbours, batched
    # with it into one StopInstances, are not touched by its error.
    assert [v.status for v in views] == [S.ROLLED_BACK if n == 0 else S.COMPLETED for n in range(6)], \
        [(v.status, v.reason) for v in views]
    assert "UnsupportedOperation" in (views[0].reason or "")
    assert aws.instance_state(instances[0])[0] == "running"
    assert {aws.instance_state(i)[0] for i in instances[1:]} == {"stopped"}
    stats = stack.sessions.gateway(ACCOUNT, REGION).stats
    assert faults.calls["DescribeInstances"] < stats.asked["describe_instances"]  # shared across executions


def test_a_coalesced_call_spends_one_token(aws: AwsAccount) -> None:
    budget = AwsBudget()
    seen = FaultInjector([])
    sessions = SessionFactory(endpoint_url=aws.endpoint, session_hooks=[seen.install], budget=budget,
                              coalesce_window=0.05)
    instances = [aws.instance() for _ in range(6)]
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    at_once(6, lambda i: ec2.describe_instances(InstanceIds=[instances[i]]))
    at_once(6, lambda i: ec2.stop_instances(InstanceIds=[instances[i]]))
    assert seen.calls == {"DescribeInstances": 1, "StopInstances": 1}
    assert budget.spent == {"ec2-describe": 1, "ec2-mutating": 1}


@pytest.fixture
def after_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads made as by the steps after validation (backup, apply, verify), which may take a fresh answer."""
    monkeypatch.setattr(coalesce, "may_remember", lambda: True)


@pytest.mark.usefixtures("after_validation")
def test_a_batch_reads_ahead_and_a_fresh_answer_makes_no_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids read lately ride along in the next batch; a read within `max_age` of such a call takes
    its answer without a call of its own, an older one asks AWS again."""
    now = [100.0]
    calls: list[list[str]] = []

    def describe(**kwargs: Any) -> dict[str, Any]:
        ids = kwargs["Filters"][0]["Values"]
        calls.append(list(ids))
        return {"Volumes": [{"VolumeId": i, "State": "available"} for i in ids if i != "vol-gone"]}

    fresh = Freshness(max_age=1.0, horizon=30.0, clock=lambda: now[0])
    reader = ReadCoalescer(READS[("ec2", "describe_volumes")], describe, window=0.0, fresh=fresh)
    assert reader.read("vol-1")["Volumes"][0]["VolumeId"] == "vol-1"
    now[0] += 5  # another execution's volume, later: vol-1 rides along (no extra request)
    reader.read("vol-2")
    assert calls == [["vol-1"], ["vol-2", "vol-1"]]
    now[0] += 0.5
    assert reader.read("vol-1")["Volumes"][0]["VolumeId"] == "vol-1"  # 0.5 s old: no call
    assert len(calls) == 2 and reader.remembered == 1
    now[0] += 0.6  # 1.1 s old: AWS again
    reader.read("vol-1")
    assert len(calls) == 3
    with pytest.raises(ClientError) as missing:  # a missing id read ahead answers only its own reader
        reader.read("vol-gone")
    assert missing.value.response["Error"]["Code"] == "InvalidVolume.NotFound"
    assert reader.read("vol-2")["Volumes"][0]["VolumeId"] == "vol-2" and len(calls) == 4
    monkeypatch.setattr(coalesce, "may_remember", lambda: False)  # validation: always AWS
    reader.read("vol-2")
    assert len(calls) == 5
    now[0] += 40  # past the horizon: no longer read ahead
    reader.read("vol-3")
    assert calls[-1] == ["vol-3"]


@pytest.mark.usefixtures("after_validation")
def test_no_answer_from_before_a_mutation_is_given_for_what_it_changed(aws: AwsAccount) -> None:
    """Read-your-writes with remembered answers: after a mutation through the gateway (a batched
    stop, a ModifyVolume passed through), the next read of what it named asks AWS again."""
    seen = FaultInjector([])
    sessions = SessionFactory(endpoint_url=aws.endpoint, session_hooks=[seen.install], coalesce_window=0.01,
                              read_max_age=60)
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    mine, other = aws.instance(), aws.instance()
    ec2.describe_instances(InstanceIds=[other])
    ec2.describe_instances(InstanceIds=[mine])  # reads `other` ahead
    assert seen.calls == {"DescribeInstances": 2}
    ec2.describe_instances(InstanceIds=[other])
    assert seen.calls == {"DescribeInstances": 2}  # fresh: no call
    ec2.stop_instances(InstanceIds=[mine])
    after = ec2.describe_instances(InstanceIds=[mine])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert after in ("stopping", "stopped") and seen.calls["DescribeInstances"] == 3
    volume = aws.volume()
    ec2.describe_volumes(VolumeIds=[volume])
    ec2.modify_volume(VolumeId=volume, VolumeType="gp3")
    assert ec2.describe_volumes(VolumeIds=[volume])["Volumes"][0]["VolumeType"] == "gp3"
    assert seen.calls["DescribeVolumes"] == 2
    stats = sessions.gateway(ACCOUNT, REGION).remembered()
    assert stats == {"describe_instances": 1}


@pytest.mark.usefixtures("after_validation")
def test_a_read_during_a_mutation_of_its_resource_waits_for_an_answer_sent_after_it() -> None:
    fresh = Freshness(max_age=60.0, horizon=60.0)
    sent_before = fresh.clock()
    with fresh.mutating(["i-1", "DryRun"]):
        assert not fresh.usable("i-1", fresh.clock(), fresh.clock())  # sent while it runs
        assert fresh.usable("i-2", sent_before, fresh.clock())
    assert not fresh.usable("i-1", sent_before, fresh.clock())
    time.sleep(0.001)
    assert fresh.usable("i-1", fresh.clock(), fresh.clock())


def test_stops_asked_apart_still_share_one_call(aws: AwsAccount) -> None:
    """A stop's batch stays open at least its shape's window (0.25 s), however short the gateway's:
    executions reach their stop apart, and the mutating bucket (5/s) is the scarcest."""
    sessions, seen = counted(aws, window=0.01)
    instances = [aws.instance() for _ in range(4)]
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")

    def stop(i: int) -> Any:
        time.sleep(0.04 * i)
        return ec2.stop_instances(InstanceIds=[instances[i]])

    answers = at_once(4, stop)
    assert [a["StoppingInstances"][0]["InstanceId"] for a in answers] == instances
    assert seen.calls == {"StopInstances": 1}


def test_threads_asking_for_a_new_client_at_once_build_one(aws: AwsAccount, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan's first executions in a region ask for its clients together: one is built, not one each."""
    sessions = SessionFactory(endpoint_url=aws.endpoint)
    built: list[str] = []
    build = boto3.Session.client

    def counting(self: boto3.Session, service: str, *args: Any, **kwargs: Any) -> Any:
        built.append(service)
        return build(self, service, *args, **kwargs)

    monkeypatch.setattr(boto3.Session, "client", counting)
    clients = at_once(8, lambda i: sessions.client(ACCOUNT, "us-west-2", "ec2"))
    assert built == ["ec2"] and all(c is clients[0] for c in clients)


def test_read_ahead_takes_the_latest_read_ids_up_to_its_cap() -> None:
    now = [0.0]
    calls: list[list[str]] = []

    def describe(**kwargs: Any) -> dict[str, Any]:
        calls.append(list(kwargs["Filters"][0]["Values"]))
        return {"Volumes": []}

    fresh = Freshness(max_age=1.0, horizon=10.0, clock=lambda: now[0], ahead=2)
    reader = ReadCoalescer(READS[("ec2", "describe_volumes")], describe, window=0.0, fresh=fresh)
    for v in ("vol-1", "vol-2", "vol-3", "vol-4"):
        now[0] += 2
        with contextlib.suppress(ClientError):
            reader.read(v)
    assert calls[-1] == ["vol-4", "vol-3", "vol-2"]  # vol-1, the oldest, no longer rides along


def test_the_ledger_counts_requests_by_phase_and_ids_per_batched_call(aws: AwsAccount) -> None:
    sessions, seen = counted(aws)
    instances = [aws.instance() for _ in range(3)]
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    at_once(3, lambda i: ec2.describe_instances(InstanceIds=[instances[i]]))
    ec2.describe_instances(InstanceIds=instances[:2])  # many ids: sent as asked, by its caller
    report = sessions.ledger.report()
    assert report["sent"] == {GATEWAY: {"DescribeInstances": 1}, OUTSIDE: {"DescribeInstances": 1}}
    assert report["asked"] == {OUTSIDE: {"describe_instances": 3}}
    assert report["ids_per_call"] == {"describe_instances": {3: 1}}
    assert seen.calls == {"DescribeInstances": 2}


@pytest.mark.usefixtures("after_validation")
def test_a_call_refused_for_an_id_read_ahead_is_asked_again_for_its_callers_alone(aws: AwsAccount) -> None:
    """Per-id errors answer only their caller, read-ahead included: an instance AWS refuses to
    describe rides along in a neighbour's batch; the neighbour still gets its answer."""
    seen = FaultInjector([])
    sessions = SessionFactory(endpoint_url=aws.endpoint, session_hooks=[seen.install], coalesce_window=0.01)
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    refused, fine, later = aws.instance(), aws.instance(), aws.instance()
    ec2.describe_instances(InstanceIds=[refused])  # asked: now read ahead by the next batch
    seen.rules.append(FaultRule("DescribeInstances", "UnauthorizedOperation", resource=refused))
    answer = ec2.describe_instances(InstanceIds=[fine])
    assert answer["Reservations"][0]["Instances"][0]["InstanceId"] == fine
    assert seen.calls["DescribeInstances"] == 3  # `refused` alone, `fine` with its rider, `fine` alone
    ec2.describe_instances(InstanceIds=[later])  # the refused id no longer rides along
    assert seen.calls["DescribeInstances"] == 4


def test_a_validation_reads_the_plans_next_items_ahead_and_takes_only_answers_since_its_start() -> None:
    """Validation's reads (coalesce.validating): its own resource's read carries the resources the
    plan's next items will validate; a later validation takes such an answer only when the call
    was sent after its own execution began and at most `validate_age` ago, and never one from
    before a mutation of its resource. Another execution's step or a read outside a validation is
    not served by them (a read outside an activity always asks AWS)."""
    mono, wall = [100.0], [1_000.0]
    calls: list[list[str]] = []

    def describe(**kwargs: Any) -> dict[str, Any]:
        ids = kwargs["Filters"][0]["Values"]
        calls.append(list(ids))
        return {"Volumes": [{"VolumeId": i, "State": "available"} for i in ids]}

    fresh = Freshness(max_age=1.0, horizon=30.0, clock=lambda: mono[0], validate_age=5.0, wall=lambda: wall[0])
    reader = ReadCoalescer(READS[("ec2", "describe_volumes")], describe, window=0.0, fresh=fresh)

    def tick(seconds: float) -> None:
        mono[0] += seconds
        wall[0] += seconds

    started = wall[0]  # the executions of vol-1..vol-4 all began now
    tick(0.5)
    with coalesce.validating("vol-1", ["vol-2", "vol-3", "vol-1"], since=started):
        assert reader.read("vol-1")["Volumes"][0]["VolumeId"] == "vol-1"
    assert calls == [["vol-1", "vol-2", "vol-3"]]  # the next items ride along, itself not twice
    tick(2)
    with coalesce.validating("vol-2", ["vol-3", "vol-4"], since=started):
        assert reader.read("vol-2")["Volumes"][0]["VolumeId"] == "vol-2"
    assert len(calls) == 1 and reader.remembered == 1  # 2 s old, sent after vol-2's start: no call
    with coalesce.validating("vol-3", [], since=wall[0]):  # began after that call: asks AWS
        reader.read("vol-3")
    assert calls[-1][0] == "vol-3" and "vol-4" in calls[-1]  # vol-4, named by vol-2's plan, rides along
    tick(4)
    with coalesce.validating("vol-4", [], since=started):  # read ahead 4 s ago: still young enough
        reader.read("vol-4")
    assert len(calls) == 2
    tick(2)
    with coalesce.validating("vol-4", [], since=started):  # 6 s: older than validate_age
        reader.read("vol-4")
    assert len(calls) == 3
    with fresh.mutating(["vol-4"]):
        pass
    with coalesce.validating("vol-4", [], since=started):  # changed through this gateway since
        reader.read("vol-4")
    assert len(calls) == 4
    tick(0.1)
    reader.read("vol-4")  # no validation, no step after one (outside an activity): AWS
    with coalesce.validating("vol-4", [], since=None):  # no start given: AWS
        reader.read("vol-4")
    assert len(calls) == 6


def test_a_validation_that_may_not_take_older_answers_reads_nothing_ahead() -> None:
    calls: list[list[str]] = []

    def describe(**kwargs: Any) -> dict[str, Any]:
        calls.append(list(kwargs["Filters"][0]["Values"]))
        return {"Volumes": [{"VolumeId": i} for i in kwargs["Filters"][0]["Values"]]}

    fresh = Freshness(max_age=1.0, horizon=30.0, validate_age=0.0)
    reader = ReadCoalescer(READS[("ec2", "describe_volumes")], describe, window=0.0, fresh=fresh)
    with coalesce.validating("vol-1", ["vol-2"], since=0.0):
        reader.read("vol-1")
    with coalesce.validating("vol-2", [], since=0.0):
        reader.read("vol-2")
    assert calls == [["vol-1"], ["vol-2", "vol-1"]]  # only the latest-read ids ride, never answering it


@pytest.mark.usefixtures("after_validation")
def test_a_snapshot_just_made_is_read_ahead_for_the_check_that_follows(aws: AwsAccount) -> None:
    """A backup's CreateSnapshot names the snapshot its apply checks next (coalesce.FOLLOW_UPS): the
    next DescribeSnapshots of another snapshot carries it, and the check then makes no call."""
    seen = FaultInjector([])
    sessions = SessionFactory(endpoint_url=aws.endpoint, session_hooks=[seen.install], coalesce_window=0.01,
                              read_max_age=60)
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    other = ec2.create_snapshot(VolumeId=aws.volume())["SnapshotId"]
    mine = ec2.create_snapshot(VolumeId=aws.volume())["SnapshotId"]
    ec2.describe_snapshots(SnapshotIds=[other])  # another execution's check carries `mine`
    assert seen.calls["DescribeSnapshots"] == 1
    assert ec2.describe_snapshots(SnapshotIds=[mine])["Snapshots"][0]["SnapshotId"] == mine
    assert seen.calls["DescribeSnapshots"] == 1
    assert sessions.gateway(ACCOUNT, REGION).remembered() == {"describe_snapshots": 1}


def test_reads_after_validation_wait_longer_to_share_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A describe by a step after validation (apply's check, a verify poll) opens a batch that stays
    open `patient_window`: reads a CPU-bound worker makes 0.1 s apart still share one call. A
    validation's batch keeps the short window: it holds its workflow task meanwhile."""
    calls: list[list[str]] = []

    def describe(**kwargs: Any) -> dict[str, Any]:
        ids = kwargs["Filters"][0]["Values"]
        calls.append(list(ids))
        return {"Volumes": [{"VolumeId": i} for i in ids]}

    def apart(reader: ReadCoalescer) -> None:
        reader.read("vol-9")  # another execution was about lately (this thread is another caller)

        def read(i: int) -> Any:
            time.sleep(0.1 * i)
            return reader.read(f"vol-{i}")

        assert [a["Volumes"][0]["VolumeId"] for a in at_once(3, read)] == ["vol-0", "vol-1", "vol-2"]

    monkeypatch.setattr(coalesce, "may_remember", lambda: True)
    apart(ReadCoalescer(READS[("ec2", "describe_volumes")], describe, window=0.01, patient_window=1.0))
    assert [sorted(c) for c in calls] == [["vol-9"], ["vol-0", "vol-1", "vol-2"]]
    monkeypatch.setattr(coalesce, "may_remember", lambda: False)
    calls.clear()
    apart(ReadCoalescer(READS[("ec2", "describe_volumes")], describe, window=0.01, patient_window=1.0))
    assert len(calls) == 4


def test_a_lone_caller_never_waits_the_patient_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The patient window buys company: with no other execution about within COMPANY_SECONDS (the
    CLI's execution, a test's) a batch goes at the short window. A stop (MutationBatcher) alike."""
    monkeypatch.setattr(coalesce, "may_remember", lambda: True)
    reader = ReadCoalescer(READS[("ec2", "describe_volumes")], lambda **_: {"Volumes": []}, window=0.01,
                           patient_window=1.0)
    assert reader._patient_window() is None  # alone
    assert reader._patient_window() is None  # still alone: its own earlier read is no company
    assert at_once(1, lambda _: reader._patient_window()) == [1.0]  # another caller: the first is about
    assert reader._patient_window() == 1.0
    assert reader._patient_window(may_wait=False) is None  # a validation never waits it
    stops = MutationBatcher(MUTATIONS[("ec2", "stop_instances")], lambda **_: {}, window=0.25, patient_window=1.0)
    assert stops._patient_window() is None
    assert at_once(1, lambda _: stops._patient_window()) == [1.0]
    later = time.monotonic() + coalesce.COMPANY_SECONDS + 1
    monkeypatch.setattr(coalesce.time, "monotonic", lambda: later)
    assert reader._patient_window() is None  # the other quiet longer than COMPANY_SECONDS: alone again
