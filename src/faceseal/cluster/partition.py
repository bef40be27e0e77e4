"""The partitioner the shards use (it lives in :mod:`faceseal.crypto.partition`)."""

from faceseal.crypto.partition import Partitioner

__all__ = ["Partitioner"]
