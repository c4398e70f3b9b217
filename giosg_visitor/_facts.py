"""Protocol facts the SDK relies on, in one place, each marked documented or inferred.

Giosg documents most of the visitor API; where it is silent the SDK acts on an inference
from giosg's own code and from what its servers send. Such inferences live here, one
named constant or function each, so that when Giosg documents (or changes) a fact there
is exactly one line to fix. Every fact carries a one-line note: ``documented`` (giosg's
docs or giosg-authored code show it) or ``inferred`` (our best reading, unconfirmed).
"""

from __future__ import annotations

from typing import Any, Final


__all__ = [
    "ACTION_LABEL_FIELD",
    "CHOICE_DISABLES_WHOLE_MESSAGE",
    "CHOICE_MESSAGE_TYPE",
    "CHOICE_TEXT_SENT",
    "LATER_CHOICE_IS_VISITOR_MESSAGE",
    "choice_body",
]


# Rich messages: attachments, actions and the visitor's choice ----------------------------

#: documented (giosg's demo bot): a visitor's click is a message of this ``type`` that
#: carries ``response_value`` and the ``response_to_*`` ids of what was clicked.
CHOICE_MESSAGE_TYPE: Final = "action"

#: inferred: a button's label is its ``text`` field (the documented fields are ``type``,
#: ``value``, ``style`` and the two ``is_disabled_on_*`` flags).
ACTION_LABEL_FIELD: Final = "text"

#: inferred: the choice also carries the button's label as ``message`` so that an
#: operator console that shows ``message`` shows what the visitor chose.
CHOICE_TEXT_SENT: Final = True

#: inferred: ``is_disabled_on_selection`` disables the action once the visitor has chosen
#: any action of the same message (not only this one).
CHOICE_DISABLES_WHOLE_MESSAGE: Final = True

#: inferred: for ``is_disabled_on_visitor_message`` a later choice counts as a visitor
#: message, like a typed one.
LATER_CHOICE_IS_VISITOR_MESSAGE: Final = True


def choice_body(
    *, message_id: str, attachment_id: str, action_id: str, text: str | None
) -> dict[str, Any]:
    """The JSON body that posts a visitor's choice.

    inferred: Giosg does not document how a visitor client posts a choice; this posts the
    ordinary message endpoint with ``type: "action"`` and the three ``response_to_*`` ids,
    and the server fills in ``response_value`` from the action.
    """
    body: dict[str, Any] = {
        "type": CHOICE_MESSAGE_TYPE,
        "response_to_message_id": message_id,
        "response_to_attachment_id": attachment_id,
        "response_to_action_id": action_id,
    }
    if CHOICE_TEXT_SENT and text:
        body["message"] = text
    return body
