# The image every service of docker-compose.yml runs: the percolator package and its CLI.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bigtable_lite ./bigtable_lite
COPY percolator ./percolator
COPY observers ./observers
RUN pip install --no-cache-dir .
ENTRYPOINT ["percolator"]
