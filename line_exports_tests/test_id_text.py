"""Reference parameters as TD's references write them: IDs and tokens as YAML/JSON numbers load
with their exact digits; the LINE Messaging reference's five CLI ``--result`` examples load;
``schedule: ""`` is a workflow with no schedule."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from line_exports.id_text import IdText
from line_exports.workflows import load_folder


class Ids(BaseModel):
    value: IdText


def test_integers_keep_their_digits_and_floats_are_refused() -> None:
    assert Ids(value=1234).value == "1234"
    assert Ids(value=12345678901234567890123).value == "12345678901234567890123"  # no float detour
    assert Ids(value="0012").value == "0012"
    with pytest.raises(ValidationError, match="quote the ID"):
        Ids(value=1.5e9)
    with pytest.raises(ValidationError, match="not an ID"):
        Ids(value=True)


# The reference's examples (line-messaging-export, "Export Integration Using the CLI"), each an
# ``out:`` block; the two authentication examples end in "..." where the rest of the settings
# go: here the audience settings of the third example.
AUDIENCE = """\
  target: audience
  audience_name: test group
"""
EXAMPLES = {
    "channel_token": """\
out:
  type: line_messaging
  access_token: xxxx
  auth_method: channel_access_token
"""
    + AUDIENCE,
    "short_lived_token": """\
out:
  type: line_messaging
  client_id: 1234
  client_secret: xxxx
  auth_method: short_lived_token
"""
    + AUDIENCE,
    "upload_audience": """\
out:
  type: line_messaging
  access_token: xxxx
  auth_method: channel_access_token
  target: audience
  audience_name: test group
  use_audience_id: true
  audience_id: 33948315694
  is_ifa_audience: true
""",
    "push_message": """\
out:
  type: line_messaging
  access_token: xxxx
  auth_method: channel_access_token
  target: push_message
  template_message: |
    {
    "type": "textV2",
    "text": "Welcome, {user1}! {laugh}\\n{everyone} There is a newcomer!",
    "substitution": {
    "user1": {
    "type": "mention",
    "mentionee": {
    "type": "user",
    "userId": "{{user_1_id}}"
    }
    },
    "laugh": {
    "type": "emoji",
    "productId": "{{emoji_product_id}}",
    "emojiId": "{{emoji_id}}"
    },
    "everyone": {
    "type": "mention",
    "mentionee": {
    "type": "all"
    }
    }
    }
    }
  skip_invalid_message: true
""",
    # The reference's multicast example closes its JSON with one '}' too many; this is it with
    # the braces balanced.
    "multicast_message": """\
out:
  type: line_messaging
  target: multicast_message
  access_token: xxxx
  auth_method: channel_access_token
  template_message_multicast: |
    {
    "type": "textV2",
    "text": "Hi, new friend ! {laugh}",
    "substitution": {
    "laugh": {
    "type": "emoji",
    "productId": "670e0cce840a8236ddd4ee4c",
    "emojiId": "006"
    }
    }
    }
  skip_multicast_invalid_message: true
""",
}


def folder_with(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "wf"
    folder.mkdir(exist_ok=True)
    (folder / "q.sql").write_text("SELECT line_uid AS id FROM segment_users\n")
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_the_references_cli_result_examples_load(tmp_path: Path) -> None:
    files = {"connections.yaml": "connections: {}\n"}
    for name, text in EXAMPLES.items():
        files[f"{name}.yml"] = text
        files[f"{name}.dig"] = f"+export:\n  td>: q.sql\n  result: {name}.yml\n"
    loaded = load_folder(folder_with(tmp_path, files))
    assert loaded.errors == []
    tasks = {w.name: w.tasks[0] for w in loaded.workflows}
    assert set(tasks) == set(EXAMPLES)
    short = tasks["short_lived_token"]
    assert short.resource.client_id == "1234" and short.resource.auth_method == "short_lived_token"
    assert tasks["upload_audience"].settings["audience_id"] == 33948315694
    assert tasks["push_message"].settings["target"] == "push_message"
    # the same example inline in the .dig, as a YAML mapping
    inline = "+export:\n  td>: q.sql\n  result:\n" + textwrap.indent(
        EXAMPLES["short_lived_token"], "    "
    )
    loaded = load_folder(folder_with(tmp_path, {"inline.dig": inline}))
    assert loaded.errors == [] and loaded.get("inline").tasks[0].resource.client_id == "1234"


def test_unquoted_channel_and_account_ids(tmp_path: Path) -> None:
    connections = textwrap.dedent(
        """
        connections:
          capi:
            type: line_conversion
            line_tag_id: 1234
            line_channel_id: 1234567890
          li:
            type: linkedin
        """
    )
    dig = textwrap.dedent(
        """
        +capi:
          td>: q.sql
          result_connection: capi
        +li:
          td>: q.sql
          result_connection: li
          result_settings:
            ad_account_id: 512345678
            segment_name: vip
        """
    )
    loaded = load_folder(folder_with(tmp_path, {"connections.yaml": connections, "ids.dig": dig}))
    assert loaded.errors == []
    capi, li = loaded.get("ids").tasks
    assert capi.resource.line_channel_id == "1234567890" and capi.resource.line_tag_id == "1234"
    validated = li.destination.settings_class(**li.settings)
    assert validated.ad_account_id == "512345678"


def test_empty_schedule_is_no_schedule(tmp_path: Path) -> None:
    # the references' schedule table: '""' -- "Create a job that has no scheduled run time"
    dig = 'schedule: ""\n+export:\n  td>: q.sql\n  result: upload_audience.yml\n'
    files = {"manual.dig": dig, "upload_audience.yml": EXAMPLES["upload_audience"]}
    loaded = load_folder(folder_with(tmp_path, files))
    assert loaded.errors == []
    assert loaded.get("manual").schedule is None
    assert not list(loaded.definitions().schedules or [])


@pytest.mark.parametrize("digits", ["0123", "0339483158", "00012"])
def test_unquoted_ids_with_leading_zeros_keep_them(tmp_path: Path, digits: str) -> None:
    """YAML 1.1 reads ``0123`` as octal 83 and ``0339483158`` not at all (a crash): an unquoted
    number with a leading zero is text, its zeros kept, in connections.yaml and in a .dig."""
    connections = f"connections:\n  capi:\n    type: line_conversion\n    line_tag_id: {digits}\n"
    dig = textwrap.dedent(
        f"""
        +capi:
          td>: q.sql
          result_connection: capi
        +li:
          td>: q.sql
          result_connection: li
          result_settings:
            ad_account_id: {digits}
            segment_name: vip
        """
    )
    connections += "  li:\n    type: linkedin\n"
    loaded = load_folder(folder_with(tmp_path, {"connections.yaml": connections, "ids.dig": dig}))
    assert loaded.errors == []
    capi, li = loaded.get("ids").tasks
    assert capi.resource.line_tag_id == digits
    assert li.destination.settings_class(**li.settings).ad_account_id == digits
