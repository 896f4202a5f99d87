# One image for every stoker role: gateway, scheduler, node (see docker-compose.yml).
FROM python:3.11-slim

# nodejs runs Node.js functions, npm installs their package.json dependencies at deploy
# time, curl is for health checks and scripts against the gateway; iproute2 and nftables
# give a node's workers their own network (docs/security.md)
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm curl ca-certificates iproute2 nftables \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY stoker ./stoker
# every extra a documented feature needs: PostgreSQL ledger, Celery and RQ bridges and
# triggers, Parquet exports (tests/unit/test_compose.py checks this against the docs)
RUN pip install --no-cache-dir '.[postgres,celery,rq,parquet]' && rm -rf /src

ENV STOKER_HOME=/var/lib/stoker
VOLUME /var/lib/stoker
EXPOSE 8700
ENTRYPOINT ["stoker"]
CMD ["--help"]
