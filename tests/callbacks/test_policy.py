"""The pure parts of webhook delivery: backoff with jitter, refused targets, signatures."""

import hashlib
import hmac

import pytest

from emit.callbacks.policy import CallbackPolicy, refused_address, signature


def test_backoff_starts_near_a_second_and_triples_within_the_jitter() -> None:
    policy = CallbackPolicy()
    assert [policy.delay(n, 0.5) for n in range(1, 5)] == [1.0, 3.0, 9.0, 27.0]
    assert policy.delay(1, 0.0) == pytest.approx(0.8)
    assert policy.delay(1, 0.999999) == pytest.approx(1.2, rel=1e-5)
    # 8 tries: the last one comes 1 + 3 + ... + 729 = 1,093 s (about 18 min) after the first
    assert sum(policy.delay(n, 0.5) for n in range(1, 8)) == pytest.approx(1093)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True), ("::1", True), ("10.1.2.3", True), ("172.16.0.9", True),
        ("192.168.1.1", True), ("169.254.169.254", True), ("fe80::1", True),
        ("0.0.0.0", True), ("224.0.0.1", True), ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
)  # fmt: skip
def test_private_and_loopback_targets_are_refused(address: str, refused: bool) -> None:
    assert refused_address(address) is refused


def test_a_signature_is_verified_in_a_few_lines() -> None:
    body = '{"jobId":"01J"}'
    header = signature("s" * 32, 1_790_000_000, body)
    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    expected = hmac.new(b"s" * 32, f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected) and t == "1790000000"


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        CallbackPolicy(tries=0)
    with pytest.raises(ValueError):
        CallbackPolicy(spread=1.0)
