# grproxy as a container (sidecar beside a MySQL/MariaDB server, or in front of a fleet).
#   docker build -t grproxy .
#   docker run -v $PWD/conf/grproxy.example.toml:/etc/grproxy/grproxy.toml -p 6446:6446 grproxy
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/grproxy
COPY pyproject.toml README.md ./
COPY grproxy ./grproxy
COPY router ./router
COPY replication ./replication
RUN pip install --no-cache-dir . && useradd --system --uid 10001 grproxy
COPY conf/grproxy.example.toml /etc/grproxy/grproxy.toml

USER grproxy
EXPOSE 6446
# The client port accepting TCP is the readiness signal until the HTTP /health endpoint lands.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import socket; socket.create_connection(('127.0.0.1', 6446), 2).close()" || exit 1
ENTRYPOINT ["grproxy"]
CMD ["serve", "--config", "/etc/grproxy/grproxy.toml"]
