"""The provider side (plasmd): signing, catalog, HTTP server, advertisers."""
