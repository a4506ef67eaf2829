"""This machine: service processes a run starts and always stops, their ports, loopback control APIs.

``process`` (start, wait for ready, stop, recorded in the ledger), ``ports`` (ports below the ephemeral
range, reserved host-wide), ``tokenapi`` (a small JSON API on 127.0.0.1 behind a bearer token).
"""
