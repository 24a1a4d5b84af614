"""phase-client: boot an operating system from the network, verified end to end."""

__version__ = "0.1.0"
