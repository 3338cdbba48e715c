# fastraft node image. Build: docker build -t fastraft .
# Run one node:  docker run --rm -p 7001:7001 -p 7101:7101 fastraft node --id 1
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN FASTRAFT_REQUIRE_EXTENSIONS=1 pip install --no-cache-dir . \
    && python -c "import fastraft.core as c; assert c.IMPLEMENTATION == 'cython'"
WORKDIR /data
ENTRYPOINT ["fastraft"]
CMD ["--version"]
