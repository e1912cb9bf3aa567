# The image every service of docker-compose.yml runs: the percolator package and its CLI.
# Every dependency installs from a wheel on linux/amd64 and linux/arm64 (LevelDB comes inside
# plyvel-next's manylinux_2_28 wheels), so the image builds without a compiler on either.
FROM python:3.13-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bigtable_lite ./bigtable_lite
COPY percolator ./percolator
COPY observers ./observers
RUN pip install --no-cache-dir .
ENTRYPOINT ["percolator"]
