"""Rich messages: attachments, buttons and the visitor's choice (parsing, helpers, e2e)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from giosg_visitor import (
    Action,
    APIError,
    Attachment,
    Message,
    NotChoosableError,
    ProtocolError,
    Unrecognized,
    Visitor,
    choosable_actions,
)
from giosg_visitor.chat import MessageStream
from giosg_visitor.testing import FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID, virtual_world


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
ROOT = Path(__file__).resolve().parent.parent.parent

CARD: dict[str, Any] = {
    "id": "att-1",
    "title": "Pick one",
    "title_link_url": "https://example.com/t",
    "text": "Two buttons and a link",
    "image_url": "https://example.com/i.png",
    "image_link_url": "https://example.com/i",
    "link_target": "_blank",
    "layout": "card",  # unknown: kept in extra
    "actions": [
        {
            "id": "a-yes",
            "text": "Yes",
            "type": "button",
            "value": "yes",
            "style": "brand_primary",
            "is_disabled_on_selection": True,
            "is_disabled_on_visitor_message": False,
            "icon": "check",  # unknown: kept in extra
        },
        {
            "id": "a-later",
            "text": "Later",
            "type": "button",
            "value": "later",
            "is_disabled_on_visitor_message": True,
        },
        {"id": "a-faq", "text": "FAQ", "type": "link_button", "link_url": "https://x.test"},
    ],
}


def _message(id: str = "m1", **fields: Any) -> Message:
    return Message.from_api({"id": id, "type": "msg", "sender_type": "user", **fields})


# Parsing ------------------------------------------------------------------------------------


def test_an_attachment_parses_into_typed_values_keeping_unknown_keys() -> None:
    message = _message(message="Hi", attachments=[CARD], selected_reply_suggestion_id=None)
    (card,) = message.attachments
    assert isinstance(card, Attachment)
    assert (card.id, card.title, card.text, card.image_url) == (
        "att-1",
        "Pick one",
        "Two buttons and a link",
        "https://example.com/i.png",
    )
    assert card.extra == {"layout": "card"}
    assert card.message_id == "m1"
    yes, later, faq = message.actions
    assert isinstance(yes, Action)
    assert (yes.text, yes.type, yes.value, yes.style) == ("Yes", "button", "yes", "brand_primary")
    assert yes.is_disabled_on_selection
    assert not yes.is_disabled_on_visitor_message
    assert yes.extra == {"icon": "check"}
    assert yes.key == ("m1", "att-1", "a-yes")
    assert later.is_disabled_on_visitor_message
    assert not later.is_disabled_on_selection
    assert faq.is_link
    assert faq.link_url == "https://x.test"
    assert "attachments" not in message.extra
    assert message.response_to is None


def test_a_choice_parses_its_response_to() -> None:
    choice = Message.from_api(
        {
            "id": "c1",
            "type": "action",
            "sender_type": "visitor",
            "response_to_message_id": "m1",
            "response_to_attachment_id": "att-1",
            "response_to_action_id": "a-yes",
            "response_value": "yes",
            "response_to_action": {"id": "a-yes", "text": "Yes"},
        }
    )
    assert choice.is_choice
    assert choice.is_from_visitor
    assert choice.response_to is not None
    assert choice.response_to.key == ("m1", "att-1", "a-yes")
    assert choice.response_to.value == "yes"
    assert choice.text == "yes"  # no text: the value stands in
    assert choice.extra == {"response_to_action": {"id": "a-yes", "text": "Yes"}}


def test_kinds_are_literals_with_an_unrecognized_fallback_keeping_the_raw_string() -> None:
    message = Message.from_api({"id": "x", "type": "carousel", "sender_type": "robot"})
    assert message.type == Unrecognized("carousel")
    assert str(message.type) == "carousel"
    assert message.sender_type == Unrecognized("robot")
    assert not message.is_from_operator
    assert not message.is_from_visitor
    assert not message.is_system
    assert Message.from_api({"id": "y"}).type == "msg"
    action = Action.from_api({"id": "a", "type": "dropdown"})
    assert action.type == Unrecognized("dropdown")


@pytest.mark.parametrize(
    ("fields", "is_operator", "is_system"),
    [
        ({"type": "msg", "sender_type": "user"}, True, False),
        ({"type": "join", "sender_type": "user"}, True, True),
        ({"type": "leave", "sender_type": "user"}, True, True),
        ({"type": "autosuggest", "sender_type": "user"}, True, True),
        ({"type": "msg", "sender_type": "visitor"}, False, False),
        ({"type": "msg", "sender_type": "rule"}, False, False),
        ({"type": "action", "sender_type": "visitor"}, False, False),
    ],
)
def test_is_from_operator_and_is_system(
    fields: dict[str, str], is_operator: bool, is_system: bool
) -> None:
    message = Message.from_api({"id": "m", **fields})
    assert (message.is_from_operator, message.is_system) == (is_operator, is_system)


@pytest.mark.parametrize(
    "bad",
    [
        {"attachments": "card"},
        {"attachments": [["not", "an", "object"]]},
        {"attachments": [{"actions": {"id": "a"}}]},
        {"attachments": [{"actions": [{"is_disabled_on_selection": "yes"}]}]},
        {"attachments": [{"title": 3}]},
        {"type": 7},
        {"sender_type": ["user"]},
        {"response_value": {"v": 1}},
    ],
)
def test_a_malformed_rich_message_is_a_protocol_error_naming_the_field(
    bad: dict[str, Any],
) -> None:
    with pytest.raises(ProtocolError):
        Message.from_api({"id": "m", **bad})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


_TEXT = st.text(max_size=8) | st.none()
_FLAG = st.booleans() | st.none()
_ACTION = st.fixed_dictionaries(
    {},
    optional={
        "id": _TEXT | st.integers(),
        "text": _TEXT,
        "type": st.sampled_from(["button", "link_button", "other"]) | st.none(),
        "value": _TEXT,
        "style": _TEXT,
        "link_url": _TEXT,
        "link_target": _TEXT,
        "is_disabled_on_selection": _FLAG,
        "is_disabled_on_visitor_message": _FLAG,
        "extra_key": _JSON,
    },
)
_ATTACHMENT = st.fixed_dictionaries(
    {"actions": st.lists(_ACTION, max_size=4) | st.none()},
    optional={
        "id": _TEXT,
        "title": _TEXT,
        "title_link_url": _TEXT,
        "text": _TEXT,
        "image_url": _TEXT,
        "image_link_url": _TEXT,
        "link_target": _TEXT,
        "unknown": _JSON,
    },
)
_ACTION_KNOWN = {
    "id",
    "text",
    "type",
    "value",
    "style",
    "link_url",
    "link_target",
    "is_disabled_on_selection",
    "is_disabled_on_visitor_message",
}


def _slots(attachments: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Every (object, key) of the shape that a corruption may overwrite."""
    slots = []
    for attachment in attachments:
        slots += [(attachment, key) for key in attachment]
        for action in attachment.get("actions") or []:
            slots += [(action, key) for key in action]
    return slots


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attachments=st.lists(_ATTACHMENT, min_size=1, max_size=3) | st.none(),
    data=st.data(),
)
def test_any_attachment_shape_is_a_typed_value_or_a_protocol_error(
    attachments: list[dict[str, Any]] | None, data: st.DataObject
) -> None:
    """A well-formed shape parses to exactly what was sent; a shape with one field
    overwritten by any JSON value parses to typed values or raises ProtocolError."""
    slots = _slots(attachments or [])
    corrupted = bool(slots) and data.draw(st.booleans(), label="corrupt")
    if corrupted:
        target, key = data.draw(st.sampled_from(slots), label="slot")
        target[key] = data.draw(_JSON, label="value")
    try:
        message = Message.from_api({"id": "m", "attachments": attachments})
    except ProtocolError:
        assert corrupted, "a well-formed shape was refused"
        return
    raw = attachments or []
    assert len(message.attachments) == len(raw)
    for parsed, shape in zip(message.attachments, raw, strict=True):
        raw_id = shape.get("id")
        assert parsed.id == (None if raw_id is None else str(raw_id))  # numeric ids as text
        for name in ("title", "text", "image_url"):
            assert getattr(parsed, name) == shape.get(name)
            assert getattr(parsed, name) is None or isinstance(getattr(parsed, name), str)
        assert parsed.extra.keys() == shape.keys() - {
            "id",
            "title",
            "title_link_url",
            "text",
            "image_url",
            "image_link_url",
            "link_target",
            "actions",
        }
        for action, action_data in zip(parsed.actions, shape.get("actions") or [], strict=True):
            raw_id = action_data.get("id")
            assert action.id == (None if raw_id is None else str(raw_id))
            for name in ("text", "value", "style", "link_url", "link_target"):
                assert getattr(action, name) == action_data.get(name)
                assert getattr(action, name) is None or isinstance(getattr(action, name), str)
            assert isinstance(action.is_disabled_on_selection, bool)
            assert isinstance(action.is_disabled_on_visitor_message, bool)
            assert action.type in ("button", "link_button") or isinstance(action.type, Unrecognized)
            assert (action.message_id, action.attachment_id) == ("m", parsed.id)
            assert action.extra.keys() == action_data.keys() - _ACTION_KNOWN
    # What is choosable is always a subset of the buttons, and never a link.
    for action in choosable_actions([message]):
        assert action in message.actions
        assert action.type == "button"


