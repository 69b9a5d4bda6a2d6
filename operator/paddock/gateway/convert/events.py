"""Events: what a send request's events become in the log, and the send answer."""

from __future__ import annotations

from collections.abc import Sequence

from paddock.eventlog import (
    AnyEvent,
    UserCustomToolResultEvent,
    UserDefineOutcomeEvent,
    UserInterruptEvent,
    UserMessageEvent,
    UserToolConfirmationEvent,
)
from paddock.gateway import views
from paddock.gateway.errors import invalid
from paddock.gateway.params import (
    EventParam,
    UserCustomToolResultParam,
    UserInterruptParam,
    UserMessageParam,
    UserToolConfirmationParam,
)


def user_event(param: EventParam) -> AnyEvent:
    """The log event of one sent event; 400 for a deny message on an allow."""
    if isinstance(param, UserMessageParam):
        return UserMessageEvent(content=param.content)
    if isinstance(param, UserInterruptParam):
        return UserInterruptEvent(session_thread_id=param.session_thread_id)
    if isinstance(param, UserToolConfirmationParam):
        deny_message = param.deny_message or param.message
        if deny_message is not None and param.result != "deny":
            raise invalid("deny_message: only with result deny")
        return UserToolConfirmationEvent(
            tool_use_id=param.tool_use_id,
            result=param.result,
            deny_message=deny_message,
            session_thread_id=param.session_thread_id,
        )
    if not isinstance(param, UserCustomToolResultParam):  # define_outcome: gateway.outcomes
        raise invalid(f"{param.type} is sent through gateway.outcomes")
    return UserCustomToolResultEvent(
        custom_tool_use_id=param.custom_tool_use_id,
        content=param.content,
        is_error=param.is_error,
        session_thread_id=param.session_thread_id,
    )


def sent_events_view(stored: Sequence[AnyEvent]) -> views.SentEvents:
    """The answer to a send: the stored events. Queued input is processed later (null
    `processed_at`); custom tool results and outcomes are processed on receipt."""
    return views.SentEvents(
        data=[
            event
            if isinstance(event, UserCustomToolResultEvent | UserDefineOutcomeEvent)
            else event.model_copy(update={"processed_at": None})
            for event in stored
        ]
    )
