"""Key-provider benchmark: wrap/unwrap latency per provider, and the time to open a vault of
100,000 subjects on each provider.

Every provider is real and local: the keyring file, a SoftHSM2 token (temporary token directory),
an OpenBao dev server and the moto KMS emulator, both on a free loopback port (moto is an
emulator: its latency says nothing about AWS's). The baseline, measured in the same run, is the
bare AES key wrap (RFC 5649) in this process.

    .venv/bin/python bench/keys_bench.py [--subjects 100000] [--rounds 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tests.keyservers import (  # noqa: E402
    AWS_ENV,
    BAO_TOKEN_ENV,
    PIN_ENV,
    MotoKms,
    OpenBao,
    SoftHsm,
    unique,
)

from faceseal.crypto.aead import generate_key  # noqa: E402
from faceseal.crypto.keywrap import unwrap_key, wrap_key  # noqa: E402
from faceseal.keys.datakeys import dek_context  # noqa: E402
from faceseal.keys.provider import KeyProvider  # noqa: E402
from faceseal.keys.registry import create_provider  # noqa: E402
from faceseal.vault import Vault, rotation  # noqa: E402
from faceseal.vault import vault as vault_module  # noqa: E402
from faceseal.vault.records import NewTemplate  # noqa: E402

CONTEXT = dek_context(bytes(16), 1)


def median_us(operation: Callable[[], object], rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        operation()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def latency(provider: KeyProvider, rounds: int) -> tuple[float, float]:
    key = generate_key()
    blob = provider.wrap(key, CONTEXT)
    return (median_us(lambda: provider.wrap(key, CONTEXT), rounds),
            median_us(lambda: provider.unwrap(blob, CONTEXT), rounds))


def populate(vault: Vault, subjects: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    encodings = rng.standard_normal((subjects, 128)) * 0.1
    for start in range(0, subjects, 20_000):
        rows = vault._sealer.seal([
            NewTemplate("default", f"subject-{start + i:07d}", "dlib-resnet-v1", encoding)
            for i, encoding in enumerate(encodings[start:start + 20_000])])
        with vault._store.transaction():  # rows and their subjects' inventories, as enroll does
            rotation.store_rows(vault._store, rows)
            vault._inventory.record_additions(vault._store, rows)
    return encodings


def time_open(home: Path, key: str, probe: np.ndarray, subject: str
              ) -> tuple[float, float, float, int]:
    """(open s, open+verify s, open+identify s, provider calls during the last one)."""
    calls: Counter[str] = Counter()
    real_open = vault_module.open_provider

    def counting_open(uri: str, *args: object, **kwargs: object) -> KeyProvider:
        provider = real_open(uri, *args, **kwargs)  # type: ignore[arg-type]
        for name in ("wrap", "unwrap", "unwrap_many", "generate_data_key", "describe"):
            method = getattr(provider, name)

            def counted(*a: object, _m: Callable[..., object] = method, _n: str = name,
                        **k: object) -> object:
                calls[_n] += 1
                return _m(*a, **k)
            setattr(provider, name, counted)
        calls["open"] += 1
        return provider

    started = time.perf_counter()
    with Vault.open(home, api_key=key):
        opened = time.perf_counter() - started
    started = time.perf_counter()
    with Vault.open(home, api_key=key) as vault:
        vault.verify(subject, probe)
        verified = time.perf_counter() - started
    vault_module.open_provider = counting_open  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        with Vault.open(home, api_key=key) as vault:
            vault.identify(probe, top_k=1)
            identified = time.perf_counter() - started
    finally:
        vault_module.open_provider = real_open
    return opened, verified, identified, sum(calls.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="faceseal-keys-bench-"))
    hsm = SoftHsm(work / "softhsm")
    pin = os.urandom(4).hex()
    token = unique("bench")
    hsm.init_token(token, pin)
    os.environ.update({"SOFTHSM2_CONF": str(hsm.conf), PIN_ENV: pin, **AWS_ENV})
    bao, moto = OpenBao(), MotoKms()
    os.environ[BAO_TOKEN_ENV] = bao.token
    uris = {
        "local": f"local:{work / 'local-keys'}",
        "pkcs11": hsm.uri(token, unique("kek")),
        "vault-transit": bao.uri(unique("kek")),
        "aws-kms (moto)": moto.uri(unique("kek")),
    }
    try:
        kek = generate_key()
        dek = generate_key()
        wrapped = wrap_key(kek, dek, CONTEXT)
        base_wrap = median_us(lambda: wrap_key(kek, dek, CONTEXT), args.rounds)
        base_unwrap = median_us(lambda: unwrap_key(kek, wrapped, CONTEXT), args.rounds)
        print(f"baseline (in-process AES-KWP): wrap {base_wrap:8.1f} us  "
              f"unwrap {base_unwrap:8.1f} us")
        print()
        print(f"{'provider':16} {'wrap us':>10} {'unwrap us':>10} {'x baseline':>11}")
        for name, uri in uris.items():
            provider = create_provider(uri)
            wrap_us, unwrap_us = latency(provider, args.rounds)
            provider.close()
            print(f"{name:16} {wrap_us:10.1f} {unwrap_us:10.1f} {unwrap_us / base_unwrap:10.0f}x")

        print()
        print(f"vault of {args.subjects:,} subjects (1 template each, 3 data keys):")
        home, keys = work / "vault", work / "vault-keys"
        started = time.perf_counter()
        with Vault.create(home, keyring_dir=keys,
                          max_encryptions_per_key=args.subjects // 3 + 1) as admin:
            key = admin.add_principal("bench", ["admin", "verifier", "identifier"],
                                      all_tenants=True).api_key
            encodings = populate(admin, args.subjects)
        print(f"  built in {time.perf_counter() - started:.1f} s")
        subject = f"subject-{args.subjects // 2:07d}"
        probe = encodings[args.subjects // 2]
        print(f"{'provider':16} {'open s':>8} {'+verify s':>10} {'+identify s':>12} "
              f"{'provider calls':>15}")
        for name, uri in uris.items():
            if name != "local":
                with Vault.open(home, api_key=key) as vault:
                    vault.migrate_keys(uri)
            opened, verified, identified, calls = time_open(home, key, probe, subject)
            print(f"{name:16} {opened:8.3f} {verified:10.3f} {identified:12.3f} {calls:15d}")
        print("(+identify on the first row decrypts every template into the in-memory gallery "
              "and writes the encrypted gallery snapshot; the later rows start from that "
              "snapshot, whose key does not depend on the provider. Provider calls "
              "during open+identify: the open, one batched unwrap, and for providers without a "
              "batch API one unwrap per data-key version inside it; none per subject. aws-kms "
              "wrap = DescribeKey + ListResourceTags + Encrypt.)")
    finally:
        bao.stop()
        moto.stop()


if __name__ == "__main__":
    main()
