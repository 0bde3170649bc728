# SPDX-License-Identifier: MIT
"""The daemon: compile a config into a Judge, one worker's service, the
supervisor, reloads, the control and metrics sockets, sd_notify, logs.

Imports everything below it (core, config, bindings, adapters), never lab or cli.
"""

__all__: list[str] = []
