"""Between Managed Agents JSON and Paddock's custom resources: pure functions, one module
per resource (`agents`, `environments`, `sessions`, `events`) over `meta`, which says
where the API's fields live on an object (docs/gateway.md has the table):

- the Managed Agents id in a label (`paddock.dev/agent-id`, `environment-id`, `session-id`):
  Kubernetes names cannot hold `_`;
- fields the CRDs do not have (the free-text `name`, an Environment's `description`,
  `metadata`, archive and update times) in `paddock.dev/*` annotations;
- everything the operator and the harness act on in `spec`.

Requests come in as the models of `params.py`; responses go out as those of `views.py`.
"""
