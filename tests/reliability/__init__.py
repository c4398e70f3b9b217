"""The reliability suite: long-run, fault and crash checks of the SDK (see README.md)."""
