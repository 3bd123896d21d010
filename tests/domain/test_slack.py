"""The Slack settings' validation and the notices and messages job events make."""

import pytest

from emit.codec import JSON
from emit.domain.model import Event, EventType
from emit.domain.settings import validate_settings
from emit.domain.slack import DEFAULT_SLACK_EVENTS, Notice, notices, slack_message
from emit.errors import InvalidRequest

ALL = frozenset({"created", "started", "completed", "failed", "dead", "killed"})


def event(kind: EventType, data: JSON = None) -> Event:
    return Event(1, kind, 0, data, 0.0)


def test_a_slack_url_with_chosen_events_is_taken() -> None:
    settings = validate_settings(
        {"slackUrl": "https://hooks.slack.com/services/T/B/x", "slackEvents": ["failed", "dead"]}
    )
    assert settings.slack_url == "https://hooks.slack.com/services/T/B/x"
    assert settings.slack == frozenset({"failed", "dead"})


def test_without_events_the_outcomes_are_told_and_without_a_url_nothing() -> None:
    assert validate_settings({"slackUrl": "https://h.example.com/x"}).slack == DEFAULT_SLACK_EVENTS
    assert validate_settings({"slackEvents": ["created"]}).slack is None


@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ({"slackUrl": "ftp://hooks.example.com/x"}, "slackUrl", "http(s) URL"),
        ({"slackUrl": "not a url"}, "slackUrl", "http(s) URL"),
        ({"slackUrl": 7}, "slackUrl", "http(s) URL"),
        ({"slackUrl": "http://10.0.0.1/hook"}, "slackUrl", "private address"),
        ({"slackEvents": ["finished"]}, "slackEvents", "'finished' is not an event"),
        ({"slackEvents": []}, "slackEvents", "non-empty list"),
        ({"slackEvents": "failed"}, "slackEvents", "non-empty list"),
        ({"slackEvents": ["dead", "dead"]}, "slackEvents", "twice"),
    ],
)
def test_bad_slack_settings_are_refused_naming_the_field(
    settings: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_settings(settings)
    assert caught.value.field == field and words in str(caught.value)


def test_each_chosen_event_makes_a_notice() -> None:
    made = notices(
        "j1",
        "email",
        [
            event(EventType.CREATED),
            event(EventType.DELIVERED),
            event(EventType.STARTED),
            event(EventType.PROGRESS, {"percent": 5}),
            event(EventType.RETRIED, {"error": "smtp down", "attemptNumber": 1}),
            event(EventType.RETRIED, {"manual": True}),  # no attempt failed
            event(EventType.DEAD, {"error": "smtp still down"}),
            event(EventType.KILLED, {"reason": "enough"}),
            event(EventType.COMPLETED, {"result": 1}),
        ],
        ALL,
    )
    assert [(n.event, n.detail) for n in made] == [
        ("created", None),
        ("started", None),
        ("failed", "smtp down"),
        ("dead", "smtp still down"),
        ("killed", "enough"),
        ("completed", None),
    ]


def test_events_not_chosen_make_none_and_a_last_failure_is_failed_without_dead() -> None:
    events = [
        event(EventType.CREATED),
        event(EventType.RETRIED, {"error": "e1"}),
        event(EventType.DEAD, {"error": "e2"}),
        event(EventType.COMPLETED),
    ]
    assert [(n.event, n.detail) for n in notices("j", "n", events, frozenset({"failed"}))] == [
        ("failed", "e1"),
        ("failed", "e2"),
    ]
    assert notices("j", "n", events, frozenset({"killed", "started"})) == []


def test_the_message_names_the_space_the_job_and_what_happened() -> None:
    assert slack_message("billing", Notice("01J", "email", "completed")) == {
        "text": "[billing] Job email (01J) completed"
    }
    assert slack_message("b", Notice("01J", "email", "dead", "boom")) == {
        "text": "[b] Job email (01J) is dead (no attempts left): boom"
    }
    assert slack_message("b", Notice("1", "n", "killed")) == {"text": "[b] Job n (1) was killed"}


def test_the_message_escapes_slack_markup_and_cuts_a_long_error() -> None:
    text = slack_message("a&b", Notice("1", "<n>", "failed", "x" * 2000))["text"]
    assert text.startswith("[a&amp;b] Job &lt;n&gt; (1) failed: xxx")
    assert text.endswith("x…") and len(text) < 560
