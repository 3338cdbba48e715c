"""The node runtime: one event loop per node drives the Raft engine, the storage, the state
machine and the two transports (peers and clients).

Place in the architecture: between the command line (``fastraft.cli``) and the sans-IO layers
(``fastraft.raft``, ``fastraft.statemachine``), over ``fastraft.storage`` and ``fastraft.codec``.
Modules: ``main`` (process entry: loop choice, signals, exit codes), ``wiring`` (builds a node
and its parts from the configuration; the one place ``Tuning`` becomes ``RaftConfig``),
``node`` (the Ready loop), ``requests`` (client requests: proposal batches, pending writes,
read batches, answers), ``snapshots`` (taking and installing snapshots), ``rejoin`` (the
marker of a node that lost its data), ``shutdown`` (leadership hand-over at a graceful stop),
``backends`` (WAL or SQLite storage), ``peers`` (the peer transport), ``clients`` (the client
port), ``interfaces`` (the Protocols between these parts), ``logs`` (one-line logging).
"""
