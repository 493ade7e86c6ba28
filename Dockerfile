# bybit-kafka-connector image: slim Python, non-root, the package installed.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY avro ./avro
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

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
