"""A synthetic gallery shaped like dlib face encodings, with planted genuine probes.

Identities are random centres in 128-d space; each identity's templates, and its probes, are the
centre plus independent noise. With the defaults a template lies about 0.4 from its identity's
other templates and probes (a genuine pair, under dlib's 0.6 threshold) and about 0.95 from other
identities (impostors), as with real dlib ResNet encodings. Every vector also carries one shared
offset (the "average face"), so that norms are dlib's too (about 1.4; the vault refuses probes
whose norm no face gives, see faceseal.matching.plausibility); the offset changes no distance.
Probes are not enrolled, so recall is measured on fresh samples of enrolled identities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CENTRE_SCALE = 0.06
NOISE_SCALE = 0.025
#: Per-coordinate scale of the shared offset: a norm of about 1.2, which with the identity spread
#: gives dlib's typical norm of 1.4.
OFFSET_SCALE = 0.106


@dataclass
class SyntheticGallery:
    """Encodings to enrol and probes to search with (row ``i`` of each names its identity)."""

    encodings: npt.NDArray[np.float64]
    subject_ids: list[str]
    probes: npt.NDArray[np.float64]
    probe_subjects: list[str]

    def __len__(self) -> int:
        return int(self.encodings.shape[0])


def subject_name(identity: int) -> str:
    return f"id-{identity:07d}"


def make_gallery(
    n: int, *, dimension: int = 128, per_subject: int = 4, probes: int = 1000, seed: int = 7
) -> SyntheticGallery:
    """``n`` encodings of ``ceil(n / per_subject)`` identities and ``probes`` planted probes."""
    if n < 1 or per_subject < 1:
        raise ValueError("n and per_subject must be positive")
    rng = np.random.default_rng(seed)
    identities = (n + per_subject - 1) // per_subject
    centres = rng.standard_normal((identities, dimension)) * CENTRE_SCALE
    owner = np.arange(n) // per_subject
    encodings = np.empty((n, dimension), dtype=np.float64)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        encodings[lo:hi] = centres[owner[lo:hi]] + rng.standard_normal((hi - lo, dimension)) \
            * NOISE_SCALE
    probe_count = min(probes, identities)
    picked = rng.choice(identities, size=probe_count, replace=False)
    probe_vectors = centres[picked] + rng.standard_normal((probe_count, dimension)) * NOISE_SCALE
    # Its own generator: the identities, templates and probes stay the ones drawn before.
    offset = np.random.default_rng(seed + 1).standard_normal(dimension) * OFFSET_SCALE
    encodings += offset
    probe_vectors += offset
    return SyntheticGallery(
        encodings=encodings,
        subject_ids=[subject_name(int(i)) for i in owner],
        probes=probe_vectors,
        probe_subjects=[subject_name(int(i)) for i in picked],
    )