# choosable_actions --------------------------------------------------------------------------


def _choice(id: str, action: Action) -> Message:
    return Message.from_api(
        {
            "id": id,
            "type": "action",
            "sender_type": "visitor",
            "response_to_message_id": action.message_id,
            "response_to_attachment_id": action.attachment_id,
            "response_to_action_id": action.id,
            "response_value": action.value,
        }
    )


def test_choosable_actions_respect_both_disable_flags() -> None:
    card = _message("m1", attachments=[CARD])
    yes, later, _faq = card.actions
    assert choosable_actions([card]) == [yes, later]  # never the link button
    # A typed visitor message switches off "Later" (disabled on visitor message) only.
    typed = Message.from_api({"id": "v1", "type": "msg", "sender_type": "visitor"})
    assert choosable_actions([card, typed]) == [yes]
    # Choosing "Later" switches off "Yes" (disabled on selection: any action of the message)
    # and "Later" itself (a choice is a visitor message).
    assert choosable_actions([card, _choice("c1", later)]) == []
    # A visitor message *before* the card changes nothing.
    assert choosable_actions([typed, card]) == [yes, later]


def test_choosable_actions_skip_actions_without_ids() -> None:
    card = _message("m1", attachments=[{"actions": [{"text": "No id", "type": "button"}]}])
    assert choosable_actions([card]) == []


