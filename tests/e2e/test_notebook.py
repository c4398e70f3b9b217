"""The HTML transcript, and examples/notebook.ipynb executed in a real Jupyter kernel."""

from __future__ import annotations

import html
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ipykernel.kernelspec
import nbclient
import nbformat
import pytest

from giosg_visitor.models import Message
from giosg_visitor.notebook import Transcript, transcript_html


NOTEBOOK = Path(__file__).resolve().parent.parent.parent / "examples" / "notebook.ipynb"
KERNEL_NAME = "giosg-visitor-tests"

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _read_notebook() -> Any:
    """examples/notebook.ipynb as an nbformat v4 node (nbformat is untyped)."""
    return nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]


def _message(**kwargs: Any) -> Message:
    kwargs.setdefault("id", f"m{len(kwargs)}")
    return Message(**kwargs)


CONVERSATION = [
    _message(
        id="1", sender_type="visitor", sender_id="v1", message="Hi <b>there</b>", created_at=AT
    ),
    _message(id="2", type="join", sender_type="user", sender_public_name="Olivia"),
    _message(id="3", sender_type="user", sender_public_name="Olivia", message="Hello & welcome"),
    _message(id="4", type="leave", sender_type="user", sender_public_name="Olivia"),
]


class TestTranscript:
    """transcript_html() and Transcript render a chat safely."""

    def test_escapes_everything_from_the_server(self) -> None:
        """Message text, names and the title are HTML-escaped."""
        evil = _message(
            sender_type="user",
            sender_public_name='<img src=x onerror="alert(1)">',
            message="<script>alert(2)</script>",
        )
        out = transcript_html([evil], title="<i>t</i>")
        assert "<script>" not in out
        assert "<img" not in out
        assert "<i>t</i>" not in out
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in out
        assert "&lt;i&gt;t&lt;/i&gt;" in out

    def test_visitor_and_operator_bubbles_and_system_lines(self) -> None:
        """Visitor and operator messages are styled apart; joins and leaves are lines."""
        out = transcript_html(CONVERSATION, title="Support")
        assert out.count('class="giosg-message giosg-visitor"') == 1
        assert out.count('class="giosg-message giosg-operator"') == 1
        assert out.count('class="giosg-system"') == 2
        assert "Olivia joined the chat" in out
        assert "Olivia left the chat" in out
        assert "Hi &lt;b&gt;there&lt;/b&gt;" in out
        assert "Visitor · 03:04:05" in out
        assert ">Support</div>" in out

    def test_empty(self) -> None:
        """An empty transcript says so."""
        assert "No messages yet." in transcript_html([])

    def test_transcript_object(self) -> None:
        """Transcript has an HTML repr for Jupyter, a short repr and a plain-text str."""
        transcript = Transcript(CONVERSATION, title="Support")
        assert transcript._repr_html_() == transcript_html(CONVERSATION, title="Support")
        assert repr(transcript) == "<Transcript 'Support' messages=4>"
        assert repr(Transcript([])) == "<Transcript messages=0>"
        assert str(transcript).splitlines() == [
            "Support",
            "[03:04:05] Visitor: Hi <b>there</b>",
            "* Olivia joined the chat",
            "Olivia: Hello & welcome",
            "* Olivia left the chat",
        ]
        assert list(transcript) == CONVERSATION
        assert len(transcript) == 4
        assert transcript.messages == tuple(CONVERSATION)
        assert transcript.title == "Support"

    def test_never_renders_extra_fields(self) -> None:
        """Only public message fields are shown, never the raw extra mapping."""
        message = _message(sender_type="user", message="hi", extra={"token": "s3cr3t"})
        assert "s3cr3t" not in transcript_html([message])
        assert "s3cr3t" not in str(Transcript([message]))


def test_committed_notebook_has_no_outputs() -> None:
    """The committed notebook is clean: no outputs, no execution counts."""
    notebook = _read_notebook()
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs this interpreter (the venv's), whatever else is installed."""
    prefix = tmp_path / "jupyter"
    ipykernel.kernelspec.install(prefix=str(prefix), kernel_name=KERNEL_NAME)
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    spec = json.loads((prefix / "share/jupyter/kernels" / KERNEL_NAME / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    return KERNEL_NAME


def test_notebook_runs_clean(tmp_path: Path, kernel_name: str) -> None:
    """The notebook runs clean in a real kernel, shows HTML transcripts, leaks no secret."""
    notebook = _read_notebook()
    probe = nbformat.v4.new_code_cell(  # type: ignore[no-untyped-call]
        "import json\nprint(json.dumps([*giosg.state.visitors, *giosg.state.tokens]))"
    )
    notebook.cells.append(probe)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError if any cell fails

    secrets = json.loads(notebook.cells.pop().outputs[0]["text"])
    assert len(secrets) >= 4  # two visitors: a secret and a token each, at least
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"], "the kernel complained"

    transcripts = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(transcripts) == 3
    assert all('class="giosg-transcript"' in page for page in transcripts)
    first, whole, blocking = transcripts
    bot_hello = html.escape("Hello! I'm the demo bot. Ask me anything.")
    assert "Hello!" in first
    assert bot_hello in first
    assert "Demo Bot joined the chat" in first
    for text in ("Hello!", bot_hello, "Thanks, bye!", "Goodbye, and thanks for chatting!"):
        assert text in whole
    assert "Hi from the blocking API" in blocking

    shown = json.dumps([dict(output) for output in outputs])
    assert "state=authenticated" in shown
    assert "<sync.Visitor" in shown
    for secret in secrets:
        assert secret not in shown
