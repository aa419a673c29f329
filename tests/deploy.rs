//! deploy tests (placeholder).
