"""Named suites of env ids, so that commands select many envs with one word (`suite=metaworld_mt10`)."""

from __future__ import annotations

from dataclasses import dataclass

from envs.errors import EnvError

SUITES: tuple[str, ...] = ("nav", "metaworld_mt10", "metaworld_mt50")


@dataclass
class SuiteConfig:
    """The `suite` config group (`configs/suite/<name>.yaml`): which suite a command works on."""

    name: str = "metaworld_mt10"


def suite_env_ids(name: str) -> list[str]:
    """The env ids of a suite: nav robots in `envs.nav.ENV_IDS` order, Meta-World tasks in MT10 / sorted order."""
    if name == "nav":
        from envs import nav

        return list(nav.ENV_IDS)
    if name in ("metaworld_mt10", "metaworld_mt50"):
        from envs import metaworld

        tasks = metaworld.MT10 if name == "metaworld_mt10" else metaworld.TASKS
        return [metaworld.env_id(t) for t in tasks]
    raise EnvError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")


def suite_of(env_id: str) -> str:
    """The smallest suite that contains `env_id` (used to label datasets); EnvError for an unknown id."""
    for name in SUITES:
        if env_id in suite_env_ids(name):
            return name
    raise EnvError(f"env id {env_id!r} is in no suite; suites: {', '.join(SUITES)}")
