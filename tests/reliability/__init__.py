"""Reliability targets T1-T24 of ``shared/research/reliability.md`` §6 (see README.md)."""
