"""pirag-stress: load, stress and comparison runs against a live daemon, through the client library only
(it never imports pirag.daemon: it measures the real thing through its socket)."""
