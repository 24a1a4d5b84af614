"""Finding providers: mDNS on the LAN, the Kademlia DHT across networks, ranking of candidates."""
