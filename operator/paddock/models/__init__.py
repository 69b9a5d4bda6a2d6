"""The API types of `paddock.dev/v1alpha1`: Agent, Environment and Session."""

from paddock.models.agent import Agent, AgentSpec, AgentStatus
from paddock.models.common import API_VERSION, GROUP, VERSION, Condition, ObjectMeta, ObjectStub
from paddock.models.conditions import (
    AgentReason,
    ConditionType,
    EnvironmentReason,
    EventReason,
    SandboxReason,
    SchedulingReason,
    SessionReason,
)
from paddock.models.environment import Environment, EnvironmentSpec, EnvironmentStatus
from paddock.models.session import Session, SessionSpec, SessionStatus, environment_name

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Agent",
    "AgentReason",
    "AgentSpec",
    "AgentStatus",
    "Condition",
    "ConditionType",
    "Environment",
    "EnvironmentReason",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "EventReason",
    "ObjectMeta",
    "ObjectStub",
    "SandboxReason",
    "SchedulingReason",
    "Session",
    "SessionReason",
    "SessionSpec",
    "SessionStatus",
    "environment_name",
]
