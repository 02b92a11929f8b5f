"""The sans-I/O core against reply shapes of real services (tests/redfish/replies/*.json:
DMTF mockups, iDRAC, iLO, OpenBMC's bmcweb, sushy-tools), plus Hypothesis."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redfish import proto
from redfish.errors import BadReplyError, UnsupportedActionError

REPLIES = Path(__file__).parent / "replies"


def reply(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((REPLIES / name).read_text())
    return doc


def raw(name: str) -> bytes:
    return (REPLIES / name).read_bytes()


# ---- service root and collections -------------------------------------------------------


def test_dmtf_service_root_names_systems_and_sessions() -> None:
    root = proto.parse_service_root(reply("dmtf_service_root.json"))
    assert root == proto.ServiceRoot(
        systems="/redfish/v1/Systems",
        sessions="/redfish/v1/SessionService/Sessions",
        version="1.15.0",
    )


def test_sushy_tools_root_has_no_session_service() -> None:
    root = proto.parse_service_root(reply("sushy_tools_service_root.json"))
    assert root.systems == "/redfish/v1/Systems"
    assert root.sessions is None


def test_root_with_only_a_session_service_link_uses_the_spec_path() -> None:
    doc = {"Systems": {"@odata.id": "/redfish/v1/Systems"}, "SessionService": {"@odata.id": "/x"}}
    assert proto.parse_service_root(doc).sessions == proto.DEFAULT_SESSIONS


def test_a_root_without_systems_is_a_bad_reply() -> None:
    with pytest.raises(BadReplyError, match="no Systems collection"):
        proto.parse_service_root({"Chassis": {"@odata.id": "/redfish/v1/Chassis"}})


def test_single_system_collection_chooses_it() -> None:
    members = proto.parse_collection(reply("dmtf_systems.json"))
    assert members == ("/redfish/v1/Systems/437XR1138R2",)
    assert proto.choose_system(members, "/redfish/v1/Systems") == members[0]


def test_several_systems_name_them_all_in_the_error() -> None:
    members = proto.parse_collection(reply("dmtf_multi_systems.json"))
    with pytest.raises(BadReplyError) as caught:
        proto.choose_system(members, "/redfish/v1/Systems")
    message = str(caught.value)
    assert "/redfish/v1/Systems/node1" in message and "/redfish/v1/Systems/node2" in message
    assert "system_id" in message and "\n" not in message


def test_empty_collection_and_bad_members() -> None:
    with pytest.raises(BadReplyError, match="no systems"):
        proto.choose_system((), "/redfish/v1/Systems")
    with pytest.raises(BadReplyError, match=r"without an @odata\.id"):
        proto.parse_collection({"Members": [{"Name": "x"}]})


@pytest.mark.parametrize(
    ("system_id", "expected"),
    [
        ("/redfish/v1/Systems/1", "/redfish/v1/Systems/1"),
        ("System.Embedded.1", "/redfish/v1/Systems/System.Embedded.1"),
    ],
)
def test_system_id_as_path_or_id(system_id: str, expected: str) -> None:
    assert proto.system_path(system_id, "/redfish/v1/Systems") == expected


def test_system_id_that_is_neither() -> None:
    with pytest.raises(ValueError, match="neither a path nor an id"):
        proto.system_path("a/b", "/redfish/v1/Systems")


# ---- ComputerSystem ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "power_on", "state", "health"),
    [
        ("dmtf_system.json", True, "On", "ok"),
        ("idrac_system.json", False, "Off", "critical"),
        ("ilo_system.json", True, "PoweringOn", "warning"),
        ("openbmc_system.json", False, "Off", "ok, rollup warning"),
    ],
)
def test_vendor_systems(name: str, power_on: bool, state: str, health: str) -> None:
    reading = proto.parse_system(reply(name))
    assert reading.power_on is power_on
    assert reading.power_state == state
    assert reading.health == health


def test_dmtf_reset_action_inline_allowable_values() -> None:
    reset = proto.parse_system(reply("dmtf_system.json")).reset
    assert reset is not None
    assert reset.target == "/redfish/v1/Systems/437XR1138R2/Actions/ComputerSystem.Reset"
    assert reset.allowed is not None and "ForceRestart" in reset.allowed
    assert reset.action_info is None


def test_ilo_target_keeps_its_trailing_slash() -> None:
    reset = proto.parse_system(reply("ilo_system.json")).reset
    assert (
        reset is not None and reset.target == "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset/"
    )
    assert reset.allowed is not None and "PowerCycle" not in reset.allowed


def test_openbmc_publishes_only_an_action_info() -> None:
    reset = proto.parse_system(reply("openbmc_system.json")).reset
    assert reset is not None
    assert reset.allowed is None
    assert reset.action_info == "/redfish/v1/Systems/system/ResetActionInfo"
    allowed = proto.parse_action_info(reply("openbmc_reset_action_info.json"))
    assert allowed is not None and {"On", "ForceOff", "ForceRestart"} <= allowed


def test_power_state_reset_is_not_a_state() -> None:
    with pytest.raises(BadReplyError, match="PowerState 'Reset' is not a power state"):
        proto.parse_system(reply("ilo_system_reset_state.json"))


@pytest.mark.parametrize("value", [None, "Unknown", "on", 1, True, ["On"]])
def test_anything_but_the_four_words_is_a_bad_reply(value: Any) -> None:
    doc = reply("dmtf_system.json")
    doc["PowerState"] = value
    with pytest.raises(BadReplyError):
        proto.parse_system(doc)


def test_a_chassis_is_not_a_computer_system() -> None:
    with pytest.raises(BadReplyError, match=r"not a ComputerSystem \(#Chassis"):
        proto.parse_system(reply("dmtf_chassis.json"))


def test_a_service_root_is_not_a_computer_system() -> None:
    with pytest.raises(BadReplyError, match="not a ComputerSystem"):
        proto.parse_system(reply("dmtf_service_root.json"))


def test_untyped_system_is_recognised_by_its_fields() -> None:
    doc = reply("dmtf_system.json")
    del doc["@odata.type"]
    assert proto.parse_system(doc).power_on is True
    with pytest.raises(BadReplyError):
        proto.parse_system({"PowerState": "On"})


def test_unknown_health_words_are_not_reported() -> None:
    assert proto.parse_health({"Health": "Degraded"}) is None
    assert proto.parse_health({"Health": "Warning", "HealthRollup": "Critical"}) == (
        "warning, rollup critical"
    )
    assert proto.parse_health(None) is None


# ---- power actions ----------------------------------------------------------------------

EVERYTHING = frozenset({"On", "ForceOff", "GracefulShutdown", "ForceRestart"})


@pytest.mark.parametrize(
    ("action", "allowed", "plan"),
    [
        ("on", EVERYTHING, ("On",)),
        ("off", EVERYTHING, ("ForceOff",)),
        ("soft", EVERYTHING, ("GracefulShutdown",)),
        ("reset", EVERYTHING, ("ForceRestart",)),
        ("cycle", EVERYTHING, ("ForceRestart",)),
        ("cycle", frozenset({"On", "ForceOff"}), ("ForceOff", "On")),
        ("on", frozenset({"ForceOn"}), ("ForceOn",)),
        ("cycle", None, ("ForceRestart",)),  # the service does not say: anything goes
    ],
)
def test_reset_plans(action: str, allowed: frozenset[str] | None, plan: tuple[str, ...]) -> None:
    assert proto.reset_plan(action, allowed) == plan


def test_ibm_bmcweb_without_force_restart_cycles_by_off_then_on() -> None:
    allowed = proto.parse_action_info(reply("openbmc_ibm_reset_action_info.json"))
    assert proto.reset_plan("cycle", allowed) == ("ForceOff", "On")
    with pytest.raises(UnsupportedActionError, match="ForceRestart"):
        proto.reset_plan("reset", allowed)


def test_unknown_action_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown power action 'nmi'"):
        proto.reset_plan("nmi", None)


def test_reset_body() -> None:
    assert json.loads(proto.reset_body("ForceOff")) == {"ResetType": "ForceOff"}


# ---- tasks and errors -------------------------------------------------------------------


def test_tasks() -> None:
    running = proto.parse_task(reply("dmtf_task_running.json"))
    assert (running.done, running.failed) == (False, False)
    done = proto.parse_task(reply("dmtf_task_completed.json"))
    assert (done.done, done.failed) == (True, False)
    failed = proto.parse_task(reply("dmtf_task_exception.json"))
    assert (failed.done, failed.failed) == (True, True)
    assert failed.message == (
        "The request failed due to an internal service error. The service is still operational."
    )
    with pytest.raises(BadReplyError, match="TaskState"):
        proto.parse_task({"TaskState": "Finished"})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "idrac_conflict_409.json",
            "The value 'On' for the property ResetType conflicts with the current power state.",
        ),
        ("ilo_error_400.json", "iLO.2.15.InvalidOperationForSystemState"),
        ("idrac_session_limit_503.json", "Unable to complete the operation because the number"),
        ("openbmc_unauthorized_401.json", "While attempting to establish a connection"),
    ],
)
def test_error_bodies_become_one_line(name: str, message: str) -> None:
    text = proto.error_message(raw(name))
    assert text is not None and text.startswith(message)
    assert "\n" not in text and len(text) <= proto.MAX_MESSAGE


def test_error_body_fallbacks() -> None:
    assert proto.error_message(b'{"error": {"code": "Base.1.0.GeneralError"}}') == (
        "Base.1.0.GeneralError"
    )
    assert proto.error_message(b"<html>Service Unavailable</html>") is None
    assert proto.error_message(b'["x"]') is None
    long = json.dumps({"error": {"message": "x" * 1000}}).encode()
    assert len(proto.error_message(long) or "") == proto.MAX_MESSAGE


def test_decode_json_rejects_garbage_and_non_objects() -> None:
    with pytest.raises(BadReplyError, match="system: the reply is not JSON"):
        proto.decode_json(b"\xff\xfe garbage", "system")
    with pytest.raises(BadReplyError, match="not an object"):
        proto.decode_json(b"[1, 2]", "system")


def test_locations_as_paths() -> None:
    assert proto.resource_path("https://10.1.2.3/redfish/v1/TaskService/Tasks/5") == (
        "/redfish/v1/TaskService/Tasks/5"
    )
    assert proto.resource_path("/redfish/v1/SessionService/Sessions/7") == (
        "/redfish/v1/SessionService/Sessions/7"
    )
    with pytest.raises(BadReplyError):
        proto.resource_path("Sessions/7")


# ---- Hypothesis: arbitrary JSON gives a value or BadReplyError, nothing else -------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Objects that look enough like Redfish for the parsers to go deep.
redfish_keys = st.sampled_from(
    [
        "@odata.type",
        "@odata.id",
        "PowerState",
        "Status",
        "Health",
        "HealthRollup",
        "Actions",
        "#ComputerSystem.Reset",
        "target",
        "ResetType@Redfish.AllowableValues",
        "@Redfish.ActionInfo",
        "Parameters",
        "Name",
        "AllowableValues",
        "Members",
        "Systems",
        "Links",
        "Sessions",
        "TaskState",
        "TaskStatus",
        "Messages",
        "Message",
        "error",
        "@Message.ExtendedInfo",
        "SystemType",
    ]
)
redfish_words = st.sampled_from(
    ["On", "Off", "PoweringOn", "Reset", "OK", "Critical", "ResetType", "Running", "Completed",
     "Exception", "#ComputerSystem.v1_0_0.ComputerSystem", "/redfish/v1/Systems/1", "", "x"]
)  # fmt: skip
redfish_like = st.recursive(
    st.none() | st.booleans() | st.integers() | redfish_words,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(redfish_keys, children, max_size=6)
    ),
    max_leaves=30,
)
PARSERS: list[Callable[[Any], object]] = [
    proto.parse_service_root,
    proto.parse_collection,
    proto.parse_system,
    proto.parse_action_info,
    proto.parse_task,
]


def _every_parser(doc: Any) -> None:
    for parser in PARSERS:
        with contextlib.suppress(BadReplyError):
            parser(doc)
    proto.parse_health(doc)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_arbitrary_json_objects(doc: dict[str, Any]) -> None:
    _every_parser(doc)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(redfish_keys, redfish_like, max_size=8))
def test_redfish_shaped_json(doc: dict[str, Any]) -> None:
    _every_parser(doc)
    try:
        reading = proto.parse_system(doc)
    except BadReplyError:
        return
    assert reading.power_on is proto.POWER_STATES[reading.power_state]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | json_values.map(lambda value: json.dumps(value).encode()))
def test_arbitrary_bodies(body: bytes) -> None:
    try:
        doc = proto.decode_json(body, "system")
    except BadReplyError:
        pass
    else:
        _every_parser(doc)
    text = proto.error_message(body)
    assert text is None or ("\n" not in text and len(text) <= proto.MAX_MESSAGE)
