"""Kafka's default key partitioner (murmur2, as in Java's `Utils.murmur2`), so the processor
can route the commands a process manager issues, and check that every command arrived on the
partition its aggregate id belongs to: a client with another partitioner would otherwise split
one aggregate across two writers."""

from __future__ import annotations

from functools import lru_cache

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Java-compatible murmur2 with Kafka's seed; returns a signed 32-bit int like Java."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    full = length & ~3
    for i in range(0, full, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[full + 2] << 16
    if rest >= 2:
        h ^= data[full + 1] << 8
    if rest >= 1:
        h ^= data[full]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@lru_cache(maxsize=1 << 16)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's Java client and librdkafka's `murmur2_random` choose for a key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
