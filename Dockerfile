# bybit-kafka-connector image: slim Python, non-root, the package installed.
# The build stage is what tests/install/ runs: the same COPYs into an empty
# folder, the same build script, then the wheel installed into a fresh virtualenv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY scripts/build_wheel.sh ./scripts/
COPY connector ./connector
COPY avro ./avro
RUN sh scripts/build_wheel.sh /wheels

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin connector
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config.yaml /etc/bybit-kafka-connector/config.yaml
USER 10001
EXPOSE 9102
ENTRYPOINT ["bybit-kafka-connector"]
CMD ["run", "--config", "/etc/bybit-kafka-connector/config.yaml"]
