# SPDX-License-Identifier: MIT
"""One door per foreign thing: the Reader contract and its two engines
(netfilterqueue, batched), nfnetlink, the diversion backends (nft, ip6tables),
`ip xfrm`, pcap files.

Imports shim.core and shim.bindings; netfilterqueue is imported only by
shim.adapters.nfq.
"""

__all__: list[str] = []
