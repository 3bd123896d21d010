"""The rules of emit as plain synchronous code: no trio, no await, no clock reads.

Every function that needs the time takes ``now`` (wall seconds) as an argument, so the
rules are unit-tested in microseconds and the actors that call them stay thin.
"""