# Sending a choice ----------------------------------------------------------------------------


async def test_a_choice_posts_the_inferred_body_to_the_message_endpoint() -> None:
    """The wire shape of a choice (inferred, see giosg_visitor/_facts.py), in virtual time."""
    async with virtual_world() as world, world.visitor() as visitor:
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        operator = await world.giosg.operator_online(ROOM_ID, "Olivia")
        message = await world.giosg.operator_sends_buttons(chat.id, operator, "?", ["Go"])
        (action,) = Message.from_api(message).actions
        posted: list[httpx.Request] = []
        world.client.event_hooks["request"].append(_record(posted))
        await chat.choose(action)
        (request,) = [r for r in posted if r.method == "POST"]
        assert request.url.path.endswith(f"/chats/{chat.id}/messages")
        assert json.loads(request.content) == {
            "type": "action",
            "response_to_message_id": message["id"],
            "response_to_attachment_id": message["attachments"][0]["id"],
            "response_to_action_id": message["attachments"][0]["actions"][0]["id"],
            "message": "Go",
        }


def _record(into: list[httpx.Request]) -> Any:
    async def hook(request: httpx.Request) -> None:
        into.append(request)

    return hook


# Sending a choice, end to end over real sockets -----------------------------------------------


async def _next_where(stream: MessageStream, predicate: Any) -> Message:
    async for message in stream:
        if predicate(message):
            return message
    raise AssertionError("stream ended")  # pragma: no cover


