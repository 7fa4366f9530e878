"""The step table as cases: a plan and the facts in, the exact actions out (what a deploy does, a dry run shows)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runner.core import steps
from runner.core.facts import Facts, Observed, Target
from runner.core.plan import Plan
from runner.core.steps import Action

REPOSITORY = "ghcr.io/acme/trader/runtime"
IMAGE = f"{REPOSITORY}:1.0.3"
OLD_IMAGE = f"{REPOSITORY}:1.0.2"
DIGEST = "sha256:" + "a" * 64
ENV_NAMES = ("RUNTIME_API_TOKEN", "RUNTIME_ENV", "RUNTIME_LOG_LEVEL")
VARIABLES = "RUNTIME_API_TOKEN, RUNTIME_ENV, RUNTIME_LOG_LEVEL"
JSON_FILE = {"Type": "json-file", "Config": {"max-size": "50m", "max-file": "5"}}
DEV = Target(
    environment="dev",
    container="runtime-dev",
    binds=("/srv/runtime/dev:/var/lib/runtime:rw",),
    restart_policy="unless-stopped",
    log_config=JSON_FILE,
)
PROD = Target(environment="prod", container="runtime-prod", binds=(), restart_policy="always", log_config=None)
STEP_NAMES = ["pull", "stop_remove", "start", "verify"]


def plan(
    env: str = "dev", *, pull_timeout: int = 600, stop_timeout: int = 30, verify: tuple[int, int] = (60, 5)
) -> Plan:
    """plans/runtime.yaml rendered for `env` and the tag 1.0.3."""
    return Plan(
        source="t",
        data={
            "version": 1,
            "plan": "runtime",
            "environment": env,
            "image": IMAGE,
            "steps": [
                {"name": "Pull the runtime image", "action": "pull", "timeout": pull_timeout},
                {"name": "Stop and remove the current runtime", "action": "stop_remove", "stop_timeout": stop_timeout},
                {"name": "Start the new runtime", "action": "start"},
                {
                    "name": "Verify the runtime stays up",
                    "action": "verify",
                    "timeout": verify[0],
                    "stable_for": verify[1],
                },
            ],
        },
    )


def current(state: str, name: str = "runtime-dev") -> Observed:
    """The environment's container as Docker would report it in `state`."""
    return Observed(
        name=name,
        id="c-old",
        state=state,
        image=OLD_IMAGE,
        digest="sha256:" + "b" * 64,
        started_at="2026-11-30T10:00:00Z",
        restart_count=0,
    )


def full(**changes: Any) -> Facts:
    """Everything the agent knows on the server for dev."""
    facts = Facts(
        target=DEV,
        current=current("running"),
        known_digest=None,
        digest_known=True,
        env_names=ENV_NAMES,
        deployment_id="d-123",
    )
    return dataclasses.replace(facts, **changes)


# -- pull

PULL_OPTIONS = {"repository": REPOSITORY, "tag": "1.0.3", "timeout": 600}


@pytest.mark.parametrize(
    ("facts", "guard", "known"),
    [
        pytest.param(
            Facts(),
            "refused if the tag now names another digest than when it was first deployed",
            None,
            id="local dry run: digest not looked up",
        ),
        pytest.param(
            full(known_digest=DIGEST),
            f"the tag must still name {DIGEST}, as when it was first deployed",
            DIGEST,
            id="known digest",
        ),
        pytest.param(full(), "first deploy of this tag: its digest will be recorded", None, id="first deploy"),
    ],
)
def test_pull(facts: Facts, guard: str, known: str | None) -> None:
    assert steps.pull(plan(), facts) == [
        Action(
            "pull",
            f"pull {IMAGE} from the registry (at most 600 s); {guard}",
            f"pulled {IMAGE}",
            {**PULL_OPTIONS, "known_digest": known},
        )
    ]


def test_pull_takes_its_timeout_from_the_plan() -> None:
    [action] = steps.pull(plan(pull_timeout=120), full())
    assert action.options["timeout"] == 120
    assert action.description.startswith(f"pull {IMAGE} from the registry (at most 120 s); ")


# -- stop_remove

STOP = Action(
    "stop",
    f"stop runtime-dev ({{state}}, {OLD_IMAGE}; SIGTERM, SIGKILL after 30 s)",
    "stopped runtime-dev",
    {"container": "c-old", "timeout": 30},
)
REMOVE = Action("remove", f"remove runtime-dev ({OLD_IMAGE})", "removed runtime-dev", {"container": "c-old"})


