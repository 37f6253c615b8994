//! Cross-service and system tests live in `tests/tests/`.