async def test_choosing_a_button_posts_a_choice_the_fake_records(giosg: FakeGiosg) -> None:
    async with Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY) as visitor:
        operator = await giosg.operator_online(ROOM_ID, "Olivia")
        chat = await visitor.start_chat(ROOM_ID)
        await giosg.operator_sends_buttons(
            chat.id, operator, "Shall we?", ["Yes", "No"], title="Pick"
        )
        with anyio.fail_after(10):
            async with chat.messages() as stream:
                card = await _next_where(stream, lambda m: bool(m.attachments))
        assert card.is_from_operator
        assert card.attachments[0].title == "Pick"
        yes = card.actions[0]
        choice = await chat.choose(yes)
        assert choice.is_choice
        assert choice.is_from_visitor
        assert choice.response_to is not None
        assert choice.response_to.key == yes.key
        assert choice.response_to.value == "Yes"
        assert choice.message == "Yes"
        posted = [r for r in giosg.requests if r.method == "POST" and "messages" in r.path]
        assert [r.status for r in posted] == [201]
        stored = (await giosg.messages(chat.id))[-1]
        assert stored["type"] == "action"
        assert (
            stored["response_to_message_id"],
            stored["response_to_attachment_id"],
            stored["response_to_action_id"],
        ) == yes.key
        # The choice comes back in the history, and the buttons are spent.
        history = await chat.history()
        assert history[-1].response_to == choice.response_to
        assert choosable_actions(history) == []
        # The fake refuses a button switched off by is_disabled_on_selection.
        with pytest.raises(APIError) as info:
            await chat.choose(card.actions[1])
        assert info.value.status_code == 400


async def test_a_link_button_sends_nothing_and_reports_its_url(giosg: FakeGiosg) -> None:
    async with Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY) as visitor:
        operator = await giosg.operator_online(ROOM_ID, "Olivia")
        chat = await visitor.start_chat(ROOM_ID)
        link = {"text": "Docs", "type": "link_button", "link_url": "https://example.com/d"}
        message = await giosg.operator_sends_buttons(chat.id, operator, None, [link])
        (action,) = Message.from_api(message).actions
        before = len(giosg.requests)
        with pytest.raises(NotChoosableError) as info:
            await chat.choose(action)
        assert info.value.reason == "link_button"
        assert info.value.link_url == "https://example.com/d"
        assert isinstance(info.value, ValueError)
        assert len(giosg.requests) == before  # nothing was sent
        with pytest.raises(NotChoosableError) as no_id:
            await chat.choose(Action(text="hand-made"))
        assert no_id.value.reason == "no_id"


async def test_a_lost_choice_response_is_read_back_not_resent(giosg: FakeGiosg) -> None:
    async with Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY) as visitor:
        operator = await giosg.operator_online(ROOM_ID, "Olivia")
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        message = await giosg.operator_sends_buttons(chat.id, operator, "?", ["A", "B"])
        action = Message.from_api(message).actions[1]
        giosg.inject(
            endpoint="api", reset=True, after_processing=True, path_contains=f"{chat.id}/messages"
        )
        choice = await chat.choose(action)
        assert choice.response_to is not None
        assert choice.response_to.key == action.key
        stored = [m for m in await giosg.messages(chat.id) if m["type"] == "action"]
        assert len(stored) == 1
        assert stored[0]["id"] == choice.id


async def test_the_fake_bot_answers_a_choice(giosg: FakeGiosg) -> None:
    """The scripted bot sends its menu of buttons and reacts to the visitor's choice."""
    bot = await giosg.start_bot(ROOM_ID, organization_id=ORG_ID, typing_seconds=0.05)
    async with Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY) as visitor:
        chat = await visitor.start_chat(ROOM_ID)
        await chat.send("Show me the menu")
        with anyio.fail_after(10):
            async with chat.messages(include_history=False) as stream:
                menu = await _next_where(stream, lambda m: bool(m.attachments))
                hours, human, faq = menu.actions
                assert faq.is_link
                assert choosable_actions([menu]) == [hours, human]
                await chat.choose(hours)
                answer = await _next_where(stream, lambda m: m.is_from_operator and m.type == "msg")
    assert bot.choices == ["hours"]
    assert answer.message is not None
    assert "Opening hours" in answer.message
    assert "weekdays" in answer.message


# Types: mypy --strict rejects a comparison with an undocumented sender type --------------------


def test_mypy_rejects_comparing_sender_type_with_an_undocumented_value(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        textwrap.dedent(
            """
            from giosg_visitor import Message


            def from_operator(m: Message) -> bool:
                return m.sender_type == "operator"


            def from_user(m: Message) -> bool:
                return m.sender_type == "user" and m.type == "msg"
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(sample),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert "sample.py:6:" in errors[0]
    assert "Non-overlapping equality check" in errors[0]
    assert "Literal['operator']" in errors[0]
