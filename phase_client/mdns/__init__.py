"""mDNS (DNS-SD ``_phase-image._tcp``) on the LAN: the TXT records, this machine's interfaces,
browsing for providers and announcing them. python-zeroconf does the protocol.

- ``records``: pure rules (TXT build/parse/limits, instance names, URL choice, tie rule);
- ``interfaces``: the interfaces and IPv4/IPv6 addresses to use (``ifaddr``);
- ``browse``: find instances (``discovery/mdns.py`` turns them into candidates);
- ``register``: announce instances (``provider/advertise_mdns.py`` feeds it plasmd's offers);
- ``_zeroconf``: the only user of zeroconf's private names.

Nothing here imports ``discovery`` or ``provider``; importing the package loads no zeroconf.
"""
