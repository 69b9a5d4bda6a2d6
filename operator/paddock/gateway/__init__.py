"""The Managed-Agents-compatible HTTP API over Paddock's resources and event log.

`python -m paddock.gateway` serves it; `app.create_app` builds it. See docs/gateway.md.
"""
