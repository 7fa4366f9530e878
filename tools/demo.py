"""The demo: the whole job end to end on this machine, printing every command before it runs it.

A local registry with two versions of the example runtime, the real agent under gunicorn on loopback
(token auth, state in a temporary directory), then with the real CLI: lint, dry-run, apply, a failing apply,
the day-2 reads (history, the runtime's logs), a recovery, status, prune, and audit verify against the head
apply printed; and the read-only page. Everything it starts or creates is removed at the end.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import docker

import lab

# Unique per run, so two demos on one machine never touch each other's containers.
NAME = f"deployplan-demo-{secrets.token_hex(3)}"
REPOSITORY = "demo/trader"
FIRST, SECOND = "1.0.0", "1.1.0"


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def deployplan(*args: str, cwd: Path, env: dict[str, str], shown_env: str = "", expect: int = 0) -> str:
    """Run the real CLI, showing the command and its output; stop the demo if it exits otherwise than expected.
    Returns what it printed on stdout."""
    print(f"$ {shown_env}deployplan {shlex.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=env, capture_output=True, text=True)
    print(result.stdout + result.stderr, end="", flush=True)
    print(f"(exit {result.returncode})", flush=True)
    if result.returncode != expect:
        raise SystemExit(f"demo: expected exit {expect}, got {result.returncode}")
    return result.stdout


def page(url: str, token: str) -> None:
    """What a person's browser gets at the agent's URL: the read-only page (here with the demo's token)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        html = response.read().decode("utf-8")
        print(f"GET {url} -> {response.status} {response.headers['Content-Type']}")
        print(f"  Content-Security-Policy: {response.headers['Content-Security-Policy']}")
    title = re.search(r"<title>(.*?)</title>", html)
    print(f"  <title>{title.group(1) if title else '?'}</title>, {html.count('<tr>') - 1} deployments listed")


def workspace(root: Path, registry: str) -> Path:
    """The repository's plan, variable table and workflow, with the plan's registry pointed at the local one."""
    ws = root / "workspace"
    (ws / "plans").mkdir(parents=True)
    plan = (lab.REPO_ROOT / "plans" / "runtime.yaml").read_text()
    (ws / "plans" / "runtime.yaml").write_text(plan.replace("ghcr.io/", f"{registry}/"))
    shutil.copytree(lab.REPO_ROOT / "infra", ws / "infra", ignore=shutil.ignore_patterns("runtime"))
    shutil.copytree(lab.REPO_ROOT / ".github", ws / ".github")
    # The failing rehearsal: a table that wrongly marks RUNTIME_LOG_LEVEL optional.
    table = (ws / "infra" / "ENV_SCHEMA.md").read_text()
    (ws / "infra" / "ENV_SCHEMA.wrong.md").write_text(
        table.replace("| `RUNTIME_LOG_LEVEL` | yes |", "| `RUNTIME_LOG_LEVEL` | no |")
    )
    return ws


def main() -> None:
    client = docker.from_env()
    root = Path(tempfile.mkdtemp(prefix=f"{NAME}-"))
    registry = lab.Registry()
    agent: lab.AgentServer | None = None
    try:
        banner("a local registry with two versions of the example runtime")
        registry.start()
        image_repo = f"{registry.host}/{REPOSITORY}/runtime"
        for tag in (FIRST, SECOND):
            lab.build_runtime_image(client, f"{image_repo}:{tag}", label=tag)
            print(f"pushed {image_repo}:{tag} {lab.push(client, f'{image_repo}:{tag}')}")
        lab.remove_images(client, image_repo)  # the agent pulls them from the registry

        banner("the deploy agent under gunicorn on loopback (token auth, state in a temporary directory)")
        token = secrets.token_hex(24)
        state = root / "state"
        data = root / "data"
        data.mkdir()
        agent_env = {
            "PATH": os.environ.get("PATH", ""),
            **lab.agent_settings(
                state_dir=state,
                image_repository=image_repo,
                containers={"dev": f"{NAME}-dev", "prod": f"{NAME}-prod"},
                volumes={"dev": f"{data}:/var/lib/runtime:rw", "prod": "none"},
                token=token,
            ),
        }
        for key, value in agent_env.items():
            if key != "PATH":
                print(f"  {key}={'<generated>' if key == 'DEPLOY_AGENT_TOKEN' else value}")
        command = [sys.executable, "-c", "from agent.main import main; main()"]
        agent = lab.AgentServer(agent_env, log_path=root / "agent.log", command=command).start()
        print(f"agent up at {agent.url} (its JSON log: {root / 'agent.log'})")

        ws = workspace(root, registry.host)
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME_", "GITHUB_", "DEPLOY_"))}
        cli_env.update(
            DEPLOY_AGENT_URL=agent.url,
            DEPLOY_AGENT_TOKEN=token,
            RUNTIME_ENV="dev",
            RUNTIME_LOG_LEVEL="info",
            RUNTIME_API_TOKEN=f"demo-{secrets.token_hex(12)}",
        )
        shown = "RUNTIME_ENV=dev RUNTIME_LOG_LEVEL=info RUNTIME_API_TOKEN=<secret> "
        plan = ["plans/runtime.yaml", "--env", "dev", "--repository", REPOSITORY]

        banner("lint every plan, the variable table and the deploy workflow")
        deployplan("lint", cwd=ws, env=cli_env)
        banner(f"dry-run {FIRST} locally: the four actions, touching nothing")
        local = {k: v for k, v in cli_env.items() if k != "DEPLOY_AGENT_URL"}  # no agent: a local dry run
        deployplan("dry-run", *plan, "--tag", FIRST, cwd=ws, env=local, shown_env=shown)
        banner(f"deploy {FIRST}")
        deployplan("apply", *plan, "--tag", FIRST, cwd=ws, env=cli_env, shown_env=shown)
        banner(f"ask the agent what deploying {SECOND} would change")
        deployplan("dry-run", *plan, "--tag", SECOND, "--agent", agent.url, cwd=ws, env=cli_env, shown_env=shown)
        banner(f"deploy {SECOND}")
        deployplan("apply", *plan, "--tag", SECOND, cwd=ws, env=cli_env, shown_env=shown)

        banner("a deploy that fails: the table wrongly says RUNTIME_LOG_LEVEL is optional, and it is not set")
        without = {k: v for k, v in cli_env.items() if k != "RUNTIME_LOG_LEVEL"}
        deployplan(
            "apply",
            *plan,
            "--tag",
            SECOND,
            "--env-schema",
            "infra/ENV_SCHEMA.wrong.md",
            cwd=ws,
            env=without,
            shown_env="RUNTIME_ENV=dev RUNTIME_API_TOKEN=<secret> ",
            expect=1,
        )
        banner("status: dev is not running; the failed container is kept, stopped, for inspection")
        deployplan("status", cwd=ws, env=cli_env)
        banner("no SSH needed: who deployed what, and what the runtime said")
        deployplan("history", "--env", "dev", cwd=ws, env=cli_env)
        deployplan("logs", "--env", "dev", "--tail", "6", cwd=ws, env=cli_env)
        banner(f"recover by hand: deploy {SECOND} again with its variables")
        applied = deployplan("apply", *plan, "--tag", SECOND, cwd=ws, env=cli_env, shown_env=shown)
        deployplan("status", "--env", "dev", cwd=ws, env=cli_env)
        banner(f"old images: list what a prune keeping 1 would remove ({FIRST}), then remove it")
        deployplan("prune", "--keep", "1", cwd=ws, env=cli_env)
        deployplan("prune", "--keep", "1", "--yes", cwd=ws, env=cli_env)
        banner("the audit log's hash chain, checked against the head apply printed (kept off the server)")
        head = re.search(r"^audit head (\d+:[0-9a-f]{64}) ", applied, re.MULTILINE)
        if head is None:
            raise SystemExit("demo: apply printed no audit head")
        deployplan("audit", "verify", str(state / "audit.jsonl"), "--anchor", head.group(1), cwd=ws, env=cli_env)
        banner("the read-only page a person opens in a browser (through Cloudflare Access on a server)")
        page(f"{agent.url}/", token)
        print("\ndemo: done")
    finally:
        banner("cleaning up: agent, containers, images, registry")
        if agent is not None:
            agent.stop()
        lab.remove_containers(client, NAME)
        lab.remove_images(client, f"{registry.host}/{REPOSITORY}/")
        registry.stop()
        client.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
