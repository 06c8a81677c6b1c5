"""The collector's pages: the login, the signed-in home and the files they load, all served
by the collector itself (no CDN: central may run where nothing else is reachable)."""
