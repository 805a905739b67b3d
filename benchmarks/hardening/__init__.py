"""Hardening: API fuzzing, overload and soak (`make harden`)."""
