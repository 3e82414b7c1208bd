"""Where the lists in force come from: files, the feed's current set, subscriptions' copies.

What it decides: the list files a table is built from for a configuration, and the settings a
sync uses for the feed and for each subscribed URL.
What it reads: the configuration and the local files ``guardian-dns sync`` left in the state
directory (``feed/`` and ``subscriptions/``), never the network.
What it must never do: wait on the network or fail because a download never happened. At boot
the server builds its table from what is on disk: the last good feed set and the last good copy
of each subscription. A subscription never fetched yet is left out with a note (it cannot be in
force before it exists); the feed's set, once fetched, is always there.
"""

from __future__ import annotations

import os
from dataclasses import replace

from guardian_dns.config import Config, ListConfig
from guardian_dns.feed import FeedConfig, current_lists
from guardian_dns.subscribe import Subscription, local_copy


def feed_config(config: Config) -> FeedConfig | None:
    """The sync settings of the configured feed, or None when there is none."""
    fs = config.feed
    if fs.url is None:
        return None
    keys = tuple(
        key if key.startswith("RW") else os.path.join(config.base_dir, key) for key in fs.keys
    )
    return FeedConfig(
        url=fs.url,
        keys=keys,
        interval=fs.interval,
        jitter=fs.jitter,
        connect_timeout=fs.connect_timeout,
        read_timeout=fs.read_timeout,
        max_list_bytes=fs.max_list_bytes,
        max_age_warning=fs.max_age,
        ca_file=None if fs.ca_file is None else os.path.join(config.base_dir, fs.ca_file),
    )


def subscription(config: Config, lc: ListConfig) -> Subscription:
    """The fetch settings of one ``blocking.lists`` entry with a ``url``."""
    assert lc.url is not None
    fs = config.feed
    return Subscription(
        url=lc.url,
        category=lc.category,
        format=None if lc.format == "auto" else lc.format,
        min_lines=fs.subscription_min_lines,
        max_shrink=fs.subscription_max_shrink,
        max_bytes=fs.max_list_bytes,
        connect_timeout=fs.connect_timeout,
        read_timeout=fs.read_timeout,
        ca_file=None if fs.ca_file is None else os.path.join(config.base_dir, fs.ca_file),
    )


def subscriptions(config: Config) -> list[Subscription]:
    return [subscription(config, lc) for lc in config.blocking.lists if lc.url is not None]


def resolve(config: Config, state_dir: str | None) -> tuple[tuple[ListConfig, ...], list[str]]:
    """The list files in force for ``config``, and notes on what is left out and why.

    ``state_dir`` None (``check-config``, tests): only the configured files; subscriptions and
    the feed are left out, since nothing was fetched for this check.
    """
    out: list[ListConfig] = []
    notes: list[str] = []
    for lc in config.blocking.lists:
        if lc.url is None:
            out.append(lc)
            continue
        if state_dir is None:
            continue
        path = local_copy(subscription(config, lc), state_dir)
        if path is None:
            notes.append(
                f"{lc.url}: not fetched yet, so not in force ('guardian-dns sync' fetches it)"
            )
            continue
        out.append(replace(lc, file=str(path)))
    if config.feed.url is not None and state_dir is not None:
        in_force = current_lists(state_dir)
        if not in_force:
            notes.append(
                f"feed {config.feed.url}: no set on disk yet ('guardian-dns sync' fetches it)"
            )
        for fl in in_force:
            out.append(ListConfig(file=fl.path, category=fl.category, format=fl.format))
    return tuple(out), notes


__all__ = ["feed_config", "resolve", "subscription", "subscriptions"]
