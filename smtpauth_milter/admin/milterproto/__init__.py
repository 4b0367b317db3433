"""The milter protocol (version 6) as an MTA speaks it, in one place.

``wire``: the constants of Sendmail's ``include/libmilter/mfdef.h`` and the
steps of a session; ``codec``: pure encoding and decoding of packets;
``transport``: socket addresses, connecting, reading packets with a deadline.
``doctor``'s negotiation probe, the tests' MTA-side client and the benchmark
driver all speak through these modules.
"""
