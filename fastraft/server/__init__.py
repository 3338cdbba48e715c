"""The node runtime: one event loop per node drives the Raft engine, the storage, the state
machine and the two transports (peers and clients).

Place in the architecture: between the command line (``fastraft.cli``) and the sans-IO layers
(``fastraft.raft``, ``fastraft.statemachine``), over ``fastraft.storage`` and ``fastraft.codec``.
Modules: ``node`` (the engine loop), ``peers`` (the peer transport), ``clients`` (the client
port), ``logs`` (one-line logging), ``main`` (process entry: loop choice, signals, exit codes).
"""
