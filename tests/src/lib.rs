//! End-to-end test member; the tests live in `e2e/`.
