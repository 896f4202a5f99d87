# One image for every stoker role: gateway, scheduler, node (see docker-compose.yml).
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs iproute2 nftables \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY stoker ./stoker
RUN pip install --no-cache-dir '.[postgres]' && rm -rf /src

ENV STOKER_HOME=/var/lib/stoker
VOLUME /var/lib/stoker
EXPOSE 8700
ENTRYPOINT ["stoker"]
CMD ["--help"]
