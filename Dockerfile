# The image every service of docker-compose.yml runs: the percolator package and its CLI.
# Every dependency installs from a wheel on linux/amd64 and linux/arm64 (LevelDB comes inside
# plyvel-next's manylinux_2_28 wheels), so the image builds without a compiler on either.
FROM python:3.13-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bigtable_lite ./bigtable_lite
COPY percolator ./percolator
COPY observers ./observers
# [tls]: `percolator dev-secrets` makes the demo's certificates with cryptography.
RUN pip install --no-cache-dir '.[tls]' \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin percolator \
    && mkdir -p /data /secrets \
    && chown percolator:percolator /data /secrets
# Not root: named volumes mounted on /data and /secrets start out owned by this user.
USER percolator
ENTRYPOINT ["percolator"]
