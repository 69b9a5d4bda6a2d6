"""Labels and annotations the operator puts on what it creates, and selects by."""

GROUP = "paddock.dev"
MANAGED_BY = {"app.kubernetes.io/managed-by": "paddock"}

COMPONENT = f"{GROUP}/component"  # harness | sandbox
AGENT = f"{GROUP}/agent"
ENVIRONMENT = f"{GROUP}/environment"
SANDBOX_STATE = f"{GROUP}/sandbox-state"  # warm | bound
TEMPLATE_HASH = f"{GROUP}/template-hash"

# Managed Agents ids of the resources (Kubernetes names cannot hold `_`).
AGENT_ID = f"{GROUP}/agent-id"
ENVIRONMENT_ID = f"{GROUP}/environment-id"
SESSION_ID = f"{GROUP}/session-id"
VAULT_ID = f"{GROUP}/vault-id"
PARENT_SESSION_ID = f"{GROUP}/parent-session-id"  # on a thread's sandbox: the coordinator's session

SPEC_HASH = f"{GROUP}/spec-hash"  # annotation: changing it rolls the harness
SANDBOX_TOKEN = f"{GROUP}/sandbox-token"  # annotation, delivered to the sandbox by the downward API
CLAIM = f"{GROUP}/claim"  # annotation on bound sandboxes: warm | cold
CREATED_BY = f"{GROUP}/created-by"  # annotation on sandboxes: the operator replica that made it
PACKAGES = (
    f"{GROUP}/packages"  # label on sandboxes installing packages: they reach the package proxy
)
PACKAGE_TOKEN = f"{GROUP}/package-token"  # annotation: the package proxy token, for the install
