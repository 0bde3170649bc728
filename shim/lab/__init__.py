# SPDX-License-Identifier: MIT
"""The lab: network-namespace topologies, the runner (which starts the daemon as
a child process, so the lab never imports it), wire, packet builders, testbed
scenarios and steps, the demo, the adversarial suite, and their data files.

Imports core, config and adapters; never daemon or bindings.
"""

__all__: list[str] = []
