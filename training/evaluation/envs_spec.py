"""Resolve what a user types after `env=`: one env id or the name of a suite of env ids."""

from __future__ import annotations


def resolve_env_ids(name: str) -> list[str]:
    """`metaworld/reach-v3` -> [that id]; `metaworld_mt10` -> its ten ids; a registered Gymnasium id with Box spaces
    (`Pendulum-v1`) -> [that id]; anything else is an `EnvError`."""
    from envs import is_gymnasium_id, list_env_ids
    from envs.errors import EnvError
    from envs.registry import check_box_spaces
    from envs.suites import SUITES, suite_env_ids

    if name in SUITES:
        return suite_env_ids(name)
    known = list_env_ids()
    if name in known:
        return [name]
    if is_gymnasium_id(name):
        check_box_spaces(name)
        return [name]
    raise EnvError(f"unknown env or suite {name!r}; suites: {', '.join(SUITES)}; env ids: {', '.join(known)}; or any "
                   f"registered Gymnasium id with Box spaces (e.g. Pendulum-v1)")
