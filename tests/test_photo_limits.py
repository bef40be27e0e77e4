"""Photo work is bounded: a request's time limit stops its dlib work, one principal's photo
requests cannot fill the queue for the dlib lanes ahead of everyone else's, and a flood that keeps
one lane busy leaves the other free."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import pytest

from faceseal.encoders import DlibResNetEncoder, dlib_resnet, load_image
from faceseal.encoders.deadline import call_with_deadline, holding_lane
from faceseal.encoders.fair_lock import FairLanes
from faceseal.errors import InvalidInput, ServiceTimeout
from faceseal.http.photo_slots import PhotoSlots

from .http_server import served_vault


def test_photo_work_past_its_deadline_does_not_run(faces_dir: Path) -> None:
    encoder = DlibResNetEncoder()
    pixels = load_image(faces_dir / "obama-1.jpg")
    encoder.load()
    with pytest.raises(ServiceTimeout):
        call_with_deadline(time.monotonic() - 0.01, encoder.encode, pixels)
    assert call_with_deadline(None, encoder.encode, pixels).shape == (128,)


def test_waiting_for_the_dlib_lanes_ends_at_the_deadline() -> None:
    lanes = FairLanes(1)
    held = lanes.acquire()  # someone else's long detection
    assert held is not None
    try:
        def wait() -> None:
            with holding_lane(lanes):
                raise AssertionError("the lane was never free")

        started = time.monotonic()
        with pytest.raises(ServiceTimeout):
            call_with_deadline(started + 0.3, wait)
        assert 0.25 <= time.monotonic() - started < 5
    finally:
        lanes.release(held)


def test_one_principals_photos_wait_for_its_own_slots_only() -> None:
    slots = PhotoSlots(2)
    log: list[str] = []

    async def work(principal: str, name: str, release: anyio.Event) -> None:
        async with slots.slot(principal):
            log.append(f"start {name}")
            await release.wait()
            log.append(f"end {name}")

    async def main() -> None:
        gates = {name: anyio.Event() for name in ("a1", "a2", "a3", "b1")}
        async with anyio.create_task_group() as group:
            for name in ("a1", "a2", "a3"):
                group.start_soon(work, "alice", name, gates[name])
                await anyio.sleep(0.01)
            group.start_soon(work, "bob", "b1", gates["b1"])
            await anyio.sleep(0.05)
            # alice has two at work and one waiting; bob is not behind her.
            assert log == ["start a1", "start a2", "start b1"]
            gates["b1"].set()
            gates["a1"].set()
            await anyio.sleep(0.05)
            assert log[-1] == "start a3"
            gates["a2"].set()
            gates["a3"].set()
        assert len(slots) == 0  # idle principals are forgotten

    anyio.run(main)


@pytest.mark.slow
def test_an_abandoned_enrolment_stops_its_photo_work(tmp_path: Path, faces_dir: Path) -> None:
    """Ten large photos under a 1 s time limit: the request is answered 503 at the limit, and the
    server does not go on detecting faces in the remaining photos afterwards."""
    photo = (faces_dir / "obama-3.jpg").read_bytes()  # 3.3 MP: about a second of work each
    with served_vault(tmp_path, "--timeout", "1", "--debug", "--max-body", str(40 * 2**20)
                      ) as server:
        with server.http() as http:
            files = [("photo", (f"p{i}.jpg", photo, "image/jpeg")) for i in range(10)]
            response = http.post("/v1/tenants/acme/subjects/slow/photos", files=files,
                                 headers={"Authorization": f"Bearer {server.keys['enroller']}"})
            assert response.status_code == 503
            assert response.json()["code"] == "timeout"
        time.sleep(10)  # on the old code, detection went on for every photo (about 1 s each)
        detections = server.log().count("detected 1 face(s)")
    assert detections <= 2, f"{detections} photos were still processed after the time limit"


def test_one_lane_serves_waiters_in_arrival_order() -> None:
    lanes = FairLanes(1)
    order: list[int] = []
    assert lanes.acquire() == 0
    threads = []
    for i in range(4):
        def take(i: int = i) -> None:
            lane = lanes.acquire()
            assert lane == 0
            order.append(i)
            lanes.release(lane)

        thread = threading.Thread(target=take)
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # each is waiting before the next arrives
    lanes.release(0)
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3]


def test_a_waiter_that_gives_up_does_not_block_the_line() -> None:
    lanes = FairLanes(1)
    assert lanes.acquire() == 0
    assert lanes.acquire(timeout=0.1) is None
    assert lanes.acquire(blocking=False) is None
    got: list[int | None] = []
    thread = threading.Thread(target=lambda: got.append(lanes.acquire(timeout=5)))
    thread.start()
    time.sleep(0.05)
    lanes.release(0)
    thread.join(5)
    assert got == [0]
    lanes.release(0)
    with pytest.raises(RuntimeError):
        lanes.release(0)


def test_lanes_are_handed_out_in_arrival_order_once_every_lane_is_busy() -> None:
    lanes = FairLanes(2)
    first, second = lanes.acquire(), lanes.acquire()
    assert {first, second} == {0, 1}
    assert lanes.acquire(blocking=False) is None
    assert lanes.acquire(timeout=0.05) is None
    order: list[tuple[int, int | None]] = []
    threads = []
    for i in range(3):
        def take(i: int = i) -> None:
            lane = lanes.acquire(timeout=10)
            order.append((i, lane))
            time.sleep(0.05)
            if lane is not None:
                lanes.release(lane)

        thread = threading.Thread(target=take)
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # each is waiting before the next arrives
    assert first is not None
    assert second is not None
    lanes.release(second)
    lanes.release(first)
    for thread in threads:
        thread.join(10)
    assert [i for i, _ in order] == [0, 1, 2]
    assert all(lane in (0, 1) for _, lane in order)
    with pytest.raises(RuntimeError):
        lanes.release(0)  # every lane is free again
    with pytest.raises(ValueError, match="at least one lane"):
        FairLanes(0)


@pytest.fixture
def two_lanes(monkeypatch: pytest.MonkeyPatch) -> FairLanes:
    lanes = FairLanes(2)
    monkeypatch.setattr(dlib_resnet, "_lanes", lanes)
    return lanes


def test_a_flood_holding_one_lane_leaves_the_other_to_everyone_else(
        faces_dir: Path, two_lanes: FairLanes, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = DlibResNetEncoder()
    encoder.load()  # both lanes' models
    pixels = load_image(faces_dir / "obama-1.jpg")
    busy = two_lanes.acquire()  # a flood's long detection holds one lane
    assert busy is not None
    try:
        encoding = call_with_deadline(time.monotonic() + 30, encoder.encode, pixels)
        assert encoding.shape == (128,)
        # With one lane (the single lock of before), the same encode waits out its time limit.
        monkeypatch.setattr(dlib_resnet, "_lanes", one := FairLanes(1))
        held = one.acquire()
        with pytest.raises(ServiceTimeout):
            call_with_deadline(time.monotonic() + 0.3, encoder.encode, pixels)
        one.release(held or 0)
    finally:
        two_lanes.release(busy)


def test_each_lane_has_its_own_models(two_lanes: FairLanes) -> None:
    encoder = DlibResNetEncoder()
    encoder.load()
    assert encoder._recognizer(0) is not encoder._recognizer(1)
    assert encoder._predictor(0) is not encoder._predictor(1)
    assert encoder._recognizer(1) is encoder._recognizer(1)  # loaded once per lane


@pytest.mark.parametrize("raw", ["0", "9", "two", "-1"])
def test_a_bad_lane_count_is_refused(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dlib_resnet.LANES_ENV, raw)
    monkeypatch.setattr(dlib_resnet, "_lanes", None)
    with pytest.raises(InvalidInput, match="FACESEAL_DLIB_LANES"):
        dlib_resnet.dlib_lanes()


def test_the_lane_count_defaults_to_two_on_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dlib_resnet.LANES_ENV, raising=False)
    monkeypatch.setattr(dlib_resnet, "_lanes", None)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert dlib_resnet.dlib_lanes().count == 2
    monkeypatch.setattr(dlib_resnet, "_lanes", None)
    monkeypatch.setenv(dlib_resnet.LANES_ENV, "3")
    assert dlib_resnet.dlib_lanes().count == 3
    monkeypatch.setattr(dlib_resnet, "_lanes", None)
    monkeypatch.delenv(dlib_resnet.LANES_ENV)
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert dlib_resnet.dlib_lanes().count == 1
