# fastraft image (untested here: this machine has no Docker engine).
# Build:                 docker build -t fastraft .
# A local cluster:       docker run --name fr fastraft            (then: docker exec fr fastraft put a 1)
# One node of a real cluster: mount a config whose nodes listen on all interfaces, e.g.
#     [[node]]
#     id = 1
#     raft = "node1:7101"              # where the other nodes dial it
#     raft_listen = "0.0.0.0:7101"     # where it listens inside the container
#     client = "node1:7001"
#   docker run -v $PWD/cluster.toml:/cluster.toml -v data1:/data -p 7001:7001 -p 7101:7101 \
#       fastraft node --id 1 --config /cluster.toml --data-dir /data
# (the client address is also where the node listens for clients: use a name that resolves
#  to the container inside it and to the host outside it, or the host's address.)
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN FASTRAFT_REQUIRE_EXTENSIONS=1 pip install --no-cache-dir . \
    && python -c "import fastraft.core as c; assert c.IMPLEMENTATION == 'cython'"
WORKDIR /data
STOPSIGNAL SIGTERM
ENTRYPOINT ["fastraft"]
CMD ["cluster"]
