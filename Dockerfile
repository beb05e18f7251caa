# The worker image used by docker-compose.yml. CPU torch from PyTorch's CPU index keeps the image small.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY reelstream reelstream
COPY streams streams
COPY models models
COPY indexer indexer
COPY monitoring monitoring
COPY contracts contracts
COPY lab lab
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir . \
 && mkdir -p /var/lib/reelstream && chown nobody /var/lib/reelstream
# The users table's local store (REELSTREAM_DATA_DIR): a volume per worker container (docker-compose.yml).
ENV REELSTREAM_DATA_DIR=/var/lib/reelstream
USER nobody
CMD ["reelstream", "worker"]
