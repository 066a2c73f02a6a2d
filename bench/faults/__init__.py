"""The fault suite: load with a ledger, a fault, recovery, closed buckets, verification.

``python -m bench.faults SCENARIO... [--duration S] [--quick]`` (``all`` for every
scenario). Scenarios (see :mod:`bench.faults.scenarios`): ``gateway-kill``,
``writer-kill``, ``closer-steps``, ``nats-kill``, ``cluster-leader``, ``storage``
(needs root for its tmpfs), ``outage``, ``clock``. Each reports events acknowledged,
delivered, lost and duplicated (both must be 0), time to recover and what the client
saw; the last line of output is one JSON object.
"""
