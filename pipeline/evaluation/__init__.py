"""The evaluation harness, apart from the runtime stages: BEIR collections, ranx metrics, `htp eval`, and
LongEmbed-style synthetic long-document tasks."""
