"""The local js-libp2p network of the interop tests (``testnet.mjs``), driven from Python."""
