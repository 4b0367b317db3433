"""The decision: addresses, networks, replies, settings, the snapshot and the policy.

Pure: no I/O, no clock, and nothing else of the package is imported here.
"""