def stop(state: str) -> Action:
    return dataclasses.replace(STOP, description=STOP.description.format(state=state))


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        pytest.param(
            None,
            [
                Action(
                    "nothing",
                    "stop the dev container (SIGTERM, SIGKILL after 30 s) and remove it, if there is one",
                    "stop the dev container (SIGTERM, SIGKILL after 30 s) and remove it, if there is one",
                )
            ],
            id="local dry run: not known",
        ),
        pytest.param(
            Observed.absent("runtime-dev"),
            [
                Action(
                    "nothing",
                    "no container named runtime-dev: nothing to stop or remove",
                    "no container named runtime-dev: nothing to stop or remove",
                )
            ],
            id="absent",
        ),
        pytest.param(current("running"), [stop("running"), REMOVE], id="running: stop, then remove"),
        pytest.param(current("restarting"), [stop("restarting"), REMOVE], id="restarting: stop, then remove"),
        pytest.param(current("paused"), [stop("paused"), REMOVE], id="paused: stop, then remove"),
        pytest.param(current("exited"), [REMOVE], id="exited: only remove"),
        pytest.param(current("created"), [REMOVE], id="created: only remove"),
        pytest.param(current("dead"), [REMOVE], id="dead: only remove"),
    ],
)
def test_stop_remove(observed: Observed | None, expected: list[Action]) -> None:
    assert steps.stop_remove(plan(), full(current=observed)) == expected


def test_stop_remove_takes_the_grace_period_from_the_plan_and_the_environment_from_the_plan() -> None:
    [nothing] = steps.stop_remove(plan("prod", stop_timeout=5), Facts())
    assert nothing.description == "stop the prod container (SIGTERM, SIGKILL after 5 s) and remove it, if there is one"
    [stopping, _] = steps.stop_remove(plan(stop_timeout=5), full())
    assert stopping.options == {"container": "c-old", "timeout": 5}
    assert stopping.description.endswith("; SIGTERM, SIGKILL after 5 s)")


@pytest.mark.parametrize("state", ["running", "restarting", "paused"])
def test_with_no_grace_the_forced_remove_kills_in_one_call(state: str) -> None:
    [removing] = steps.stop_remove(plan(stop_timeout=0), full(current=current(state)))
    assert (removing.kind, removing.options) == ("remove", {"container": "c-old"})
    assert removing.description.endswith("(SIGKILL: stop_timeout is 0)")


def test_with_no_grace_an_exited_container_is_only_removed() -> None:
    [removing] = steps.stop_remove(plan(stop_timeout=0), full(current=current("exited")))
    assert removing.kind == "remove" and "SIGKILL" not in removing.description


# -- start

LOCAL_START = (
    f"create and start a new dev container from {IMAGE} with the server's name, volumes, restart policy and log "
    "settings, and the variables {variables}"
)


@pytest.mark.parametrize(
    ("env_names", "variables"),
    [pytest.param(ENV_NAMES, VARIABLES, id="variables named"), pytest.param((), "none", id="no variables")],
)
def test_start_without_a_target_names_the_variables(env_names: tuple[str, ...], variables: str) -> None:
    text = LOCAL_START.format(variables=variables)
    assert steps.start(plan(), Facts(env_names=env_names)) == [Action("nothing", text, text)]


@pytest.mark.parametrize(
    ("facts", "description", "options"),
    [
        pytest.param(
            full(),
            f"create runtime-dev from {IMAGE} with /srv/runtime/dev:/var/lib/runtime:rw, restart policy "
            f"unless-stopped, json-file logs (max-size=50m, max-file=5), variables {VARIABLES}",
            {
                "name": "runtime-dev",
                "image": IMAGE,
                "binds": ["/srv/runtime/dev:/var/lib/runtime:rw"],
                "restart_policy": "unless-stopped",
                "log_config": JSON_FILE,
                "labels": {
                    "deployplan.deployment-id": "d-123",
                    "deployplan.environment": "dev",
                    "deployplan.tag": "1.0.3",
                },
                "env_names": list(ENV_NAMES),
            },
            id="dev: a volume, json-file logs, a deployment id",
        ),
        pytest.param(
            full(target=PROD, deployment_id=None, env_names=()),
            f"create runtime-prod from {IMAGE} with no volumes, restart policy always, the Docker daemon's "
            "configured log driver, variables none",
            {
                "name": "runtime-prod",
                "image": IMAGE,
                "binds": [],
                "restart_policy": "always",
                "log_config": None,
                "labels": {
                    "deployplan.deployment-id": "(assigned when deployed)",
                    "deployplan.environment": "prod",
                    "deployplan.tag": "1.0.3",
                },
                "env_names": [],
            },
            id="prod: no volumes, daemon logs, no deployment id yet",
        ),
    ],
)
def test_start_with_a_target_creates_then_starts(facts: Facts, description: str, options: dict[str, Any]) -> None:
    assert facts.target is not None
    name, image = facts.target.container, IMAGE
    assert steps.start(plan(facts.target.environment), facts) == [
        Action("create", description, f"created {name} from {image}", options),
        Action("start", f"start {name}", f"started {name}", {"name": name}),
    ]


