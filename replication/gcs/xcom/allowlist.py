"""``ip_allowlist``: the source addresses that may open a group connection.

GR's setting, with GR's default ``AUTOMATIC``: loopback plus the private ranges (RFC 1918,
IPv6 unique-local and link-local). Otherwise a comma-separated list of addresses and CIDR
networks, IPv4 or IPv6; ``AUTOMATIC`` may appear in the list to extend the default. Host names
are refused at parse time (resolving them would be I/O at an arbitrary moment and a silent
change of policy when DNS changes). The check is pure: the transport calls :meth:`allows`
with the peer's address as the socket reports it, before any byte is read.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AUTOMATIC: Final = "AUTOMATIC"
AUTOMATIC_NETWORKS: Final[tuple[IpNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


@dataclass(frozen=True, slots=True)
class IpAllowlist:
    """A set of networks; :meth:`allows` is the membership test."""

    networks: tuple[IpNetwork, ...]

    @classmethod
    def parse(cls, spec: str) -> IpAllowlist:
        """Parse ``AUTOMATIC`` or ``"10.0.0.0/8, 192.168.1.7, ::1"``.

        Raises ValueError naming the entry that is neither an address nor a network.
        """
        networks: list[IpNetwork] = []
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        if not entries:
            raise ValueError("ip_allowlist is empty: nobody could connect (use AUTOMATIC)")
        for entry in entries:
            if entry.upper() == AUTOMATIC:
                networks.extend(AUTOMATIC_NETWORKS)
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"ip_allowlist entry {entry!r} is not an IP address or CIDR network"
                ) from None
        return cls(tuple(networks))

    def allows(self, host: str) -> bool:
        """True when ``host`` (an IP address string, possibly IPv4-mapped IPv6 or with a
        ``%scope``) is inside one of the networks; False for anything unparsable."""
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == net.version and addr in net for net in self.networks)
