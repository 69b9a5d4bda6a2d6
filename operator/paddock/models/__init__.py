"""The API types of `paddock.dev/v1alpha1`: Agent, Environment and Session."""

from paddock.models.agent import Agent, AgentSpec, AgentStatus
from paddock.models.common import API_VERSION, GROUP, VERSION, Condition
from paddock.models.environment import Environment, EnvironmentSpec, EnvironmentStatus
from paddock.models.session import Session, SessionSpec, SessionStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Agent",
    "AgentSpec",
    "AgentStatus",
    "Condition",
    "Environment",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "Session",
    "SessionSpec",
    "SessionStatus",
]
