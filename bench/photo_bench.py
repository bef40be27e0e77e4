"""Photo work benchmark: bounded face detection on a 4000x4000 photo, and what a flood of such
photos does to a concurrent genuine encode.

Same run, same machine, each figure beside its baseline:

* detection time of a 16 MP photo searched at full size (the old behaviour,
  ``max_detect_pixels=None``) and at the default bound (2 MP), for a flat PNG (the issue's 46 KB
  attack file) and for a real face blown up to 16 MP;
* every face of a three-face photo (three sample photos side by side): faceseal's
  ``encode_all`` (one detection pass), the same three faces picked one index at a time (one
  pass each, the old way), and ``face_recognition.face_encodings`` on the same pixels
  (``pip install --no-deps face_recognition==1.3.0``; skipped when it is not installed);
* the time to encode a genuine 0.7 MP photo alone, and while another thread keeps encoding 16 MP
  photos (bounded, and for comparison unbounded; with two dlib lanes, the default on two cores,
  and for comparison one lane: the single FIFO lock of earlier versions).

    .venv/bin/python bench/photo_bench.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from faceseal.encoders import DlibResNetEncoder, dlib_resnet, load_image
from faceseal.encoders.fair_lock import FairLanes

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "data" / "faces"
RESULTS = ROOT / "bench" / "results"
SIDE = 4000


def flat_png() -> bytes:
    """A highly compressible 4000x4000 PNG (tens of KB), like the one in the issue."""
    pixels = np.zeros((SIDE, SIDE, 3), dtype=np.uint8)
    pixels[::50, :, :] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def face_png() -> bytes:
    """A real face (obama-1) scaled into a 4000x4000 PNG."""
    face = Image.open(FACES / "obama-1.jpg").convert("RGB")
    scale = SIDE / max(face.size)
    face = face.resize((int(face.width * scale), int(face.height * scale)),
                       Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (SIDE, SIDE), (128, 128, 128))
    canvas.paste(face, ((SIDE - face.width) // 2, (SIDE - face.height) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def three_faces() -> np.ndarray:
    """obama-1, biden-1 and obama-2 side by side, each scaled to one height: a group photo."""
    height = 480
    parts = []
    for name in ("obama-1.jpg", "biden-1.jpg", "obama-2.jpg"):
        face = Image.open(FACES / name).convert("RGB")
        parts.append(face.resize((int(face.width * height / face.height), height),
                                 Image.Resampling.BICUBIC))
    canvas = Image.new("RGB", (sum(p.width for p in parts), height), (128, 128, 128))
    left = 0
    for part in parts:
        canvas.paste(part, (left, 0))
        left += part.width
    return np.asarray(canvas, dtype=np.uint8)


def group_photo(encoder: DlibResNetEncoder, rounds: int, report: dict[str, object]) -> None:
    pixels = three_faces()
    count = len(encoder.encode_all(pixels))
    assert count == 3, f"expected 3 faces in the group photo, found {count}"
    every = statistics.median(timed(lambda: encoder.encode_all(pixels), rounds))
    by_index = statistics.median(timed(
        lambda: [encoder.encode(pixels, face_index=i) for i in range(count)], rounds))
    report["group_faces"] = count
    report["group_encode_all_s"] = round(every, 3)
    report["group_one_index_at_a_time_s"] = round(by_index, 3)
    print(f"{count}-face photo: encode_all {every:.2f} s, one index at a time {by_index:.2f} s")
    try:
        import face_recognition  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        print("  face_recognition is not installed: no baseline for the group photo")
        return
    reference = statistics.median(timed(lambda: face_recognition.face_encodings(pixels), rounds))
    ours = encoder.encode_all(pixels)
    theirs = face_recognition.face_encodings(pixels)
    report["group_face_recognition_s"] = round(reference, 3)
    report["group_ratio_to_face_recognition"] = round(every / reference, 2)
    report["group_same_encodings"] = len(theirs) == len(ours) and all(
        any(np.array_equal(face.encoding, other) for other in theirs) for face in ours)
    print(f"  face_recognition.face_encodings: {reference:.2f} s "
          f"(faceseal / face_recognition = {every / reference:.2f})")


def timed(operation: object, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        operation()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return times


def detection(encoder: DlibResNetEncoder, photo: bytes, rounds: int) -> float:
    pixels = load_image(photo, max_pixels=16_000_000)
    return statistics.median(timed(lambda: encoder.detect(pixels), rounds))


def genuine_under_flood(genuine: DlibResNetEncoder, flood: DlibResNetEncoder, attack: bytes,
                        probe: bytes, rounds: int) -> list[float]:
    """Seconds to encode ``probe`` (each round) while another thread keeps encoding ``attack``."""
    stop = threading.Event()

    def attacker() -> None:
        while not stop.is_set():
            flood.encode_photo(attack, max_pixels=16_000_000, face_index=0)

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    time.sleep(0.5)  # the attacker is at work
    try:
        return timed(lambda: genuine.encode_photo(probe), rounds)
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--group-only", action="store_true",
                        help="only the three-face photo against face_recognition")
    args = parser.parse_args()
    bounded = DlibResNetEncoder(max_pixels=16_000_000)
    full = DlibResNetEncoder(max_pixels=16_000_000, max_detect_pixels=None)
    bounded.load()
    flat, face = flat_png(), face_png()
    probe = (FACES / "obama-2.jpg").read_bytes()
    report: dict[str, object] = {"flat_png_bytes": len(flat), "side": SIDE}
    group_photo(bounded, args.rounds, report)
    if args.group_only:
        save(report, "photo-group")
        return
    for name, photo in (("flat", flat), ("face", face)):
        baseline = detection(full, photo, 1)  # ~20 s per pass: one is enough
        fast = detection(bounded, photo, args.rounds)
        report[f"detect_{name}_full_s"] = round(baseline, 3)
        report[f"detect_{name}_bounded_s"] = round(fast, 3)
        report[f"detect_{name}_speedup"] = round(baseline / fast, 1)
        print(f"detect 16 MP {name}: full {baseline:.2f} s, bounded {fast:.2f} s "
              f"({baseline / fast:.1f}x)")
    solo = statistics.median(timed(lambda: bounded.encode_photo(probe), args.rounds))
    report["genuine_solo_s"] = round(solo, 3)
    print(f"genuine 0.7 MP encode alone: {solo:.2f} s")
    default = dlib_resnet.dlib_lanes()
    report["lanes_default"] = default.count
    for name, flood, rounds, lanes in (
            ("bounded_2mp", bounded, args.rounds, 2), ("bounded_2mp_one_lane", bounded,
                                                       args.rounds, 1),
            ("full_one_lane", full, 3, 1), ("full", full, 3, 2)):
        dlib_resnet._lanes = FairLanes(lanes)  # one lane: the single FIFO lock of before
        try:
            bounded.load()  # every lane's models, outside the timed part
            times = genuine_under_flood(bounded, flood, face, probe, rounds)
        finally:
            dlib_resnet._lanes = default
        flooded, worst = statistics.median(times), max(times)
        report[f"genuine_flood_{name}_s"] = round(flooded, 3)
        report[f"genuine_flood_{name}_ratio"] = round(flooded / solo, 2)
        report[f"genuine_flood_{name}_worst_ratio"] = round(worst / solo, 2)
        print(f"  beside a flood of 16 MP photos searched {name} ({lanes} lane(s)): "
              f"median {flooded:.2f} s ({flooded / solo:.1f}x), worst of {rounds} "
              f"{worst:.2f} s ({worst / solo:.1f}x)")
    save(report, "photo-bench")


def save(report: dict[str, object], name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