def test_create_options_are_plain_lists_the_executor_can_take() -> None:
    [create, _] = steps.start(plan(), full())
    assert type(create.options["binds"]) is list and type(create.options["env_names"]) is list


# -- verify


@pytest.mark.parametrize(
    ("facts", "container"),
    [pytest.param(Facts(), "the container", id="local dry run"), pytest.param(full(), "runtime-dev", id="on server")],
)
def test_verify(facts: Facts, container: str) -> None:
    assert steps.verify(plan(), facts) == [
        Action(
            "wait_stable",
            f"within 60 s, {container} must be running (and healthy, if the image has a healthcheck) and stay up "
            "without a restart for 5 s",
            f"{container} is running and stayed up for 5 s",
            {"container": container, "timeout": 60, "stable_for": 5},
        )
    ]


def test_verify_takes_timeout_and_stable_for_from_the_plan() -> None:
    [action] = steps.verify(plan(verify=(120, 30)), full())
    assert action.options == {"container": "runtime-dev", "timeout": 120, "stable_for": 30}
    assert action.description.startswith("within 120 s, runtime-dev must be running")
    assert action.done == "runtime-dev is running and stayed up for 30 s"


# -- the table as a whole


def test_builders_are_the_four_steps_in_order() -> None:
    assert list(steps.BUILDERS) == STEP_NAMES
    assert [step["action"] for step in plan().step_names()] == STEP_NAMES


def test_describe_a_local_dry_run() -> None:
    described = steps.describe(plan(), Facts(env_names=ENV_NAMES))
    assert [name for name, _ in described] == STEP_NAMES
    assert dict(described) == {
        "pull": f"pull {IMAGE} from the registry (at most 600 s); refused if the tag now names another digest than "
        "when it was first deployed",
        "stop_remove": "stop the dev container (SIGTERM, SIGKILL after 30 s) and remove it, if there is one",
        "start": LOCAL_START.format(variables=VARIABLES),
        "verify": "within 60 s, the container must be running (and healthy, if the image has a healthcheck) and "
        "stay up without a restart for 5 s",
    }


def test_describe_on_the_server_joins_each_steps_actions() -> None:
    described = steps.describe(plan(), full(known_digest=DIGEST))
    assert [name for name, _ in described] == STEP_NAMES
    assert dict(described)["stop_remove"] == f"{stop('running').description}; {REMOVE.description}"
    assert dict(described)["start"] == (
        f"create runtime-dev from {IMAGE} with /srv/runtime/dev:/var/lib/runtime:rw, restart policy unless-stopped, "
        f"json-file logs (max-size=50m, max-file=5), variables {VARIABLES}; start runtime-dev"
    )
    assert f"the tag must still name {DIGEST}" in dict(described)["pull"]
    assert dict(described)["verify"].startswith("within 60 s, runtime-dev must be running")


@pytest.mark.parametrize(
    ("log_config", "described"),
    [
        pytest.param(JSON_FILE, "json-file logs (max-size=50m, max-file=5)", id="json-file"),
        pytest.param(
            {"Type": "json-file", "Config": {"max-size": "10k", "max-file": "1"}},
            "json-file logs (max-size=10k, max-file=1)",
            id="json-file small",
        ),
        pytest.param(None, "the Docker daemon's configured log driver", id="daemon"),
    ],
)
def test_target_describe_logs(log_config: dict[str, Any] | None, described: str) -> None:
    assert dataclasses.replace(DEV, log_config=log_config).describe_logs() == described


# -- no secret value can reach an action


def test_facts_carry_variable_names_never_values() -> None:
    assert [f.name for f in dataclasses.fields(Facts)] == [
        "target",
        "current",
        "known_digest",
        "digest_known",
        "env_names",
        "deployment_id",
    ]


@pytest.mark.parametrize(
    "facts",
    [pytest.param(Facts(env_names=ENV_NAMES), id="local"), pytest.param(full(known_digest=DIGEST), id="server")],
)
def test_actions_name_variables_and_hold_no_value(facts: Facts) -> None:
    """The builders see variable names only (Facts holds no value: test_facts_carry_variable_names_never_values);
    no action carries an environment of its own, and create names exactly the variables it will be given."""
    actions = [action for build in steps.BUILDERS.values() for action in build(plan(), facts)]

    for action in actions:
        assert not {"env", "environment"} & set(action.options)
    created = [a for a in actions if a.kind == "create"]
    assert [a.options["env_names"] for a in created] == ([list(ENV_NAMES)] if facts.target else [])
