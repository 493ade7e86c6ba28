"""Writes helm/bybit-kafka-connector/values.schema.json.

``config`` in the chart's values is the connector's whole config, so its
schema is the connector's own (connector/config/config.schema.json, generated from
the config dataclasses); a test keeps the two identical. Run after changing
either: ``python scripts/make_values_schema.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connector.config.schema import generate

OUT = Path(__file__).resolve().parents[1] / "helm/bybit-kafka-connector/values.schema.json"

STR: dict[str, Any] = {"type": "string"}
BOOL: dict[str, Any] = {"type": "boolean"}
OBJ: dict[str, Any] = {"type": "object"}
LIST: dict[str, Any] = {"type": "array"}
INT: dict[str, Any] = {"type": "integer", "minimum": 0}


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def config_schema() -> dict[str, Any]:
    schema = generate()
    return {k: v for k, v in schema.items() if k not in ("$schema", "title")}


def values_schema() -> dict[str, Any]:
    probe = obj({"initialDelaySeconds": INT, "periodSeconds": INT, "timeoutSeconds": INT,
                 "failureThreshold": INT, "successThreshold": INT})
    schema = obj({
        "replicaCount": {"type": "integer", "minimum": 0,
                         "description": "Above 1, the replicas share the subscriptions."},
        "coordination": obj({"enabled": BOOL, "group": STR,
                             "shards": {"type": "integer", "minimum": 1, "maximum": 1000},
                             "standby": {"type": "integer", "minimum": 0, "maximum": 1}}),
        "podAntiAffinity": {"enum": ["soft", "hard", ""]},
        "image": obj({"repository": STR, "tag": STR,
                      "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}},
                     ["repository"]),
        "imagePullSecrets": LIST, "nameOverride": STR, "fullnameOverride": STR,
        "serviceAccount": obj({"create": BOOL, "name": STR, "annotations": OBJ}),
        "config": config_schema(),
        "bybit": obj({"apiKey": STR, "apiSecret": STR, "existingSecret": STR,
                      "apiKeyKey": STR, "apiSecretKey": STR}),
        "kafkaAuth": obj({"existingSecret": STR, "passwordKey": STR, "caSecret": STR,
                          "caKey": STR}),
        "schemaRegistryAuth": obj({"existingSecret": STR, "passwordKey": STR}),
        "extraEnv": LIST,
        "service": obj({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535}}),
        "resources": OBJ,
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 1},
        "podSecurityContext": OBJ, "securityContext": OBJ,
        "livenessProbe": probe, "readinessProbe": probe,
        "podAnnotations": OBJ, "podLabels": OBJ, "nodeSelector": OBJ, "tolerations": LIST,
        "affinity": OBJ,
        "serviceMonitor": obj({"enabled": BOOL, "interval": STR, "labels": OBJ}),
        "prometheusRule": obj({"enabled": BOOL, "labels": OBJ}),
        "grafanaDashboard": obj({"enabled": BOOL, "labels": OBJ, "annotations": OBJ}),
        "podDisruptionBudget": obj({"enabled": BOOL, "maxUnavailable": INT}),
        "networkPolicy": obj({"enabled": BOOL, "kafkaPorts": {"type": "array", "items": INT},
                              "extraEgressPorts": {"type": "array", "items": INT},
                              "metricsFrom": LIST}),
    }, ["image", "config"])
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = "bybit-kafka-connector Helm values"
    return schema


def render() -> str:
    return json.dumps(values_schema(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
