"""The Open Inference Protocol (KServe v2) REST format: datatypes, messages, codec, routes."""
