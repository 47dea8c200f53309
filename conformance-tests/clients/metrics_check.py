"""Parses OpenMetrics exposition text (standard input) with the Prometheus Python client's
parser, which rejects malformed text (a missing `# EOF` included), and prints every sample as JSON lines:
{"name": ..., "labels": {...}, "value": ...}. Exits non-zero when the text does not parse."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    families = list(text_string_to_metric_families(text))
    names = set()
    for family in families:
        if family.name in names:
            print(f"family {family.name} appears twice", file=sys.stderr)
            return 1
        names.add(family.name)
        for sample in family.samples:
            print(json.dumps({"name": sample.name, "type": family.type, "labels": sample.labels, "value": sample.value}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
